"""The result formatter (vlkit/report.py) and the few-shot tables printed through it: percent, "± std (n
seeds)" only when n > 1, seconds rounded. Expected strings are worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest

from vlkit.errors import ConfigError
from vlkit.report import format_cell, is_rate, markdown_table, mean_and_std, mean_std, percent, seconds


def test_percent_rounds_to_the_requested_decimals():
    assert percent(0.38934) == "38.93"  # 38.934 -> 38.93
    assert percent(0.38936) == "38.94"  # 38.936 -> 38.94
    assert percent(0.38936, decimals=1) == "38.9"
    assert percent(1.0) == "100.00" and percent(0.0) == "0.00"
    assert percent(float("nan")) == "n/a"
    with pytest.raises(ConfigError, match="fraction"):
        percent("0.3")
    with pytest.raises(ConfigError, match="decimals"):
        percent(0.3, decimals=-1)


def test_mean_and_std_is_the_sample_std():
    # 0.5, 0.6, 0.7: mean 0.6; squared deviations 0.01 + 0 + 0.01 = 0.02, / (n - 1 = 2) = 0.01 -> std 0.1
    mean, std = mean_and_std([0.5, 0.6, 0.7])
    assert math.isclose(mean, 0.6) and math.isclose(std, 0.1)
    assert mean_and_std([0.42]) == (0.42, 0.0)  # one value: no spread
    with pytest.raises(ConfigError, match="values"):
        mean_and_std([])


def test_mean_std_shows_the_spread_and_count_only_for_several_seeds():
    assert mean_std(0.6, 0.1, 3) == "60.00 ± 10.00 (3 seeds)"
    assert mean_std(0.3893, 0.0041, 3) == "38.93 ± 0.41 (3 seeds)"
    assert mean_std(0.3893, 0.0, 1) == "38.93"  # one seed: no "± 0.00", no count
    assert mean_std(0.3893, None, 1) == "38.93"
    assert mean_std(0.25, 0.05, 2, decimals=1) == "25.0 ± 5.0 (2 seeds)"
    assert mean_std(3.5, 0.25, 2, rate=False) == "3.50 ± 0.25 (2 seeds)"  # not a rate: as it is
    with pytest.raises(ConfigError, match="n must be"):
        mean_std(0.5, 0.1, 0)


def test_seconds_are_rounded_for_reading():
    assert seconds(580.3) == "580"  # the quick start printed 580.3000
    assert seconds(580.5) == "580" and seconds(581.5) == "582"  # Python rounds halves to even
    assert seconds(10.0) == "10" and seconds(9.94) == "9.9" and seconds(2.345) == "2.3"
    assert seconds(0) == "0.0"


def test_which_columns_are_rates():
    rates = ["accuracy", "accuracy_mean", "accuracy_std", "test/acc", "val/acc", "mean_per_class_recall",
             "test/mean_per_class_recall", "test/miou_repri", "test/fbiou_prototype", "cache_pseudo_label_accuracy"]
    others = ["seconds", "shots", "seeds", "test/ndcg@10", "test/hr@10", "loss", "method", "n_test"]
    assert [c for c in rates if not is_rate(c)] == []
    assert [c for c in others if is_rate(c)] == []


def test_cells_of_plain_and_summary_rows():
    row = {"method": "tfup", "shots": 0, "accuracy": 0.41234, "seconds": 12.46, "loss": 0.123456, "n_test": 200}
    assert [format_cell(c, row) for c in row] == ["tfup", "0", "41.23", "12", "0.1235", "200"]
    summary = {"seeds": 3, "accuracy_mean": 0.6, "accuracy_std": 0.1, "seconds_mean": 580.3}
    assert format_cell("accuracy", summary) == "60.00 ± 10.00 (3 seeds)"
    assert format_cell("seconds", summary) == "580"
    assert format_cell("accuracy_mean", summary) == "60.00"  # asked by its own name: the number alone
    assert format_cell("missing", summary) == ""


def test_markdown_table_merges_a_mean_std_pair_into_one_column():
    rows = [
        {"method": "tfup-t", "seeds": 3, "accuracy_mean": 0.6, "accuracy_std": 0.1, "seconds_mean": 580.3},
        {"method": "zeroshot", "seeds": 1, "accuracy_mean": 0.3893, "accuracy_std": 0.0, "seconds_mean": 2.34},
    ]
    assert markdown_table(rows).splitlines() == [
        "| method | seeds | accuracy (%) | seconds |",
        "|---|---|---|---|",
        "| tfup-t | 3 | 60.00 ± 10.00 (3 seeds) | 580 |",
        "| zeroshot | 1 | 38.93 | 2.3 |",
    ]
    assert markdown_table([]) == ""
    assert markdown_table(rows, ["method", "accuracy"]).splitlines()[2] == "| tfup-t | 60.00 ± 10.00 (3 seeds) |"


def test_fewshot_summarize_and_to_markdown_print_percent():
    from vlkit import fewshot

    rows = [
        {"method": "tfup-t", "mode": "strict", "prompts": "simple", "shots": 0, "seed": s, "accuracy": a, "seconds": t}
        for s, a, t in ((1, 0.5, 100.0), (2, 0.6, 110.0), (3, 0.7, 120.6))
    ] + [{"method": "zeroshot", "mode": "strict", "prompts": "simple", "shots": 0, "seed": 1, "accuracy": 0.38934,
          "seconds": 2.0}]
    summary = fewshot.summarize(rows)
    # the numbers stay fractions (JSON, plots); the std is the sample std (0.1, see above)
    assert [s["seeds"] for s in summary] == [3, 1]
    assert math.isclose(summary[0]["accuracy_mean"], 0.6) and math.isclose(summary[0]["accuracy_std"], 0.1)
    assert math.isclose(summary[0]["seconds_mean"], 110.2)  # (100 + 110 + 120.6) / 3
    table = fewshot.to_markdown(summary).splitlines()
    assert table[0] == "| method | mode | prompts | shots | seeds | accuracy (%) | seconds |"
    assert table[2] == "| tfup-t | strict | simple | 0 | 3 | 60.00 ± 10.00 (3 seeds) | 110 |"
    assert table[3] == "| zeroshot | strict | simple | 0 | 1 | 38.93 | 2.0 |"  # one seed: no ± 0.00


def test_fewshot_evaluate_shows_progress_by_default():
    import inspect

    from vlkit import fewshot

    assert inspect.signature(fewshot.evaluate).parameters["progress"].default is True
