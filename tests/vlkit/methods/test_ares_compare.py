"""scripts/ares_compare.py --quick with tiny-random-lm: held-out problems, runs paired per problem, the summary."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ares_compare():
    spec = importlib.util.spec_from_file_location("ares_compare", ROOT / "scripts" / "ares_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_held_out_problems_are_distinct_unseen_and_spread_over_levels(ares_compare):
    from vlkit.data.reasoning import generate_arithmetic_problems

    train = {p.question for p in generate_arithmetic_problems(200, [1, 2, 3], seed=0)}
    test = ares_compare.held_out_problems(300, [1, 2, 3], seed=2, exclude=train)
    questions = [p.question for p in test]
    assert len(test) == 300 and len(set(questions)) == 300 and not set(questions) & train
    counts = {lv: sum(p.level == lv for p in test) for lv in (1, 2, 3)}
    # level 1 has 9 x 9 = 81 distinct sums, some of them training problems: it gives what is left, the others
    # share its remainder round-robin
    assert counts[1] == 81 - len({q for q in train if q.count("+") == 1 and len(q) == len("What is 1 + 2?")})
    assert counts[2] + counts[3] == 300 - counts[1] and abs(counts[2] - counts[3]) <= 1


def test_quick_runs_pair_per_problem_and_summarize(ares_compare, tmp_path):
    out = str(tmp_path)
    for algorithm, seed in (("grpo", 0), ("aepo", 0), ("aepo", 1)):
        ares_compare.main(["--quick", "--algorithm", algorithm, "--seed", str(seed), "--out", out])
    ares_compare.main(["--quick", "--baseline-only", "--out", out])
    rows = {name: json.loads((tmp_path / name / "per_problem.json").read_text())
            for name in ("grpo/seed0", "aepo/seed0", "aepo/seed1", "baseline")}
    ids = [r["prompt_id"] for r in rows["baseline"]]
    assert len(ids) == len(set(ids)) == 10 and all([r["prompt_id"] for r in v] == ids for v in rows.values())
    ares_compare.main(["--quick", "--summarize", "--out", out])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["runs"] == {"baseline": [0], "grpo": [0], "aepo": [0, 1]}
    overall = next(c for c in summary["comparisons"]
                   if (c["a"], c["b"], c["metric"], c["bucket"]) == ("aepo", "grpo", "correct", "all"))
    # AEPO's per-problem accuracy is the mean over its two seeds; the paired mean is the mean of the differences
    aepo = [(a["correct"] + b["correct"]) / 2 for a, b in zip(rows["aepo/seed0"], rows["aepo/seed1"])]
    grpo = [r["correct"] for r in rows["grpo/seed0"]]
    assert overall["n"] == 10 and overall["mean"] == pytest.approx(sum(aepo) / 10 - sum(grpo) / 10)
    assert overall["low"] <= overall["mean"] <= overall["high"]
    levels = {c["bucket"] for c in summary["comparisons"]} - {"all"}
    assert levels == {r["level"] for r in rows["baseline"]}  # one paired row per difficulty level
    text = (tmp_path / "summary.md").read_text()
    assert "| AEPO (ARES) (2 seeds) − GRPO (1) | all | 10 |" in text
    assert (tmp_path / "training_by_level.png").stat().st_size > 0
    probes = json.loads((tmp_path / "aepo" / "seed1" / "result.json").read_text())["probes"]
    assert [p["step"] for p in probes] == [0, 1, 2] and all("entropy_level1" in p for p in probes)
