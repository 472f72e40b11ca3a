"""LitProAPO through the real CLI on the tiny config: fit, resume from a checkpoint, test; configs parse."""

import csv
import json
import math
from pathlib import Path

import pytest

from vlkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs/prompts_evo/proapo/fashion-mnist_tiny.yaml"


def _fit(tmp_path: Path, name: str, *extra: str) -> Path:
    root = tmp_path / name
    main(["fit", "--config", str(TINY), "--trainer.default_root_dir", str(root),
          "--model.cache_dir", str(tmp_path / "cache"), *extra])
    return root / "lightning_logs" / "version_0"


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("config", sorted((ROOT / "configs/prompts_evo").rglob("*.yaml")), ids=lambda p: p.name)
def test_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "prompts_evo.methods.proapo.LitProAPO" in capsys.readouterr().out


def test_fit_resume_and_test_through_the_cli(tmp_path):
    full = _fit(tmp_path, "full")
    rows = _metrics(full)
    best = [float(r["train/best_fitness"]) for r in rows if r["train/best_fitness"]]
    assert len(best) == 4 and all(math.isfinite(b) for b in best)
    # the elite's fitness never decreases, across both stages (stage 2's start includes "names only",
    # which is exactly the stage-1 winner), and the search found something better than its start
    assert all(b >= a - 1e-4 for a, b in zip(best, best[1:]))
    assert best[-1] > best[0]
    val = [float(r["val/acc"]) for r in rows if r["val/acc"]]
    assert val and all(0.0 <= v <= 100.0 for v in val)
    prompts = json.loads((full / "proapo_prompts.json").read_text())
    provenance = json.loads((full / "proapo_prompts.json.provenance.json").read_text())
    assert len(prompts) == 10 and all(prompts.values())
    assert provenance["selection_data"].startswith("labelled shots only") and len(provenance["shot_indices"]) == 10
    assert (full / "fitness_curve.png").stat().st_size > 1000

    # stop after 2 generations, resume from the checkpoint: same search as the uninterrupted run
    part = _fit(tmp_path, "part", "--trainer.max_epochs", "2")
    resumed = _fit(tmp_path, "part", "--trainer.max_epochs", "4", "--ckpt_path", str(part / "checkpoints" / "last.ckpt"))
    resumed = resumed.parent / "version_1"
    again = json.loads((resumed / "proapo_prompts.json.provenance.json").read_text())
    assert [h["best_fitness"] for h in again["history"]] == pytest.approx([h["best_fitness"] for h in provenance["history"]])
    assert json.loads((resumed / "proapo_prompts.json").read_text()) == prompts

    # test: the found prompts and the single-template baseline on the test subset
    main(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / "test"),
          "--model.cache_dir", str(tmp_path / "cache"), "--ckpt_path", str(full / "checkpoints" / "last.ckpt")])
    test_rows = _metrics(tmp_path / "test" / "lightning_logs" / "version_0")
    accs = {k: float(v) for r in test_rows for k, v in r.items() if k.startswith("test/") and v}
    assert set(accs) == {"test/acc", "test/acc_single_template"}
    assert all(0.0 <= a <= 100.0 for a in accs.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"description_source": "json"}, "description_file"),
        ({"template_library": "huge"}, "template_library"),
        ({"dataset": "cifar"}, "dataset"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_litproapo_rejects_bad_arguments_at_construction(kwargs, match):
    from prompts_evo.methods.proapo import LitProAPO

    with pytest.raises(ValueError, match=match):
        LitProAPO(**kwargs)
