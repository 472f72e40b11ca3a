import torch


def test_build_demo_and_explain(tmp_path):
    import gradio as gr

    from demos.tfup import TFUPExplainer, build_demo

    assert isinstance(build_demo(backbone="tiny-random", subset_size=100, cache_dir=str(tmp_path)), gr.Blocks)
    explainer = TFUPExplainer(backbone="tiny-random", subset_size=100, cache_dir=str(tmp_path))
    out = explainer.explain(test_index=3, top=4)
    assert out["label"] in explainer.classnames
    assert abs(sum(out["zeroshot"].values()) - 1) < 1e-5 and abs(sum(out["tfup"].values()) - 1) < 1e-5
    # the TFUP probabilities shown are the module's own prediction for that test feature
    expected = torch.softmax(explainer.model(explainer.datamodule.eval_features[3:4]), -1)[0]
    assert torch.allclose(torch.tensor(list(out["tfup"].values())), expected, atol=1e-5)
    assert len(out["neighbours"]) == 4
    gains = [float(caption.split("(+")[1].rstrip(")")) for _, caption in out["neighbours"]]
    assert gains == sorted(gains, reverse=True)
    uploaded = explainer.explain(image=out["image"])
    assert uploaded["label"] is None and set(uploaded["tfup"]) == set(explainer.classnames)


def test_the_input_is_shown_at_a_readable_size_and_the_tab_names_model_and_data(tmp_path):
    import gradio as gr
    import numpy as np

    from demos.tfup import DISPLAY_SIZE, build_demo, describe

    demo = build_demo(backbone="tiny-random", subset_size=100, cache_dir=str(tmp_path))
    run = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "run")
    shown, zeroshot, tfup, neighbours, summary = run(None, 3, progress=lambda *a, **k: None)
    # a 28 px Fashion-MNIST image comes back 10x larger (ceil(256 / 28)), pixel for pixel
    assert shown.size == (280, 280) and shown.size[0] >= DISPLAY_SIZE
    pixels = np.asarray(shown)
    assert np.array_equal(pixels[::10, ::10], pixels[5::10, 5::10])  # blocks of one value: not blurred
    # cache entries: full captions (class and gain) on thumbnails of at least 160 px, four per row
    assert all(image.size[0] >= 160 for image, _ in neighbours)
    assert all(caption.startswith("pseudo-label ") and caption.endswith(")") for _, caption in neighbours)
    gallery = next(b for b in demo.blocks.values() if isinstance(b, gr.Gallery))
    assert gallery.columns == 4
    about = describe("offline-lite0-minilm", 1000)
    assert "EfficientNet-Lite0" in about and "MiniLM" in about and "1,000" in about and "untrained" not in about
    assert describe("tiny-random", 100).startswith("**untrained**")
