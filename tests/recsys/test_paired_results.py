"""Per-row ranks saved by every ranking stage, and the paired differences and seed spreads built from them."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from recsys.experiments import (
    CONFIGS,
    ROW_RANKS_FILE,
    load_row_ranks,
    main,
    markdown_table,
    paired_differences,
    run_stage,
    seed_spread,
)
from recsys.functional.metrics import hit_at_k, ndcg_at_k

ROOT = Path(__file__).resolve().parents[2]


def _recsys_paired():
    spec = importlib.util.spec_from_file_location("recsys_paired", ROOT / "scripts" / "recsys_paired.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_ranks(folder, test: dict[int, int], test_exact: dict[int, int] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"test": {"rows": list(test), "values": [float(v) for v in test.values()]}}
    if test_exact is not None:
        saved["test_exact"] = {"rows": list(test_exact), "values": [float(v) for v in test_exact.values()]}
    (folder / ROW_RANKS_FILE).write_text(json.dumps(saved))


def test_saved_row_ranks_reproduce_the_logged_test_metrics(tmp_path):
    # MiniOneRec's test through the CLI with the per-row callback (untrained weights: the property holds for any):
    # the mean over the saved rows of 1[0 <= rank < 10] must be the logged test/hr@10, for beam search and exact
    # ranking alike
    config = CONFIGS / "minionerec" / "synthetic_tiny.yaml"
    path = tmp_path / ROW_RANKS_FILE
    logged = run_stage("test", config, tmp_path, per_row_path=path)
    ranks = load_row_ranks(tmp_path)
    for ranking, prefix in (("reported", ""), ("exact", "exact_")):
        rows = sorted(ranks[ranking])
        assert rows == list(range(64))  # every test row of the synthetic split, once
        values = torch.tensor([ranks[ranking][r] for r in rows])
        assert hit_at_k(values, 10).mean().item() == pytest.approx(logged[f"test/{prefix}hr@10"], abs=1e-6)
        assert ndcg_at_k(values, 10).mean().item() == pytest.approx(logged[f"test/{prefix}ndcg@10"], abs=1e-6)
    assert min(ranks["reported"].values()) >= -1 and min(ranks["exact"].values()) >= 0  # -1: not among the beams


def test_paired_differences_of_hand_made_ranks(tmp_path):
    # SASRec ranks rows 0-3 at 0, 12, 3, 40 -> hits 1, 0, 1, 0; NDCG 1, 0, 1/log2(5), 0.
    # SFT's beams rank them 1, 2, -, - -> hits 1, 1, 0, 0; NDCG 1/log2(3), 1/2, 0, 0; exactly only rows 0-1 at 1, 2.
    _write_ranks(tmp_path / "sasrec", {0: 0, 1: 12, 2: 3, 3: 40})
    _write_ranks(tmp_path / "sft", {0: 1, 1: 2, 2: -1, 3: -1}, test_exact={0: 1, 1: 2})
    paired = paired_differences(tmp_path, ["sasrec", "sft"], n_boot=4000)
    assert set(paired) == {"sft"} and set(paired["sft"]) == {"sasrec"}  # later minus earlier, once
    reported, exact = paired["sft"]["sasrec"]["reported"], paired["sft"]["sasrec"]["exact"]
    # reported HR: d = (0, 1, -1, 0), mean 0; every sign flip keeps |mean| >= 0 -> p = 1
    assert reported["hr@10"]["mean"] == 0.0 and reported["hr@10"]["p_value"] == 1.0 and reported["hr@10"]["n"] == 4
    ndcg = (1 / math.log2(3) - 1) + 0.5 - 1 / math.log2(5)  # sum of the four NDCG differences
    assert reported["ndcg@10"]["mean"] == pytest.approx(ndcg / 4)
    # exact: the two common rows only; d = (0, 1), mean 0.5; resampled means are 0, 0.5, 1 with probability
    # 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % quantiles are 0 and 1; the four sign flips all give |mean| 0.5 -> p = 1
    assert exact["hr@10"]["n"] == 2 and exact["hr@10"]["mean"] == 0.5
    assert (exact["hr@10"]["low"], exact["hr@10"]["high"], exact["hr@10"]["p_value"]) == (0.0, 1.0, 1.0)
    # scripts/recsys_paired.py rebuilds them from the saved files (a stale entry is replaced) and prints the report,
    # in percentage points
    results = {"sasrec": {"wall_s": 1.0, "test/hr@10": 0.5, "test/rows": 4, "paired": {"stale": {}}},
               "sft": {"wall_s": 2.0, "test/hr@10": 0.5, "test/rows": 4}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    lines = _recsys_paired().rebuild(tmp_path.parent, [tmp_path.name], n_boot=4000).splitlines()
    rebuilt = json.loads((tmp_path / "results.json").read_text())
    assert "paired" not in rebuilt["sasrec"] and rebuilt["sft"]["paired"] == paired["sft"]  # same seed, same numbers
    assert lines == markdown_table(tmp_path.parent, datasets=(tmp_path.name,)).splitlines()
    assert f"| {tmp_path.name} | MiniOneRec SFT − SASRec (full ranking) | exact | +50.00 [0.00, +100.00] | " \
           f"+{100 * (1 / math.log2(3) - 1 + 0.5) / 2:.2f} [{100 * (1 / math.log2(3) - 1):.2f}, +50.00] | 1 / 1 | 2 |" in lines


def test_seed_spread_and_its_table(tmp_path):
    runs = {0: {"test/hr@10": 0.10, "test/ndcg@10": 0.05}, 1: {"test/hr@10": 0.12, "test/ndcg@10": 0.07},
            2: {"test/hr@10": 0.14, "test/ndcg@10": 0.06}}
    spread = seed_spread(runs)
    assert spread["seeds"] == [0, 1, 2]
    # mean 0.12; sample std sqrt(((-0.02)^2 + 0 + 0.02^2) / 2) = 0.02
    assert spread["test/hr@10"]["mean"] == pytest.approx(0.12) and spread["test/hr@10"]["std"] == pytest.approx(0.02)
    assert "test/exact_hr@10" not in spread  # no run logged it
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "results.json").write_text(json.dumps(
        {"sasrec": {"wall_s": 3.0, "test/hr@10": 0.10, "test/ndcg@10": 0.05, "test/rows": 64, "seeds": spread}}))
    assert "| synthetic | SASRec (full ranking) | 3 | - | 12.00 ± 2.00 (3 seeds) | 6.00 ± 1.00 (3 seeds) |" in \
        markdown_table(tmp_path).splitlines()


def test_every_run_pairs_itself_with_the_stages_already_there_and_repeats_seeds(tmp_path):
    # an earlier SFT result on the synthetic test rows (64 rows; its ranks made up) is in the folder; running SASRec
    # with --seeds 2 adds SASRec's own ranks, the SFT - SASRec pair on the 64 common rows, and SASRec's seed spread
    root = tmp_path / "synthetic"
    _write_ranks(root / "sft", {r: r % 12 - 1 for r in range(64)}, test_exact={r: r % 12 for r in range(64)})
    (root / "results.json").write_text(json.dumps({"sft": {"wall_s": 1.0, "test/hr@10": 0.5, "test/rows": 64}}))
    results = main(["--dataset", "synthetic", "--stages", "sasrec", "--seeds", "2", "--out", str(tmp_path),
                    "--trainer.max_epochs=1"])
    assert (root / "sasrec" / ROW_RANKS_FILE).is_file() and (root / "sasrec_seed1" / ROW_RANKS_FILE).is_file()
    pair = results["sft"]["paired"]["sasrec"]
    assert pair["reported"]["hr@10"]["n"] == pair["exact"]["ndcg@10"]["n"] == 64
    sasrec = torch.tensor(list(load_row_ranks(root / "sasrec")["reported"].values()))
    sft = torch.tensor([r % 12 - 1 for r in range(64)])  # rows 0..63 in order on both sides
    assert pair["reported"]["hr@10"]["mean"] == pytest.approx((hit_at_k(sft, 10) - hit_at_k(sasrec, 10)).mean().item())
    assert results["sasrec"]["seeds"]["seeds"] == [0, 1]
    assert results["sasrec"]["seeds"]["test/hr@10"]["values"][0] == results["sasrec"]["test/hr@10"]
    assert json.loads((root / "results.json").read_text())["sft"]["paired"] == results["sft"]["paired"]


def test_a_smollm2_stage_without_a_config_for_the_data_set_exits_with_a_named_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--dataset", "synthetic", "--stages", "sasrec,sft-smollm2-lora", "--out", str(tmp_path)])
    assert exited.value.code == 2
    assert "no config for dataset 'synthetic'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", "synthetic", "--stages", "sasrec", "--seeds", "0", "--out", str(tmp_path)])


def test_merge_copies_stages_run_elsewhere_and_refuses_other_item_ids(tmp_path):
    # the SmolLM2 rows run in their own --out folder: --merge copies their results entry and row ranks into the main
    # folder, after which the rebuilt pairs include them (same hand-made ranks as above: SFT's beams - SASRec, mean 0)
    main_root, other = tmp_path / "main" / "ds", tmp_path / "llm" / "ds"
    for root in (main_root, other):
        root.mkdir(parents=True)
        (root / "sid_index.json").write_text('{"ids": [[0, 1], [1, 0]]}')
    _write_ranks(main_root / "sasrec", {0: 0, 1: 12, 2: 3, 3: 40})
    (main_root / "results.json").write_text(json.dumps({"sasrec": {"wall_s": 1.0, "test/hr@10": 0.5, "test/rows": 4}}))
    _write_ranks(other / "sft-smollm2-lora", {0: 1, 1: 2, 2: -1, 3: -1})
    (other / "results.json").write_text(json.dumps({
        "sft-smollm2-lora": {"wall_s": 9.0, "test/hr@10": 0.5, "test/rows": 4, "paired": {"stale": {}}},
        "not-a-stage": {"wall_s": 1.0}}))
    script = _recsys_paired()
    assert script.merge(tmp_path / "llm", tmp_path / "main") == ["ds/sft-smollm2-lora"]
    merged = json.loads((main_root / "results.json").read_text())
    assert set(merged) == {"sasrec", "sft-smollm2-lora"} and "paired" not in merged["sft-smollm2-lora"]
    script.rebuild(tmp_path / "main", ["ds"], n_boot=1000)
    pair = json.loads((main_root / "results.json").read_text())["sft-smollm2-lora"]["paired"]["sasrec"]["reported"]
    assert pair["hr@10"]["mean"] == 0.0 and pair["hr@10"]["n"] == 4  # hits (1,1,0,0) - (1,0,1,0)
    # other item IDs: the rows cannot be paired, and nothing is copied
    (other / "sid_index.json").write_text('{"ids": [[1, 0], [0, 1]]}')
    (main_root / "sft-smollm2-lora" / ROW_RANKS_FILE).unlink()
    with pytest.raises(ValueError, match="differs from"):
        script.merge(tmp_path / "llm", tmp_path / "main")
    assert not (main_root / "sft-smollm2-lora" / ROW_RANKS_FILE).exists()
