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
