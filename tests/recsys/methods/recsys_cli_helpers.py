import math
from pathlib import Path

from recsys.experiments import best_checkpoint, read_metrics, run_stage

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "recsys"


def run_cli(command: str, config: Path, tmp: Path, *extra: str) -> dict[str, float]:
    """``vlkit <command>`` in-process with a CSV logger and the parameter-drift callback: logged metrics."""
    return run_stage(command, config, tmp, *extra)


def checkpoint(tmp: Path, command: str = "fit") -> str:
    return best_checkpoint(tmp, command)


def assert_finite(metrics: dict[str, float], *names: str) -> None:
    for name in names:
        assert name in metrics, f"{name} not logged; have {sorted(metrics)[:20]}"
        assert math.isfinite(metrics[name]), f"{name} = {metrics[name]}"


__all__ = ["CONFIGS", "run_cli", "checkpoint", "assert_finite", "read_metrics"]
