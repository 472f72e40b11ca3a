def test_build_demo_has_the_search_controls():
    import gradio as gr

    from demos.proapo import build_demo

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"dataset", "backbone", "description source", "fitness curve", "best prompts per class"} <= labels


def test_run_search_streams_fitness_and_prompts(tmp_path, monkeypatch):
    import math

    from demos.proapo import run_search

    monkeypatch.chdir(tmp_path)  # the feature/text caches (.cache/vlkit) land in tmp_path
    updates = list(run_search("fashion-mnist", "tiny-random", 0, 2, 0, "none", library="simple", test_size=50, heldout_size=20))
    assert len(updates) == 2  # one update per generation
    status, fig, rows = updates[-1]
    assert "generation 2/2" in status and "final test acc" in status
    best = [line.get_ydata() for line in fig.axes[0].get_lines()][0]
    assert len(best) == 2 and all(math.isfinite(v) for v in best) and best[1] >= best[0]
    assert len(rows) == 10 and all(r[1] >= 1 for r in rows)
