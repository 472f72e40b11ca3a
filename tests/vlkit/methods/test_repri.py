"""LitRePRI and its base training through the real CLI on tiny configs, plus the configs-parse check."""

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from vlkit.cli import main
from vlkit.data.episodes import EpisodicDataModule, make_episode
from vlkit.methods.repri import LitRePRI, LitRePRIBaseTraining

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = sorted((ROOT / "configs" / "vlkit" / "repri").glob("*.yaml"))


def test_cli_test_smoke_logs_finite_metrics_for_every_variant(tmp_path, monkeypatch, csv_metrics):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    main([
        "test", "--config", str(ROOT / "configs/vlkit/repri/fashion_scenes_tiny.yaml"),
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp_path}",
    ])  # fmt: skip
    metrics = csv_metrics(tmp_path)
    for v in ("prototype", "repri", "oracle"):
        for name in (f"test/miou_{v}", f"test/fbiou_{v}", f"test/fold0/miou_{v}", f"test/fold1/fbiou_{v}"):
            assert 0.0 <= metrics[name] <= 1.0 and math.isfinite(metrics[name]), name
    assert 0.0 <= metrics["test/proportion_error_repri"] <= 1.0


def test_feature_cache_gives_identical_metrics_and_is_written_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    dm_args = dict(folds=[1], shots=1, episodes_per_fold=3, max_shots=2, image_size=64, canvas_size=64, batch_size=3,
                   test_scenes=40, val_scenes=40, min_foreground_pixels=32)  # fmt: skip
    results = []
    for cache in (False, True, True):  # no cache, cold cache, warm cache (loaded from disk)
        model = LitRePRI(backbone="tiny-random", iterations=4, variants=["repri"], feature_cache=cache)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        results.append(trainer.test(model, EpisodicDataModule(**dm_args), verbose=False)[0])
    assert results[0]["test/miou_repri"] == pytest.approx(results[1]["test/miou_repri"], abs=1e-3)  # float16 cache
    assert results[1] == results[2]
    files = list((tmp_path / "cache" / "repri_features").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no stray temporary file
    files[0].write_bytes(b"not a torch file")  # a corrupt cache is detected and rebuilt
    model = LitRePRI(backbone="tiny-random", iterations=4, variants=["repri"], feature_cache=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.test(model, EpisodicDataModule(**dm_args), verbose=False)[0] == results[1]
    assert len(torch.load(files[0], weights_only=True)) > 0


def test_predictions_are_at_the_original_resolution_and_padding_is_not_foreground():
    model = LitRePRI(backbone="tiny-random", iterations=3, variants=["prototype", "repri"])
    rng = np.random.default_rng(0)
    support = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    mask = np.zeros((30, 50), dtype=np.uint8)
    mask[10:20, 10:30] = 1
    batch = make_episode([support], [mask], rng.integers(0, 255, (40, 20, 3), dtype=np.uint8), image_size=64)
    out = model.segment(batch)
    assert out["logits_repri"].shape == (1, 1, 16, 16)  # tiny-random has stride 4
    preds = model.predictions(out["logits_repri"], batch)
    assert preds[0].shape == (40, 20) and preds[0].dtype == torch.bool
    assert 0.0 <= float(out["proportion_repri"]) <= 1.0
    with pytest.raises(ValueError, match="oracle"):
        model.segment(batch, ["oracle"])


def test_paper_protocol_uses_the_query_label_mask():
    dm = EpisodicDataModule(folds=[2], shots=1, episodes_per_fold=2, max_shots=1, image_size=64, canvas_size=64, batch_size=2,
                            test_scenes=40, min_foreground_pixels=32)  # fmt: skip
    batch = next(iter(dm.test_dataloader()))
    batch["query_mask"][:, :, :32] = 255  # void on the top half of the label only
    strict = LitRePRI(backbone="tiny-random", iterations=6, variants=["repri"], protocol="strict").segment(batch)
    paper = LitRePRI(backbone="tiny-random", iterations=6, variants=["repri"], protocol="paper").segment(batch)
    assert not torch.allclose(strict["proportion_init"], paper["proportion_init"])


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="variants"):
        LitRePRI(backbone="tiny-random", variants=["transductive"])
    with pytest.raises(ValueError, match="protocol"):
        LitRePRI(backbone="tiny-random", protocol="loose")
    with pytest.raises(ValueError, match="unknown dense backbone"):
        LitRePRI(backbone="resnet-fantasy")
    # a missing checkpoint is a user error (ConfigError, a ValueError) naming the argument
    with pytest.raises(ValueError, match="head_checkpoint must be an existing checkpoint file"):
        LitRePRI(backbone="tiny-random", head_checkpoint="/nonexistent.ckpt")


def test_base_training_moves_the_head_and_feeds_repri(tmp_path, monkeypatch, csv_metrics):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    main([
        "fit", "--config", str(ROOT / "configs/vlkit/repri/fashion_scenes_base_tiny.yaml"),
        "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["state_dict"]
    L.seed_everything(0)
    fresh = LitRePRIBaseTraining(backbone="tiny-random", bottleneck=16).state_dict()
    moved = [k for k in state if k.startswith("head.") and "weight" in k and not torch.equal(state[k], fresh[k])]
    assert "head.classifier.weight" in moved and "head.bottleneck.0.weight" in moved
    # the backbone is frozen: its weights are those of the seeded preset
    assert all(torch.equal(state[k], fresh[k]) for k in state if k.startswith("backbone."))
    main([
        "test", "--config", str(ROOT / "configs/vlkit/repri/fashion_scenes_tiny.yaml"),
        "--trainer.default_root_dir", str(tmp_path / "repri"), f"--model.head_checkpoint={ckpts[-1]}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp_path / 'repri'}",
    ])  # fmt: skip
    assert math.isfinite(csv_metrics(tmp_path / "repri")["test/miou_repri"])


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_configs_parse(config, capsys):
    cmd = "fit" if "base" in config.name else "test"
    with pytest.raises(SystemExit) as exit_info:  # --print_config prints the parsed config and exits
        main([cmd, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: vlkit.methods.repri." in printed and "class_path: vlkit.data.episodes.EpisodicDataModule" in printed


def test_dense_feature_cache_is_hit_on_the_second_run(tmp_path, monkeypatch):
    """The second ``vlkit test`` of the same backbone and pool reads every pool image's features from
    $VLKIT_CACHE/repri_features (vlkit.data.dense_features): the backbone never runs, and the metrics match."""
    from vlkit.data.dense_features import DenseFeatureCache

    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    dm_args = dict(folds=[0], shots=1, episodes_per_fold=2, max_shots=1, image_size=64, canvas_size=64, batch_size=2,
                   test_scenes=40, min_foreground_pixels=32)  # fmt: skip

    def run():
        model = LitRePRI(backbone="tiny-random", iterations=2, variants=["repri"], feature_cache=True)
        calls = []
        hook = model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
        try:
            trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
            dm = EpisodicDataModule(**dm_args)
            metrics = trainer.test(model, dm, verbose=False)[0]
        finally:
            hook.remove()
        return model, dm, metrics, sum(calls)

    model, dm, cold, encoded = run()
    # 2 episodes x (1 support + 1 query): at least one image went through the backbone, each at most once
    assert 1 <= encoded <= 4
    path = DenseFeatureCache(model.backbone.fingerprint, dm.pool_fingerprint("test"), image_size=64).path
    assert path.parent == tmp_path / "cache" / "repri_features" and path.is_file()
    stored = torch.load(path, weights_only=True)["payload"]
    assert stored["keys"].numel() == encoded and stored["features"].dtype == torch.float16
    _, _, warm, encoded_again = run()
    assert encoded_again == 0 and warm == cold
