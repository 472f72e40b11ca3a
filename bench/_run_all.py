"""Run every bench (``make bench``), keep the log, and turn its RATIO lines into the README's table.

    python bench/_run_all.py                       # every bench/[a-z]*.py --quick, log in results/bench.txt
    python bench/_run_all.py --from results/bench.txt --readme README.md   # only rebuild the table

Each bench runs in its own process (so each pins its own threads before torch loads); its output is
streamed and saved to ``results/bench.txt`` with a ``TIME <bench> <wall seconds> cpu <CPU seconds>`` line
after it and a final ``TIME total ...`` (the benches run one thread, so on a machine shared with other jobs
their CPU time is what the run would take on idle cores). The table (``results/bench.md``) has one row per RATIO line: the name, the value,
the goal, whether the goal is met, the bench it came from and the detail the bench printed. With
``--readme``, the block between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in that
file is replaced by the table, so the README quotes exactly what one ``make bench`` run printed.
``scripts/gpu_bench.sh`` writes a log of the same form on a GPU and its table with ``--from`` and ``--label``
(see docs/gpu-bench.md).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import children_cpu_seconds  # noqa: E402  (standard library only: torch is not imported)

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
_RATIO = re.compile(r"^RATIO (\S+) (\S+)(?:\s+\(goal ([^)]*)\))?(?:\s+\[(.*)\])?\s*$")
_GOAL = re.compile(r"^\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


def parse_log(text: str) -> tuple[list[dict], dict[str, tuple[float, float | None]]]:
    """The RATIO rows (name, value, goal, met, bench, detail) and the TIME lines (wall, CPU or None) of a log.

    ``met`` is True/False when the goal reads ``>= x`` or ``<= x``, None when there is no goal.
    """
    rows: list[dict] = []
    times: dict[str, tuple[float, float | None]] = {}
    bench = ""
    for line in text.splitlines():
        if line.startswith("== "):
            bench = line[3:].strip()
            continue
        if line.startswith("TIME "):
            parts = line[5:].split()
            cpu = float(parts[3]) if len(parts) >= 4 and parts[2] == "cpu" else None
            times[parts[0]] = (float(parts[1]), cpu)
            continue
        match = _RATIO.match(line.strip())
        if not match:
            continue
        name, value, goal, detail = match.groups()
        value_f = float(value)
        met = None
        goal_match = _GOAL.match(goal or "")
        if goal_match:
            op, bound = goal_match.groups()
            met = value_f >= float(bound) if op == ">=" else value_f <= float(bound)
        rows.append({"name": name, "value": value_f, "goal": goal or "", "met": met, "bench": bench, "detail": detail or ""})
    return rows, times


def render_table(rows: list[dict], times: dict[str, tuple[float, float | None]], label: str = "`make bench`") -> str:
    """The markdown table of ``rows``, with the total wall time of the run (named ``label``) under it when it is known."""
    out = ["| RATIO line | measured | goal | met | bench, size |", "|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        where = f"`{row['bench']}`" + (f": {row['detail']}" if row["detail"] else "")
        out.append(f"| `{row['name']}` | {row['value']:.3f} | {row['goal'] or '-'} | {met} | {where} |")
    if "total" in times:
        wall, cpu = times["total"]
        per = ", ".join(f"{Path(k).stem} {v[0]:.0f} s" for k, v in times.items() if k != "total")
        cpu_text = f", {cpu / 60:.1f} min of CPU" if cpu is not None else ""
        out.append("")
        out.append(f"{label} took {wall / 60:.1f} min of wall time{cpu_text} ({per}).")
    return "\n".join(out) + "\n"


def replace_block(document: str, table: str) -> str:
    """``document`` with the text between the two bench-table markers replaced by ``table``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"readme: expected the markers {START} ... {END} in this order, found them at {start}, {end}")
    return document[: start + len(START)] + "\n" + table + document[end:]


def run_all(log_path: Path, quick: bool) -> str:
    """Run each ``bench/[a-z]*.py`` in turn, streaming and logging its output; stop at the first failure."""
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    total, total_cpu = time.perf_counter(), children_cpu_seconds()
    for script in sorted((ROOT / "bench").glob("[a-z]*.py")):
        rel = script.relative_to(ROOT).as_posix()
        emit(f"== {rel}")
        start, start_cpu = time.perf_counter(), children_cpu_seconds()
        cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
        with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                emit(line.rstrip("\n"))
        emit(f"TIME {rel} {time.perf_counter() - start:.1f} cpu {children_cpu_seconds() - start_cpu:.1f}")
        if proc.returncode:
            log_path.write_text("\n".join(lines) + "\n")
            raise SystemExit(f"{rel} failed with exit status {proc.returncode} (log: {log_path})")
    emit(f"TIME total {time.perf_counter() - total:.1f} cpu {children_cpu_seconds() - total_cpu:.1f}")
    text = "\n".join(lines) + "\n"
    log_path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """Command line: run the benches (or read a saved log), write the table, optionally into a README."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="from_log", type=Path, help="read this saved log instead of running the benches")
    p.add_argument("--log", type=Path, default=ROOT / "results" / "bench.txt", help="where the run's log goes")
    p.add_argument("--table", type=Path, default=ROOT / "results" / "bench.md", help="where the markdown table goes")
    p.add_argument("--readme", type=Path, help="replace the bench-table block of this file with the table")
    p.add_argument("--full", action="store_true", help="the benches' full sizes instead of --quick (much longer)")
    p.add_argument("--label", default="`make bench`", help="what the table's last line calls the run")
    args = p.parse_args(argv)
    if args.from_log:
        text = args.from_log.read_text()
    else:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        text = run_all(args.log, quick=not args.full)
    rows, times = parse_log(text)
    table = render_table(rows, times, args.label)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(table)
    print(f"\n{table}\n(table: {args.table})")
    if args.readme:
        args.readme.write_text(replace_block(args.readme.read_text(), table))
        print(f"updated the bench table in {args.readme}")


if __name__ == "__main__":
    main()
