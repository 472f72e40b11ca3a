"""Items of a sequential-recommendation data set as a DataModule for ID learning (RQ-VAE).

Batches: ``embedding`` (B, D) float text embeddings, ``index`` (B,) long item indices (catalogue
order). The embeddings are computed by the model side (an encoder is a model) and handed over through
:meth:`ItemDataModule.connect`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from recsys.data.sequences import SeqRecData, check_dataset_name, load_seqrec
from vlkit.errors import ConfigError, check_finite_tensor, check_int

__all__ = ["ItemDataModule"]


class ItemDataModule(L.LightningDataModule):
    """The catalogue's items as batches of text embeddings (see the module docstring for the batch keys).

    Args:
        dataset: a data set name, see :func:`recsys.data.sequences.load_seqrec`.
        batch_size: training batch size (validation and test use one batch of all items).
        root: data root of the Amazon loader (default ``../shared/data/amazon18``).
        seed: seed of the shuffling.
    """

    def __init__(self, dataset: str = "synthetic", batch_size: int = 1024, root: str | None = None, seed: int = 0) -> None:
        super().__init__()
        check_dataset_name(dataset)
        check_int("batch_size", batch_size, low=1)
        check_int("seed", seed)
        self.save_hyperparameters()
        self.data: SeqRecData | None = None
        self.embeddings: torch.Tensor | None = None

    def load(self) -> SeqRecData:
        """The data set (loaded once)."""
        if self.data is None:
            self.data = load_seqrec(self.hparams.dataset, root=self.hparams.root)
        return self.data

    def item_texts(self) -> list[str]:
        """Each item's text (title + description) in catalogue order, for the model's text encoder."""
        data = self.load()
        return [data.text(item) for item in data.item_ids]

    def setup(self, stage: str | None = None) -> None:
        """Load the data set."""
        self.load()

    def connect(self, embeddings: torch.Tensor) -> None:
        """Hand over the (N, D) item embeddings (catalogue order); checked for shape and finiteness."""
        n = len(self.load().item_ids)
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] != n or embeddings.shape[1] < 1:
            raise ConfigError(f"embeddings must be a (N={n}, D) tensor, got {tuple(getattr(embeddings, 'shape', ())) or type(embeddings).__name__}",
                              argument="embeddings")
        check_finite_tensor("embeddings", embeddings)
        self.embeddings = embeddings.float()

    def _dataset(self) -> TensorDataset:
        if self.embeddings is None:
            raise RuntimeError("ItemDataModule has no embeddings: the model must call connect(embeddings) in setup")
        return TensorDataset(self.embeddings, torch.arange(self.embeddings.shape[0]))

    def _collate(self, rows):
        emb, idx = zip(*rows)
        return {"embedding": torch.stack(emb), "index": torch.stack(idx)}

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches of ``embedding`` (B, D) and ``index`` (B,)."""
        g = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(self._dataset(), batch_size=self.hparams.batch_size, shuffle=True, generator=g,
                          collate_fn=self._collate)

    def val_dataloader(self) -> DataLoader:
        """Every item in one batch, in catalogue order."""
        return DataLoader(self._dataset(), batch_size=len(self._dataset()), collate_fn=self._collate)

    def test_dataloader(self) -> DataLoader:
        """Every item in one batch, in catalogue order (as validation)."""
        return self.val_dataloader()
