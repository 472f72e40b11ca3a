"""CLI start-up: ``vlkit --help`` against ``python -c "import torch"``, a method subcommand against
``python -c "import lightning"``, in the same run (issue 13, item 2).

There is no authors' code to restate here: the reference is the floor a user already pays, importing torch
(goal: ``vlkit --help`` in at most half of it) and importing Lightning (goal: a method subcommand,
``vlkit test --config tiny_tfup.yaml --print_config``, in no more than that; it must import the method's
module too). Each command runs in a fresh interpreter; repetitions interleave ours and the reference
(bench/_common.paired_ratio) and the ratio is the median of per-pair ratios ``time(ours) / time(reference)``
(an ``_overhead`` name: lower is better). The help text the script prints is checked to be the kit's.
The clock is the child processes' CPU time (user + system) by default, which a shared machine's load does
not inflate; ``--clock wall`` times wall seconds instead.

    python bench/cli.py [--quick] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import children_cpu_seconds, paired_ratio, pin_threads, print_ratio  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "vlkit" / "tfup" / "tiny_tfup.yaml"


def _vlkit() -> list[str]:
    """The installed console script when it is the light entry, else the same entry as a module."""
    script = Path(sys.executable).with_name("vlkit")
    if script.exists() and "vlkit._entry" in script.read_text(errors="replace"):
        return [str(script)]
    return [sys.executable, "-m", "vlkit._entry"]


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> None:
    """Time the commands and print the two RATIO lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 pairs per comparison instead of 7")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="the commands' CPU time (default; steady on a shared machine) or wall time")
    args = parser.parse_args(argv)
    pin_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    repeats = 3 if args.quick else 7
    vlkit = _vlkit()
    clock = {"cpu": children_cpu_seconds, "wall": time.perf_counter}[args.clock]
    unit = "CPU s" if args.clock == "cpu" else "s"

    from vlkit._entry import help_text

    assert _run([*vlkit, "--help"]).strip() == help_text().strip(), "the script did not print the kit's help"
    ratio, ours, torch_s = paired_ratio(lambda: _run([*vlkit, "--help"]), lambda: _run([sys.executable, "-c", "import torch"]),
                                        repeats=repeats, clock=clock)
    print_ratio("vlkit_help_overhead", ratio, goal="<= 0.5",
                detail=f"vlkit --help {ours:.2f} {unit} vs import torch {torch_s:.2f} {unit}, medians of {repeats}")
    subcommand = [*vlkit, "test", "--config", str(TINY), "--print_config"]
    assert "class_path: vlkit.methods.tfup.LitTFUP" in _run(subcommand)
    ratio, ours, lightning_s = paired_ratio(lambda: _run(subcommand), lambda: _run([sys.executable, "-c", "import lightning"]),
                                            repeats=repeats, clock=clock)
    print_ratio("vlkit_subcommand_overhead", ratio, goal="<= 1.0",
                detail=f"vlkit test --print_config {ours:.2f} {unit} vs import lightning {lightning_s:.2f} {unit}, medians of {repeats}")


if __name__ == "__main__":
    main()
