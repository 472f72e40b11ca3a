"""LitSASRec: the classic sequential recommender baseline, trained with full softmax cross-entropy over
all items and evaluated by exact full ranking (every item scored), on the same splits and metrics as
MiniOneRec."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.aggregation import CatMetric, MeanMetric

from recsys.functional.metrics import DEFAULT_KS, ranking_log_dict, target_rank_from_scores
from recsys.models.sasrec import SASRec
from vlkit.errors import ConfigError, check_int, check_int_sequence, check_non_negative, check_number, check_positive
from vlkit.checkpoints import record_class

__all__ = ["LitSASRec"]


class LitSASRec(L.LightningModule):
    """SASRec trained with full-softmax cross-entropy over all items, ranked exactly at evaluation.

    Args:
        hidden_size: width of the transformer (the authors' baseline: 32..64).
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        dropout: dropout probability in [0, 1).
        max_length: longest history used (MiniOneRec histories have at most 10 items).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        ks: cut-offs K of HR@K / NDCG@K.
    """

    def __init__(
        self,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.3,
        max_length: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ks: tuple[int, ...] = DEFAULT_KS,
    ) -> None:
        super().__init__()
        check_int("hidden_size", hidden_size, low=1)
        check_int("num_layers", num_layers, low=1)
        check_int("num_heads", num_heads, low=1)
        if hidden_size % num_heads:
            raise ConfigError(f"hidden_size must be divisible by num_heads={num_heads}, got {hidden_size}", argument="hidden_size")
        check_number("dropout", dropout, low=0, high=1, high_open=True)
        check_int("max_length", max_length, low=1)
        check_positive("lr", lr)
        check_non_negative("weight_decay", weight_decay)
        check_int_sequence("ks", ks, low=1)
        self.save_hyperparameters()
        self.net: SASRec | None = None
        # the targets' exact ranks of the epoch, concatenated over ranks at compute (torchmetrics "cat" state):
        # N ranks report what 1 rank reports
        self.target_ranks = nn.ModuleDict({"val": CatMetric(), "test": CatMetric()})
        # the mean cross-entropy over every rank's rows (torchmetrics "sum" states; Lightning's sync_dist mean
        # truncates an odd total row count over 2 ranks)
        self.eval_loss = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def setup(self, stage: str) -> None:
        """Build the network for the DataModule's catalogue size (once)."""
        data = self.trainer.datamodule.load()
        if self.net is None:
            hp = self.hparams
            self.net = SASRec(len(data.item_ids), hp.hidden_size, hp.num_layers, hp.num_heads, hp.dropout, hp.max_length)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the writing class, so that loading checks it (``vlkit.checkpoints``)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """AdamW on every parameter."""
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def training_step(self, batch, batch_idx):
        """Cross-entropy of the next item over all N items, logged as ``train/loss``."""
        scores = self.net(batch["history"])  # (B, N)
        loss = torch.nn.functional.cross_entropy(scores, batch["target"] - 1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, stage: str) -> None:
        scores = self.net(batch["history"])  # (B, N)
        loss = torch.nn.functional.cross_entropy(scores, batch["target"] - 1)
        self.eval_loss[stage].update(loss, weight=len(batch["target"]))  # weighted by the batch's rows
        self.target_ranks[stage].update(target_rank_from_scores(scores, batch["target"] - 1))

    def _log_epoch(self, stage: str) -> None:
        # computed values are already reduced over ranks (identical on every rank): logged without sync_dist
        metric = self.target_ranks[stage]
        ranks = metric.compute()  # (rows of every rank,) float; empty when no rank scored a row
        metric.reset()
        if isinstance(ranks, torch.Tensor) and ranks.numel():
            self.log(f"{stage}/loss", self.eval_loss[stage].compute(), sync_dist=False)
            self.log_dict(ranking_log_dict(stage, ranks.long(), self.hparams.ks), sync_dist=False)
        self.eval_loss[stage].reset()

    def validation_step(self, batch, batch_idx):
        """Keep the batch's cross-entropy and the targets' exact ranks for the epoch's metrics."""
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        """Keep the batch's cross-entropy and the targets' exact ranks for the epoch's metrics."""
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss``, ``val/hr@K``, ``val/ndcg@K`` (+ ``_ci``) and ``val/rows`` over the rows of every rank."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log ``test/loss``, ``test/hr@K``, ``test/ndcg@K`` (+ ``_ci``) and ``test/rows`` over the rows of every rank."""
        self._log_epoch("test")
