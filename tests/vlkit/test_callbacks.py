"""vlkit.callbacks.MetricHistory: rows from logged metrics (stale values left out), JSON + PNG at fit end,
rows carried through a checkpoint."""

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from vlkit.callbacks import MetricHistory
from vlkit.errors import ConfigError


class _Logs(L.LightningModule):
    """Logs train/b = batch index every step, train/a only on even steps, train/e once per epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        if batch_idx % 2 == 0:
            self.log("train/a", float(10 + batch_idx), on_step=True, on_epoch=False)
        self.log("train/b", float(batch_idx), on_step=True, on_epoch=False)
        self.log("train/e", float(batch_idx), on_step=False, on_epoch=True, reduce_fx="max")
        return (self.weight * batch.float()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, callback, epochs=2, ckpt_path=None):
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(_Logs(), DataLoader(torch.arange(4), batch_size=1), ckpt_path=ckpt_path)
    return trainer


def test_step_rows_skip_keys_not_logged_at_that_step(tmp_path):
    cb = MetricHistory(["train/a", "train/b"], interval="step", directory=str(tmp_path))
    _fit(tmp_path, cb)
    # 2 epochs x 4 batches; global_step counts optimiser steps done (1..8)
    assert [r["step"] for r in cb.history] == list(range(1, 9))
    assert [r["train/b"] for r in cb.history] == [0.0, 1.0, 2.0, 3.0] * 2
    # train/a was logged at batches 0 and 2 only: Lightning still serves 10.0 at batch 1, the row must not
    assert [r.get("train/a") for r in cb.history] == [10.0, None, 12.0, None] * 2
    saved = json.loads((tmp_path / "metric_history.json").read_text())
    assert saved["history"] == cb.history and saved["interval"] == "step"
    assert (tmp_path / "metric_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epoch_rows_and_resume_from_a_checkpoint(tmp_path):
    cb = MetricHistory(["train/e", "val/missing"], panels={"max batch index": ["train/e"]}, directory=str(tmp_path),
                       json_file="h.json", png_file="h.png")
    trainer = _fit(tmp_path, cb, epochs=2)
    # epoch rows: max over batches 0..3 = 3, and a key never logged is never recorded
    assert cb.history == [{"epoch": 0, "step": 4, "train/e": 3.0}, {"epoch": 1, "step": 8, "train/e": 3.0}]
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["callbacks"][cb.state_key] == {"history": cb.history}
    resumed = MetricHistory(["train/e", "val/missing"], panels={"max batch index": ["train/e"]},
                            directory=str(tmp_path / "again"), json_file="h.json", png_file="h.png")
    _fit(tmp_path, resumed, epochs=3, ckpt_path=ckpt)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    assert json.loads((tmp_path / "again" / "h.json").read_text())["history"] == resumed.history


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metrics": []}, "metrics"),
        ({"metrics": "train/a"}, "metrics"),
        ({"metrics": ["train/a"], "interval": "batch"}, "interval"),
        ({"metrics": ["train/a"], "panels": {"p": ["train/b"]}}, "panels"),
        ({"metrics": ["train/a"], "png_file": ""}, "png_file"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MetricHistory(**kwargs)
