"""Helpers of the 2-rank tests: run a job of ``_worker.py`` under Lightning's DDP strategy on 2 CPU processes
(gloo), or on 1 process, and read back what each rank wrote.

The DDP runs are subprocesses: Lightning's ``strategy="ddp"`` launches the other ranks by re-running the
worker script with the same arguments, which a pytest process cannot be. The 1-rank runs call the same job
function in the test process (no second interpreter start-up), so both sides build their model and data in
the same way, from seed 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

WORKER = Path(__file__).with_name("_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _worker_module(worker: Path = WORKER):
    spec = importlib.util.spec_from_file_location(f"distributed_{worker.stem.lstrip('_')}", worker)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_job(job: str, out_dir: Path, devices: int, timeout: float = 300, worker: Path = WORKER, **options) -> list[dict]:
    """Run ``_worker.py job`` on ``devices`` CPU processes (DDP, gloo, when 2; in this process when 1) and
    return each rank's JSON report (rank order). ``options`` reach the job as keyword arguments; ``worker`` is
    the script that holds the job (``_fsdp_worker.py``: the FSDP jobs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if devices == 1:
        return [_worker_module(worker).run(job, out_dir, 1, options)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "GRADIO_ANALYTICS_ENABLED": "False", "PL_DISABLE_FORK": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(worker), job, str(out_dir), str(devices), json.dumps(options)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert proc.returncode == 0, f"{job} on {devices} rank(s) failed:\n{proc.stderr[-4000:]}"
    reports = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(devices)]
    for r, report in enumerate(reports):
        assert report["rank"] == r and report["world_size"] == devices
    return reports


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict the worker wrote (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_metrics(one: dict[str, float], many: dict[str, float], prefix: str, atol: float = 1e-6) -> None:
    """Every ``prefix`` metric of the 1-rank run is in the N-rank run with the same value (NaN equals NaN)."""
    keys = sorted(k for k in one if k.startswith(prefix))
    assert keys, f"no {prefix!r} metric in {sorted(one)}"
    assert keys == sorted(k for k in many if k.startswith(prefix))
    for key in keys:
        a, b = one[key], many[key]
        assert (a != a and b != b) or abs(a - b) <= atol, f"{key}: 1 rank {a} vs N ranks {b}"


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    """Two state dicts hold the same parameters to ``atol``, but for the key slice of attention input-projection
    biases (``self_attn.in_proj_bias[D:2D]``): its gradient is zero in exact arithmetic (the softmax over keys
    is shift-invariant per query), so two runs' float-noise gradients differ and Adam normalises that noise to
    steps of about the learning rate; it changes no output."""
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        other = b[name]
        if name.endswith("self_attn.in_proj_bias"):
            D = value.shape[0] // 3
            keep = torch.cat([torch.arange(D), torch.arange(2 * D, 3 * D)])  # query and value slices
            value, other = value[keep], other[keep]
        assert (value.float() - other.float()).abs().max() <= atol, name


@pytest.fixture(scope="module")  # stateless: module-scoped fixtures (one 2-rank run shared by tests) may use it
def ddp():
    """The helpers of this folder: ``ddp.run(job, out_dir, devices, **options) -> [report of rank 0, ...]``
    (:func:`run_job`), ``ddp.weights(path)`` (:func:`load_weights`), ``ddp.assert_same_metrics(one, many,
    prefix, atol)`` (:func:`assert_same_metrics`) and ``ddp.assert_same_weights(a, b, atol)``
    (:func:`assert_same_weights`)."""
    return SimpleNamespace(run=run_job, weights=load_weights, assert_same_metrics=assert_same_metrics,
                           assert_same_weights=assert_same_weights)
