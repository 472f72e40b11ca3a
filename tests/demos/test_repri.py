import numpy as np


def test_build_demo_has_the_episode_controls():
    import gradio as gr

    from demos.repri import build_demo

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"Support image: paint the object", "Query image", "RePRI (red)", "Prototype baseline (blue)"} <= labels


def test_editor_value_to_mask_and_prediction_on_tiny_backbone():
    from demos.repri import editor_mask, overlay, predict

    rng = np.random.default_rng(0)
    support = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    layer = np.zeros((40, 60, 4), dtype=np.uint8)
    layer[10:20, 5:25, 3] = 200  # painted strokes: alpha > 0
    image, mask = editor_mask({"background": support, "layers": [layer], "composite": None})
    assert mask.sum() == 10 * 20 and image.shape == (40, 60, 3)
    query = rng.integers(0, 255, (30, 30, 4), dtype=np.uint8)  # RGBA query is accepted
    result = predict(image, mask, query, backbone="tiny-random")
    assert result["repri"].shape == (30, 30) and result["prototype"].dtype == bool
    assert 0.0 <= result["proportion"] <= 1.0
    shown = overlay(query, result["repri"])
    assert shown.shape == (30, 30, 3)
    # pixels outside the mask keep their colour
    assert np.array_equal(shown[~result["repri"]], query[..., :3][~result["repri"]])
