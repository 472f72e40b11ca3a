"""``python -m recsys.experiments``: a documented CLI, a config for every stage of every listed data set,
a report of whatever results exist, and a synthetic data set that runs every stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.experiments import DATASETS, STAGES, build_parser, config_path, main, markdown_table
from vlkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_help_documents_every_option_with_its_default():
    text = " ".join(build_parser().format_help().split())  # argparse wraps lines: compare word by word
    for option, default in (("--dataset", "amazon18-industrial"), ("--out DIR", "runs/minionerec"),
                            ("--stages LIST", "rqvae,sasrec,sft,rl"), ("--report", "False")):
        assert option in text and f"(default: {default})" in text, option
    assert all(name in text for name in DATASETS)
    assert "--trainer.max_time" in text  # the pass-through of other options is explained


def test_help_answers_from_the_command_line_without_torch():
    probe = "import sys, runpy; sys.argv = ['x', '--help']\ntry:\n runpy.run_module('recsys.experiments', run_name='__main__')\n" \
            "except SystemExit: pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--stages LIST" in out.stdout and out.stdout.strip().endswith("NO-TORCH")


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_listed_dataset_has_a_config_for_every_stage_on_that_dataset(dataset):
    for stage in STAGES:
        path = config_path(dataset, stage)
        assert path.is_file(), path
        config = yaml.safe_load(path.read_text())
        assert config["data"]["init_args"]["dataset"] == dataset, (stage, path.name)
        expected = {"rqvae": "LitRQVAE", "sasrec": "LitSASRec", "sft": "LitMiniOneRec", "rl": "LitMiniOneRecRL"}[stage]
        assert config["model"]["class_path"].rsplit(".", 1)[1] == expected


def test_unknown_dataset_or_stage_is_refused():
    with pytest.raises(ConfigError, match="dataset must be one of"):
        config_path("amazon18-books", "sft")
    with pytest.raises(ConfigError, match="stage must be one of"):
        config_path("synthetic", "dpo")
    with pytest.raises(SystemExit) as exited:
        main(["--dataset", "amazon18-books"])
    assert exited.value.code == 2


def test_report_covers_every_results_file_in_percent(tmp_path, capsys):
    assert "no results.json" in markdown_table(tmp_path)
    (tmp_path / "amazon18-office").mkdir()
    (tmp_path / "amazon18-office" / "results.json").write_text(json.dumps({
        "sft": {"wall_s": 841.4, "test/hr@10": 0.1234, "test/hr@10_ci": 0.0091, "test/ndcg@10": 0.0757,
                "test/rows": 4866, "test/exact_rows": 100},
        "rqvae": {"wall_s": 162.0, "test/raw_collision_rate": 0.0393, "test/final_collision_rate": 0.0,
                  "test/num_levels": 4}}))
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "results.json").write_text(json.dumps({
        "sasrec": {"wall_s": 17.0, "test/hr@10": 1.0, "test/hr@10_ci": 0.0, "test/ndcg@10": 0.7133, "test/rows": 64}}))
    main(["--report", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    # 0.1234 -> 12.34 %, its 95 % half-width 0.0091 -> 0.91; no CI logged -> the value alone
    assert "| amazon18-office | MiniOneRec SFT | 12.34 ± 0.91 | 7.57 | - | - | 4866/100 | 841 s |" in lines
    assert "| synthetic | SASRec (full ranking) | - | - | 100.00 ± 0.00 | 71.33 | 64 (exact) | 17 s |" in lines
    assert "| amazon18-office | RQ-VAE | 3.93 | 0.00 | 4 | 162 s |" in lines  # the semantic-ID table


@pytest.mark.slow
def test_synthetic_runs_every_stage_and_reports_them(tmp_path, capsys):
    """Every stage through the CLI on the 48-item synthetic data: about a minute of CPU."""
    results = main(["--dataset", "synthetic", "--out", str(tmp_path)])
    assert set(results) == set(STAGES)
    assert results["rqvae"]["test/final_collision_rate"] == 0.0  # unique IDs after the dedup level
    # the walk is learnable: SASRec ranks the next item in its top 10 of 48 far above chance (10/48 = 21 %)
    assert results["sasrec"]["test/hr@10"] > 0.5
    for stage in ("sft", "rl"):
        assert results[stage]["test/invalid_items"] == 0.0 and 0.0 <= results[stage]["test/hr@10"] <= 1.0
    on_disk = json.loads((tmp_path / "synthetic" / "results.json").read_text())
    assert set(on_disk) == set(STAGES)
    main(["--report", "--out", str(tmp_path)])
    report = capsys.readouterr().out
    assert all(f"| synthetic | {name} |" in report for name in ("SASRec (full ranking)", "MiniOneRec SFT",
                                                                  "MiniOneRec SFT+RL", "RQ-VAE"))
