"""Lightning callbacks shared by every package: the history of logged metrics, saved as JSON and a PNG.

A method logs its metrics (``self.log("train/best_fitness", ...)``) and nothing else; a
:class:`MetricHistory` callback listed in the config's ``trainer.callbacks`` reads them from
``trainer.callback_metrics`` after every training epoch (or step), keeps one row per point, and at the end
of ``fit`` writes the rows as JSON and draws them as one PNG (both written atomically through
``vlkit.cache``). The rows travel in checkpoints (``state_dict``), so a resumed run plots its whole
history. ProAPO (fitness per generation) and ARES (reward, entropy, KL per step) both use it::

    trainer:
      callbacks:
        - class_path: vlkit.callbacks.MetricHistory
          init_args:
            metrics: [train/best_fitness, train/mean_fitness]
            png_file: fitness_curve.png
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from vlkit.cache import atomic_write, atomic_write_json
from vlkit.errors import ConfigError, check_choice, check_int, check_non_empty

__all__ = ["MetricHistory", "ParameterDrift", "PerRowValues", "plot_metric_history"]

INTERVALS = ("epoch", "step")


def _check_file_name(name: str, value) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{name} must be a file name (relative to directory) or None, got {value!r}", argument=name)


def plot_metric_history(
    history: list[dict],
    panels: dict[str, list[str]],
    path: str | Path,
    x: str = "epoch",
    columns: int = 3,
) -> Path:
    """Draw ``history`` (one dict per point, holding ``x`` and some metric keys) as one PNG at ``path``.

    Args:
        history: rows such as ``{"epoch": 0, "step": 3, "train/reward": 0.5}``; a key missing from a row
            (not logged at that point) or a non-finite value leaves a gap, not a zero.
        panels: subplot title -> the metric keys drawn in it (one line each, labelled by the key).
        path: the PNG file, written atomically (``vlkit.cache.atomic_write``).
        x: the row key on the horizontal axis ("epoch" or "step").
        columns: subplots per row of the grid.

    Returns the path.
    """
    check_non_empty("panels", panels)
    check_int("columns", columns, low=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols + 0.4, 3.3 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            points = [(h[x], h[key]) for h in history if x in h and key in h and math.isfinite(h[key])]
            if points:
                ax.plot(*zip(*points), label=key, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:  # empty cells of the last grid row
        ax.axis("off")
    fig.tight_layout()
    try:
        path = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return path


class MetricHistory(L.Callback):
    """Record logged metrics after every training epoch (or step); write them as JSON and a PNG at fit end.

    Each point is a row ``{"epoch": e, "step": s, <key>: value, ...}`` holding the named keys found in
    ``trainer.callback_metrics`` at that point (``step`` is ``trainer.global_step``, the optimiser steps
    so far). A key that was not logged since the previous point is left out of the row: Lightning keeps
    the last value of a key that a step did not log, and a repeated stale value would draw a false
    plateau (see ``_fresh``). Only rank 0 writes files; the rows are the same on every rank when the
    metrics are synchronised (``sync_dist=True`` or torchmetrics).

    Args:
        metrics: the logged keys to record, e.g. ``["train/best_fitness", "val/acc"]``.
        panels: subplot title -> keys drawn together; None draws one panel per metric. Every key of a
            panel must be in ``metrics``.
        interval: "epoch" (after each training epoch, validation included) or "step" (after each
            training batch).
        directory: where the files go; None: the trainer's log directory (``trainer.log_dir``).
        json_file: file name of the JSON history (``{"metrics", "interval", "history"}``); None: not written.
        png_file: file name of the plot; None: not drawn.
        columns: subplots per row of the plot.
    """

    def __init__(
        self,
        metrics: list[str],
        panels: dict[str, list[str]] | None = None,
        interval: str = "epoch",
        directory: str | None = None,
        json_file: str | None = "metric_history.json",
        png_file: str | None = "metric_history.png",
        columns: int = 3,
    ) -> None:
        super().__init__()
        check_non_empty("metrics", metrics)
        if isinstance(metrics, str) or not all(isinstance(m, str) and m for m in metrics):
            raise ConfigError(f"metrics must be a list of logged metric names, got {metrics!r}", argument="metrics")
        check_choice("interval", interval, INTERVALS)
        check_int("columns", columns, low=1)
        if panels is not None:
            check_non_empty("panels", panels)
            unknown = [k for keys in panels.values() for k in keys if k not in metrics]
            if unknown:
                raise ConfigError(f"panels must only name keys listed in metrics {list(metrics)}, got {unknown}",
                                  argument="panels")
        if directory is not None and (not isinstance(directory, str) or not directory.strip()):
            raise ConfigError(f"directory must be a folder path or None, got {directory!r}", argument="directory")
        _check_file_name("json_file", json_file)
        _check_file_name("png_file", png_file)
        self.metrics = list(metrics)
        self.panels = dict(panels) if panels is not None else {m: [m] for m in self.metrics}
        self.interval = interval
        self.directory = directory
        self.json_file = json_file
        self.png_file = png_file
        self.columns = columns
        self.history: list[dict] = []
        self._last_storage: dict[str, int] = {}

    @property
    def state_key(self) -> str:
        """Distinct per output file, so two instances keep separate rows in a checkpoint."""
        return self._generate_state_key(json_file=self.json_file, png_file=self.png_file, interval=self.interval)

    # ------------------------------------------------------------------ recording
    def _fresh(self, key: str, value: torch.Tensor) -> bool:
        """True when ``value`` was logged since the previous point.

        Lightning clones every newly logged value into a new tensor while the previous one is still held,
        so a new value never shares the previous value's storage; a key not logged since then is served
        from the same storage again (``trainer.callback_metrics`` hands out detached views of it).
        """
        pointer = value.data_ptr()
        fresh = self._last_storage.get(key) != pointer
        self._last_storage[key] = pointer
        return fresh

    def _record(self, trainer: L.Trainer) -> None:
        found = trainer.callback_metrics
        keys = [k for k in self.metrics if k in found and self._fresh(k, found[k])]
        row: dict = {"epoch": int(trainer.current_epoch), "step": int(trainer.global_step)}
        if keys:
            # one device-to-host transfer for the whole row
            values = torch.stack([found[k].detach().float().reshape(()) for k in keys]).cpu().tolist()  # (len(keys),)
            row.update(zip(keys, values))
        self.history.append(row)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record a row after each training epoch (``interval="epoch"``)."""
        if self.interval == "epoch" and not trainer.sanity_checking:
            self._record(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        """Record a row after each training batch (``interval="step"``)."""
        if self.interval == "step":
            self._record(trainer)

    # ------------------------------------------------------------------ outputs
    def output_dir(self, trainer: L.Trainer) -> Path:
        """``directory``, else the trainer's log directory, else its root directory."""
        return Path(self.directory or trainer.log_dir or trainer.default_root_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the JSON history and the PNG (rank 0 only)."""
        out = self.output_dir(trainer)  # trainer.log_dir broadcasts from rank 0: every rank asks
        if not trainer.is_global_zero or not self.history:
            return
        if self.json_file:
            atomic_write_json(out / self.json_file, {"metrics": self.metrics, "interval": self.interval, "history": self.history})
        if self.png_file:
            plot_metric_history(self.history, self.panels, out / self.png_file, x=self.interval, columns=self.columns)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The rows so far (plain lists and floats: loads with ``weights_only=True``)."""
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the rows of an interrupted run, so the resumed run's files show the whole history."""
        self.history = [dict(row) for row in state_dict.get("history", [])]


class ParameterDrift(L.Callback):
    """Log ``train/param_drift`` = ||theta - theta_start|| / ||theta_start|| over the trainable parameters.

    theta_start is taken at the start of ``fit``; the drift is logged at the end of every training epoch
    (a diagnostic for RL drift, and the smoke tests' proof that training moved the weights). Moved here
    from ``recsys.training`` (issue 11); the recsys stage runner lists it in every fit.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Copy the trainable parameters (theta_start)."""
        self.start = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the relative distance of the trainable parameters from theta_start."""
        num, den = 0.0, 0.0
        for n, p in pl_module.named_parameters():
            if n in self.start:
                num += (p.detach() - self.start[n]).float().pow(2).sum().item()
                den += self.start[n].float().pow(2).sum().item()
        pl_module.log("train/param_drift", (num / max(den, 1e-12)) ** 0.5)


class PerRowValues(L.Callback):
    """Save the per-row values behind a method's test metrics, with each row's index, as one JSON file.

    A method that keeps its epoch's per-row values in ``torchmetrics.aggregation.CatMetric`` states reports
    only their means (MiniOneRec and SASRec keep the targets' ranks in ``target_ranks``: ``"test"`` and,
    for MiniOneRec's exact ranking, ``"test_exact"``). A paired comparison of two models needs them row by
    row: after every test batch this callback takes the values each such metric received in that batch and
    pairs them with the batch's ``row`` (each sample's index in its split, as ``SeqRecDataModule`` gives
    it); at the end of the test epoch the rows of every rank are gathered and rank 0 writes, sorted by row::

        {"test": {"rows": [0, 1, ...], "values": [3, -1, ...]}, "test_exact": {"rows": [...], "values": [...]}}

    A metric that received fewer values than its batch has rows holds those of the batch's first rows
    (MiniOneRec's ``evaluation.max_exact_rows`` scores the split's first rows; evaluation batches are in row
    order on every rank). The metric's list state (``CatMetric.value``) is read, never changed.

    Args:
        path: the JSON file, written atomically; a relative path is taken under the trainer's log directory.
        attribute: the module attribute holding the metrics: a dict or ``nn.ModuleDict`` of key -> CatMetric.
        stage: only the metrics whose key starts with this are saved.
    """

    def __init__(self, path: str = "per_row_values.json", attribute: str = "target_ranks", stage: str = "test") -> None:
        _check_file_name("path", path)
        check_non_empty("attribute", attribute, "an attribute name")
        check_non_empty("stage", stage, "a key prefix such as 'test'")
        self.path, self.attribute, self.stage = path, attribute, stage
        self.values: dict[str, tuple[list[int], list[float]]] = {}
        self._seen: dict[str, int] = {}

    def _metrics(self, pl_module: L.LightningModule) -> dict:
        metrics = getattr(pl_module, self.attribute, None)
        if metrics is None:
            raise ConfigError(f"PerRowValues needs the module to hold its CatMetrics in `{self.attribute}`; "
                              f"{type(pl_module).__name__} has no such attribute", argument="attribute")
        return {k: m for k, m in metrics.items() if k.startswith(self.stage) and isinstance(getattr(m, "value", None), list)}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start empty; remember how many values each metric holds already."""
        self.values = {}
        self._seen = {k: len(m.value) for k, m in self._metrics(pl_module).items()}

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        """Pair the values each metric received in this batch with the batch's ``row`` indices."""
        if not isinstance(batch, dict) or "row" not in batch:
            raise ConfigError("PerRowValues needs evaluation batches with a `row` index (B,) (SeqRecDataModule gives "
                              "one)", argument="batch")
        rows = [int(r) for r in batch["row"]]
        for key, metric in self._metrics(pl_module).items():
            new = metric.value[self._seen.get(key, 0):]
            self._seen[key] = len(metric.value)
            if not new:
                continue
            values = torch.cat([v.detach().reshape(-1).cpu() for v in new]).tolist()
            if len(values) > len(rows):
                raise ConfigError(f"metric {key!r} received {len(values)} values for a batch of {len(rows)} rows: "
                                  "not one value per row", argument="attribute")
            kept_rows, kept_values = self.values.setdefault(key, ([], []))
            kept_rows += rows[: len(values)]
            kept_values += values

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Gather every rank's rows and write the file on rank 0 (``vlkit.cache.atomic_write_json``)."""
        gathered = [self.values]
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self.values)
        if trainer.global_rank != 0:
            return
        merged: dict[str, dict[str, list]] = {}
        for part in gathered:
            for key, (rows, values) in part.items():
                entry = merged.setdefault(key, {"rows": [], "values": []})
                entry["rows"] += rows
                entry["values"] += values
        for entry in merged.values():  # sorted by row: the same file whatever the number of ranks
            order = sorted(range(len(entry["rows"])), key=entry["rows"].__getitem__)
            entry["rows"] = [entry["rows"][i] for i in order]
            entry["values"] = [entry["values"][i] for i in order]
        path = Path(self.path)
        if not path.is_absolute():
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, merged, indent=None)
