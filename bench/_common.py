"""Shared benchmark plumbing: pinned threads, interleaved paired repetitions, RATIO lines.

Every bench under ``bench/`` imports this module *before* torch does any work, so that the thread
count is the same for the authors' baseline and for the kit's code. Ratios are the median of paired
ratios: each repetition times the baseline and ours back to back (alternating which goes first), so
a load spike on a shared machine hits both sides of one pair instead of one side of the whole run.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Callable


def pin_threads(n: int = 1) -> None:
    """Pin torch and the BLAS/OpenMP pools to ``n`` threads.

    Sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (read when torch loads its pools) and
    ``torch.set_num_threads``/``set_num_interop_threads`` (the latter only works before the first
    parallel op, so a failure there is ignored).
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) of every child process this process has waited for so far.

    The difference across a ``subprocess.run`` is that command's CPU time: a clock that a shared machine's
    load does not inflate, for benches that time whole processes.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds one call of ``fn`` takes (CUDA synchronised when a GPU is present).

    ``clock`` is wall time by default; ``time.process_time`` (this process's CPU seconds) suits a
    single-threaded CPU bench on a machine shared with other jobs, where wall time also counts the time
    the process waited for a core (never for GPU work, which process time does not see).
    """
    _sync()
    start = clock()
    fn()
    _sync()
    return clock() - start


def paired_ratio(
    fn_baseline: Callable[[], object],
    fn_ours: Callable[[], object],
    repeats: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, float]:
    """Median over ``repeats`` interleaved pairs of ``time(baseline) / time(ours)`` (``clock``: see :func:`timed`).

    Returns:
        ``(median_ratio, median_baseline_seconds, median_ours_seconds)``.
    """
    for _ in range(warmup):
        fn_baseline()
        fn_ours()
    ratios, base, ours = [], [], []
    for i in range(repeats):
        if i % 2 == 0:
            tb = timed(fn_baseline, clock)
            to = timed(fn_ours, clock)
        else:
            to = timed(fn_ours, clock)
            tb = timed(fn_baseline, clock)
        ratios.append(tb / to)
        base.append(tb)
        ours.append(to)
    return statistics.median(ratios), statistics.median(base), statistics.median(ours)


def print_ratio(name: str, value: float, goal: str | None = None, detail: str = "") -> None:
    """Print ``RATIO <name> <value>`` (the line ``make bench`` and the README table read)."""
    line = f"RATIO {name} {value:.3f}"
    if goal:
        line += f"  (goal {goal})"
    if detail:
        line += f"  [{detail}]"
    print(line, flush=True)
