def test_build_demo_has_the_search_controls():
    import gradio as gr

    from demos.proapo import build_demo

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"dataset", "backbone", "description source", "fitness curve", "best prompts per class"} <= labels
