from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlkit.cli import main
from vlkit.functional.tfup import select_confident_prototypes, tfup_logits
from vlkit.functional.zeroshot import zeroshot_logits

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "vlkit" / "tfup"


def test_tfup_cache_corrects_a_biased_text_head():
    """Property: tight clusters + a text head tilted towards class 0 -> the unsupervised cache recovers."""
    g = torch.Generator().manual_seed(0)
    means = torch.eye(3, 16) * 3  # (C, D) well separated class centres
    labels = torch.arange(3).repeat_interleave(100)
    feats = means[labels] + torch.randn(300, 16, generator=g)  # (N, D), unit noise
    text = F.normalize(means, dim=-1) + 2.0 * F.normalize(means[0], dim=-1)  # biased towards class 0
    zs_acc = (zeroshot_logits(feats, text).argmax(-1) == labels).float().mean()
    probs = torch.softmax(10 * F.normalize(feats, dim=-1) @ F.normalize(text, dim=-1).T, -1)
    index = select_confident_prototypes(probs, shots=16)  # (C, K)
    assert (labels[index] == torch.arange(3).unsqueeze(1)).float().mean() > 0.9  # confident picks are right
    values = F.one_hot(torch.arange(3).repeat_interleave(16), 3).float()
    tfup = tfup_logits(feats, text, feats[index.flatten()], values, alpha=3.0, beta=5.0)
    tfup_acc = (tfup.argmax(-1) == labels).float().mean()
    # measured: zero-shot 0.843, TFUP 0.960 with this seed
    assert zs_acc < 0.9 and tfup_acc > zs_acc + 0.05


def _run(*args):
    main(list(args))


def test_cli_tfup_test_gives_finite_accuracy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lightning.pytorch.cli import LightningCLI

    captured = {}
    original = LightningCLI.__init__

    def spy(self, *a, **k):
        original(self, *a, **k)
        captured["cli"] = self

    monkeypatch.setattr(LightningCLI, "__init__", spy)
    _run("test", "--config", str(CONFIGS / "tiny_tfup.yaml"), "--data.init_args.cache_dir", str(tmp_path / "cache"))
    cli = captured["cli"]
    acc = float(cli.trainer.callback_metrics["test/acc"])
    assert 0.0 <= acc <= 1.0
    model = cli.model
    # the cache holds K = 9 entries per class (N = 200 -> floor(0.3*200/10) = 6 -> raised to 9)
    assert model.cache_keys.shape == (90, 32)
    # independent check of the reported accuracy from the module's own predictions
    preds = model.test_predictions
    assert abs(float((preds[:, 1] == preds[:, 2]).float().mean()) - acc) < 1e-6


def test_cli_tfupt_fit_moves_parameters_and_resumes_from_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    common = ["--config", str(CONFIGS / "tiny_tfupt.yaml"), "--data.init_args.cache_dir", str(tmp_path / "cache")]
    _run("fit", *common, "--trainer.default_root_dir", str(root))
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, "no last.ckpt written"
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)["state_dict"]
    assert state["text_residual"].abs().sum() > 0  # R starts at exactly 0
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not any(k.startswith("backbone") for k in state)  # frozen towers stay out of checkpoints


def test_tip_adapter_needs_shots():
    from vlkit import fewshot

    with pytest.raises(ValueError, match="shots >= 1"):
        fewshot.evaluate(method="tip-adapter", backbone="tiny-random", shots=0)
    with pytest.raises(ValueError, match="method must be one of"):
        fewshot.evaluate(method="tfupp")


def test_fewshot_api_matches_an_independent_zero_shot(tmp_path):
    from vlkit import fewshot
    from vlkit.data.fewshot import FewShotDataModule
    from vlkit.models.backbones import create_backbone
    from vlkit.models.zeroshot import build_text_classifier

    rows = fewshot.evaluate(method="zeroshot", backbone="tiny-random", subset_size=60, cache_dir=str(tmp_path), seeds=(1,))
    assert rows[0]["mode"] == "strict" and rows[0]["n_test"] == 60
    bb = create_backbone("tiny-random")
    dm = FewShotDataModule(subset_size=60, cache_dir=str(tmp_path)).connect(bb)
    w = build_text_classifier(bb, dm.classnames, templates=["a photo of a {}."])
    expected = float((zeroshot_logits(dm.eval_features, w).argmax(-1) == dm.eval_labels).float().mean())
    assert abs(rows[0]["accuracy"] - expected) < 1e-6
    rows = fewshot.evaluate(method="tip-adapter", backbone="tiny-random", shots=2, subset_size=60, cache_dir=str(tmp_path), seeds=(1, 2))
    assert [r["seed"] for r in rows] == [1, 2] and all(0 <= r["accuracy"] <= 1 for r in rows)
    table = fewshot.to_markdown(fewshot.summarize(rows))
    assert "tip-adapter" in table and "| 2 |" in table


def test_template_resolution():
    from vlkit.methods.tfup import resolve_templates

    assert resolve_templates("auto", None) == ["a photo of a {}."]
    assert resolve_templates("auto", None, "prompts.json") is None  # the file's sentences alone
    assert resolve_templates(None, ["art of a {}."]) == ["art of a {}."]
    assert len(resolve_templates("imagenet", None)) == 80
    with pytest.raises(ValueError, match="template_set"):
        resolve_templates("fancy", None)


@pytest.mark.parametrize("name", ["LitTFUP", "LitTFUPT"])
def test_cache_group_round_trips_and_flat_checkpoints_load(name, reload_with_flat_group):
    import dataclasses

    from vlkit.methods import tfup

    chosen = tfup.CacheSettings(alpha=0.5, temperature=5.0, min_shots=2, max_shots=3)
    module = getattr(tfup, name)(cache=dict(alpha=0.5, temperature=5.0, min_shots=2, max_shots=3))
    assert module.cache == chosen
    assert module.hparams.cache == dataclasses.asdict(chosen)  # plain values: loads with weights_only
    # alpha 0.5, not the default 0.3: the flat checkpoint's values are regrouped, not dropped
    assert [loaded.cache for loaded in reload_with_flat_group(module, "cache")] == [chosen, chosen]
