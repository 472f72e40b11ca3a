"""bench/_run_all.py: the RATIO lines of a bench log become the README table, goals judged as printed."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "_run_all.py"
_spec = importlib.util.spec_from_file_location("bench_run_all", _PATH)
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

LOG = """== bench/a.py
noise line
RATIO a_vs_authors 12.500  (goal >= 10)  [N=2000]
RATIO a_over_floor 2.100  (goal <= 2)
TIME bench/a.py 61.0 cpu 30.5
== bench/b.py
RATIO b_free 0.500
TIME bench/b.py 59.0
TIME total 120.0 cpu 90.0
"""


def test_parse_log_reads_values_goals_and_times():
    rows, times = run_all.parse_log(LOG)
    assert [(r["name"], r["value"], r["met"], r["bench"]) for r in rows] == [
        ("a_vs_authors", 12.5, True, "bench/a.py"),  # 12.5 >= 10
        ("a_over_floor", 2.1, False, "bench/a.py"),  # 2.1 > 2
        ("b_free", 0.5, None, "bench/b.py"),  # no goal printed
    ]
    assert rows[0]["detail"] == "N=2000" and rows[0]["goal"] == ">= 10"
    assert times == {"bench/a.py": (61.0, 30.5), "bench/b.py": (59.0, None), "total": (120.0, 90.0)}


def test_render_and_replace_block():
    rows, times = run_all.parse_log(LOG)
    table = run_all.render_table(rows, times)
    assert "| `a_over_floor` | 2.100 | <= 2 | **no** | `bench/a.py` |" in table
    assert "took 2.0 min of wall time, 1.5 min of CPU" in table  # 120 s, 90 s
    doc = f"intro\n{run_all.START}\nold table\n{run_all.END}\noutro\n"
    new = run_all.replace_block(doc, table)
    assert "old table" not in new and table in new
    assert new.startswith("intro\n") and new.endswith(f"{run_all.END}\noutro\n")
    with pytest.raises(ValueError, match="readme: expected the markers"):
        run_all.replace_block("no markers here", table)


def test_render_table_names_the_run_by_its_label():
    rows, times = run_all.parse_log(LOG)
    table = run_all.render_table(rows, times, label="scripts/gpu_bench.sh (cuda)")
    assert "scripts/gpu_bench.sh (cuda) took 2.0 min of wall time" in table and "make bench" not in table
