import math
import json

from recsys.experiments import CONFIGS, best_checkpoint as checkpoint, run_stage as run_cli


def assert_finite(metrics: dict[str, float], *names: str) -> None:
    for name in names:
        assert name in metrics, f"{name} not logged; have {sorted(metrics)[:20]}"
        assert math.isfinite(metrics[name]), f"{name} = {metrics[name]}"


def test_rqvae_cli_writes_unique_ids(tmp_path):
    sid = tmp_path / "sid.json"
    config = CONFIGS / "rqvae" / "synthetic_tiny.yaml"
    fit = run_cli("fit", config, tmp_path, "--model.init_args.sid_path", str(sid))
    assert_finite(fit, "train/loss", "val/collision_rate", "val/level0_used", "train/param_drift")
    assert fit["train/param_drift"] > 0
    ids = json.loads(sid.read_text())
    assert len(ids) == 48 and len({"".join(v) for v in ids.values()}) == 48  # unique per item
    test = run_cli("test", config, tmp_path, "--model.init_args.sid_path", str(sid), "--ckpt_path", checkpoint(tmp_path))
    assert test["test/final_collision_rate"] == 0.0
    assert 0.0 <= test["test/raw_collision_rate"] <= 1.0
    assert test["test/sinkhorn_collision_rate"] <= test["test/raw_collision_rate"]
    assert 1 <= test["test/level0_used"] <= 8
