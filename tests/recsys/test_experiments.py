"""``python -m recsys.experiments``: a documented CLI, a config for every stage of every listed data set,
a report of whatever results exist, and a synthetic data set that runs every stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.experiments import DATASETS, STAGES, build_parser, config_path, main, markdown_table, resolve_threads
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


def test_report_states_the_chance_level_of_each_catalogue(tmp_path):
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "results.json").write_text(json.dumps({"sft": {"wall_s": 27.0, "test/hr@10": 0.9062}}))
    assert "chance" not in markdown_table(tmp_path)  # no sid_index.json: the catalogue's size is unknown
    (tmp_path / "synthetic" / "sid_index.json").write_text(json.dumps({str(i): ["<a_0>", f"<b_{i}>"] for i in range(48)}))
    # a random ranking of 48 items: HR@10 = 10/48 = 20.83 %, NDCG@10 = 4.5436/48 = 9.47 % (both rankings alike)
    assert "| synthetic | chance: a random ranking of the 48 items | 20.83 | 9.47 | 20.83 | 9.47 | - | - |" \
        in markdown_table(tmp_path).splitlines()


def test_threads_option():
    assert resolve_threads("auto", "synthetic") == 1  # tiny models: one thread
    assert resolve_threads("auto", "amazon18-office") is None  # torch's default
    assert resolve_threads("3", "synthetic") == 3
    for bad in ("0", "two", "1.5"):
        with pytest.raises(ConfigError, match="threads"):
            resolve_threads(bad, "synthetic")
    with pytest.raises(SystemExit) as exited:  # refused before anything runs
        main(["--dataset", "synthetic", "--threads", "0", "--out", "unused"])
    assert exited.value.code == 2


def test_per_row_ranks_go_to_the_stage_folder_for_a_relative_out(tmp_path, monkeypatch):
    from recsys.experiments import _overlay

    monkeypatch.chdir(tmp_path)
    overlay = yaml.safe_load(_overlay(tmp_path, "test", None, None, Path("runs/synthetic/sft/row_ranks.json")).read_text())
    [per_row] = [c for c in overlay["trainer"]["callbacks"] if c["class_path"] == "vlkit.callbacks.PerRowValues"]
    # PerRowValues puts a relative path under the trainer's log folder: the overlay must name the file absolutely
    assert per_row["init_args"]["path"] == str(tmp_path / "runs" / "synthetic" / "sft" / "row_ranks.json")


@pytest.mark.slow
def test_synthetic_runs_every_stage_and_reports_them(tmp_path, capsys, monkeypatch):
    """Every stage through the CLI on the 48-item synthetic data: about a minute of CPU."""
    monkeypatch.chdir(tmp_path)  # a relative --out, as the default runs/minionerec
    results = main(["--dataset", "synthetic", "--out", "runs"])
    assert set(results) == set(STAGES)
    assert results["rqvae"]["test/final_collision_rate"] == 0.0  # unique IDs after the dedup level
    # the walk is learnable: SASRec ranks the next item in its top 10 of 48 far above chance (10/48 = 21 %)
    assert results["sasrec"]["test/hr@10"] > 0.5
    for stage in ("sft", "rl"):
        assert results[stage]["test/invalid_items"] == 0.0 and 0.0 <= results[stage]["test/hr@10"] <= 1.0
        # and so does MiniOneRec: chance is 10/48 = 20.8 % (about 13 +- 3 hits of 64 rows); measured 90.6 %
        assert results[stage]["test/hr@10"] > 0.5, stage
    # each test row's rank reached the stage folder, so each later stage is paired with the earlier ones
    assert set(results["rl"]["paired"]) == {"sasrec", "sft"} and set(results["sft"]["paired"]) == {"sasrec"}
    on_disk = json.loads((tmp_path / "runs" / "synthetic" / "results.json").read_text())
    assert set(on_disk) == set(STAGES)
    main(["--report", "--out", "runs"])
    report = capsys.readouterr().out
    assert all(f"| synthetic | {name} |" in report for name in ("SASRec (full ranking)", "MiniOneRec SFT",
                                                                  "MiniOneRec SFT+RL", "RQ-VAE"))
    assert "| synthetic | chance: a random ranking of the 48 items | 20.83 | 9.47 |" in report
