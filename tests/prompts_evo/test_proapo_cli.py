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
          "--data.cache_dir", str(tmp_path / "cache"), *extra])
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
          "--data.cache_dir", str(tmp_path / "cache"), "--ckpt_path", str(full / "checkpoints" / "last.ckpt")])
    test_rows = _metrics(tmp_path / "test" / "lightning_logs" / "version_0")
    accs = {k: float(v) for r in test_rows for k, v in r.items() if k.startswith("test/") and v}
    assert set(accs) == {"test/acc", "test/acc_single_template"}
    assert all(0.0 <= a <= 100.0 for a in accs.values())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: __import__("prompts_evo.methods.proapo", fromlist=["x"]).LitProAPO(description_source="json"), "description_file"),
        (lambda: __import__("prompts_evo.methods.proapo", fromlist=["x"]).LitProAPO(template_library="huge"), "template_library"),
        # the data settings live in the DataModule, the search settings in their typed group
        (lambda: __import__("prompts_evo.data.features", fromlist=["x"]).ProAPODataModule(dataset="cifar"), "dataset"),
        (lambda: __import__("prompts_evo.methods.proapo", fromlist=["x"]).LitProAPO(search={"top_k": 0}), "top_k"),
    ],
)
def test_litproapo_rejects_bad_arguments_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_search_settings_round_trip_through_a_checkpoint(tmp_path):
    import torch

    from prompts_evo.methods.proapo import LitProAPO
    from prompts_evo.models.search import SearchSettings

    module = LitProAPO(description_source="none", search=SearchSettings(top_k=3, similarity_weight=-1.0))
    # the group is saved as a plain dict: a checkpoint loads with weights_only=True and rebuilds the settings
    assert module.hparams.search["top_k"] == 3
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": "2.6.0"}, path)
    loaded = torch.load(path, weights_only=True)
    again = LitProAPO(**loaded["hyper_parameters"])
    assert again.settings == SearchSettings(top_k=3, similarity_weight=-1.0) and again.hparams == module.hparams


def test_a_checkpoint_of_the_flat_pre_datamodule_litproapo_fails_in_one_line(tmp_path, capsys):
    import torch

    # what `vlkit fit` wrote before issue 11: data and search settings flat among LitProAPO's arguments
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "vlkit_class": "prompts_evo.methods.proapo.LitProAPO",
                "hyper_parameters": {"backbone": "tiny-random", "dataset": "fashion-mnist", "shots": 1, "top_k": 2}}, old)
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(old)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ckpt_path") and "older version" in err[-1]
    assert "['dataset', 'shots', 'top_k'] are no longer arguments of LitProAPO" in err[-1]


def test_a_bad_search_setting_names_its_config_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY), "--model.search.top_k=0", "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: model.init_args.search.top_k must be >= 1, got 0"


def test_load_from_checkpoint_round_trip_and_old_format(tmp_path):
    import torch

    from prompts_evo.methods.proapo import LitProAPO
    from vlkit.errors import ConfigError

    module = LitProAPO(description_source="none", search={"top_k": 3})
    new = tmp_path / "new.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": "2.6.0",
                "vlkit_class": "prompts_evo.methods.proapo.LitProAPO"}, new)
    assert LitProAPO.load_from_checkpoint(new).settings.top_k == 3
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "vlkit_class": "prompts_evo.methods.proapo.LitProAPO",
                "hyper_parameters": {"backbone": "tiny-random", "heldout_size": 20, "top_k": 2}}, old)
    with pytest.raises(ConfigError, match=r"older version: its hyperparameters \['heldout_size', 'top_k'\]"):
        LitProAPO.load_from_checkpoint(old)


def test_import_prompts_evo_is_light():
    import subprocess
    import sys

    code = ("import sys, prompts_evo; heavy = ('torch', 'lightning', 'open_clip', 'transformers', 'gradio'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
