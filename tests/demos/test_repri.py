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


def test_outputs_are_large_and_the_ground_truth_is_shown_beside_them(monkeypatch):
    import demos.repri as repri
    from demos.display import enlarge

    support, mask, query, truth = repri.example_with_truth("trouser", 0)
    assert truth.shape == query.shape[:2] == (128, 128) and truth.any()
    assert np.array_equal(repri.example("trouser", 0)[2], query)  # example() is the same pair
    # the prediction is faked: the formatting and IoU are what is tested here (predict has its own test)
    predicted = np.zeros_like(truth, dtype=bool)
    predicted[truth.astype(bool)] = True
    predicted[:8] = True  # the truth plus 8 extra rows
    baseline = np.zeros_like(predicted)
    monkeypatch.setattr(repri, "predict", lambda *a, **k: {"repri": predicted, "prototype": baseline,
                                                            "proportion_init": 0.5, "proportion": 0.25})
    layer = np.zeros((128, 128, 4), dtype=np.uint8)
    layer[mask.astype(bool)] = (255, 0, 0, 160)
    editor = {"background": support, "layers": [layer], "composite": None}
    out_repri, out_proto, out_truth, text, truth_text = repri._run(editor, query, truth)
    assert out_repri.shape == out_proto.shape == out_truth.shape == (384, 384, 3)  # 128 px shown 3x
    expected = 100 * truth.sum() / predicted.sum()  # IoU = |truth| / |truth + extra rows| (truth inside)
    assert f"RePRI {expected:.1f} %" in truth_text and "prototype baseline 0.0 %" in truth_text
    assert "Foreground proportion: initial estimate 0.500, re-estimated 0.250" in text
    # an uploaded query: its ground truth is unknown and said so
    _, _, none, _, unknown = repri._run(editor, query, None)
    assert none is None and "unknown" in unknown
    assert np.array_equal(enlarge(query, 384)[::3, ::3], query)
    assert repri.iou(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]])) == 0.5  # 1 shared of 2 marked
    assert repri.iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
