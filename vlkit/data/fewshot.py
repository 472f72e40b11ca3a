"""Image-classification data for few-shot and unsupervised adaptation: datasets by name, seeded K-shot
sampling, and ``FewShotDataModule`` (encoded features, cached on disk, served as batches of dicts)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from vlkit.data.features import encode_dataset

__all__ = ["build_dataset", "sample_few_shot", "sample_subset", "FewShotDataModule", "ImageFolderDataset"]


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``; class names are folder names with '_' read as spaces."""

    def __init__(self, root: str, transform=None) -> None:
        from torchvision.datasets import ImageFolder

        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder root {root!r} does not exist")
        self.inner = ImageFolder(root)
        self.transform = transform
        self.classnames = [c.replace("_", " ") for c in self.inner.classes]
        digest = hashlib.sha1("\n".join(p for p, _ in self.inner.samples).encode()).hexdigest()[:12]
        self.fingerprint = f"imagefolder:{os.path.abspath(root)}:{len(self.inner)}:{digest}"

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        image, label = self.inner[index]
        image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


class _TorchvisionDataset(Dataset):
    def __init__(self, name: str, root: str, split: str, download: bool) -> None:
        import torchvision.datasets as tvd

        if not hasattr(tvd, name):
            raise ValueError(f"dataset: torchvision has no dataset {name!r}")
        cls = getattr(tvd, name)
        try:
            self.inner = cls(root, train=split == "train", download=download)
        except TypeError:
            self.inner = cls(root, split=split, download=download)
        self.classnames = [str(c) for c in getattr(self.inner, "classes")]
        self.fingerprint = f"torchvision:{name}:{os.path.abspath(root)}:{split}:{len(self.inner)}"

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        image, label = self.inner[index]
        return image.convert("RGB"), int(label)


def build_dataset(name: str, split: str = "test", root: str | None = None, download: bool = False) -> Dataset:
    """``"fashion-mnist"``, ``"imagefolder:<dir>"`` (split ignored: one folder per split) or
    ``"torchvision:<ClassName>"`` (with ``root``). Items are ``(PIL image, label)``; ``.classnames`` and
    ``.fingerprint`` are set."""
    if name == "fashion-mnist":
        from vlkit.data.fashion_mnist import FashionMNIST

        return FashionMNIST(split=split, root=root, download=download)
    if name.startswith("imagefolder:"):
        folder = name.removeprefix("imagefolder:")
        split_dir = Path(folder) / split
        return ImageFolderDataset(str(split_dir if split_dir.is_dir() else folder))
    if name.startswith("torchvision:"):
        if root is None:
            raise ValueError(f"dataset {name!r} needs root= (the directory torchvision reads or downloads into)")
        return _TorchvisionDataset(name.removeprefix("torchvision:"), root, split, download)
    raise ValueError(f"dataset must be 'fashion-mnist', 'imagefolder:<dir>' or 'torchvision:<Name>', got {name!r}")


def sample_few_shot(labels: Tensor, shots: int, seed: int) -> Tensor:
    """K indices per class, drawn without replacement by a generator seeded with ``seed``.

    Returns (C*K,) indices grouped by class (class 0's K first). Raises if a class has fewer than K.
    """
    labels = torch.as_tensor(labels)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()  # (n_c,)
        if members.numel() < shots:
            raise ValueError(f"shots={shots} but class {c} has only {members.numel()} samples")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:shots]])
    return torch.cat(chosen)  # (C*K,)


def sample_subset(num_items: int, size: int | None, seed: int) -> Tensor:
    """A seeded random subset of ``size`` indices (sorted), or all indices when size is None."""
    if size is None or size >= num_items:
        return torch.arange(num_items)
    if size < 1:
        raise ValueError(f"subset_size must be >= 1 or None, got {size}")
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))[:size].sort().values


class FewShotDataModule(L.LightningDataModule):
    """Features of an unlabeled target set, an evaluation set and optional labelled shots.

    Image features are encoded once by the backbone handed over in ``connect(backbone)`` (the method's
    ``setup()`` calls it) and cached on disk under ``cache_dir``; later runs skip the image encoder.

    Batches (dicts):
      - train: ``index`` (B,), ``features`` (B, D) clean view, ``strong_features`` (B, D) one of
        ``augment_views`` pre-encoded augmented views (random per step; the clean view when 0),
        ``label`` (B,) true label (diagnostics only: unsupervised methods never read it).
      - val / test / predict: ``index`` (B,), ``features`` (B, D), ``label`` (B,).
    After ``connect``: ``classnames``, ``unlabeled_features`` (N, D), ``eval_features``/``eval_labels``,
    ``shot_features`` (C*K, D) / ``shot_labels`` (C*K,) when ``shots > 0``.

    Args:
        dataset: ``"fashion-mnist"``, ``"imagefolder:<dir>"`` or ``"torchvision:<Name>"``.
        root: data root (Fashion-MNIST defaults to Debian's ``/usr/share/datasets/fashion-mnist``).
        eval_split: split scored (and, transductively as in TFUP, also the unlabeled set).
        labelled_split: split the labelled K shots come from.
        subset_size: evaluate on a seeded subset of this many images (None: all).
        subset_seed: seed of that subset (fixed across methods so all see the same images).
        shots: labelled shots per class (0: none, the unsupervised setting).
        seed: seed of the shot sampling.
        augment_views: augmented views per unlabeled image, pre-encoded once (TFUP-T's strong view).
        batch_size: batch size of the training feature loader.
        eval_batch_size: batch size of the val/test/predict loaders (features are small: large batches
            keep Lightning's per-step overhead out of the per-epoch curve).
        cache_dir: feature cache directory (None: no cache).
        encode_batch_size: image batch size while encoding.
    """

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        root: str | None = None,
        eval_split: str = "test",
        labelled_split: str = "train",
        subset_size: int | None = 2000,
        subset_seed: int = 0,
        shots: int = 0,
        seed: int = 1,
        augment_views: int = 0,
        batch_size: int = 256,
        eval_batch_size: int = 2048,
        cache_dir: str | None = ".cache/vlkit",
        encode_batch_size: int = 64,
        download: bool = False,
    ) -> None:
        super().__init__()
        if shots < 0:
            raise ValueError(f"shots must be >= 0, got {shots}")
        if augment_views < 0:
            raise ValueError(f"augment_views must be >= 0, got {augment_views}")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch_size and eval_batch_size must be >= 1, got {batch_size}, {eval_batch_size}")
        self.save_hyperparameters()
        self.backbone = None
        self.classnames: list[str] = list(build_dataset(dataset, eval_split, root, download).classnames)

    # -- model-dependent part -------------------------------------------------------------------------
    def connect(self, backbone) -> FewShotDataModule:
        """Encode (or load from cache) every feature set this module serves, with ``backbone``."""
        h = self.hparams
        if self.backbone is backbone:
            return self
        self.backbone = backbone
        eval_set = build_dataset(h.dataset, h.eval_split, h.root, h.download)
        eval_set = Subset(eval_set, sample_subset(len(eval_set), h.subset_size, h.subset_seed).tolist())
        kwargs = dict(cache_dir=h.cache_dir, batch_size=h.encode_batch_size)
        self.eval_features, self.eval_labels = encode_dataset(backbone, eval_set, **kwargs)  # (N, D), (N,)
        self.unlabeled_features = self.eval_features
        views = []
        for view in range(h.augment_views):
            # deterministic augmentation per view, without touching the caller's global RNG stream
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(10_000 * h.subset_seed + view)
                feats, _ = encode_dataset(
                    backbone, eval_set, transform=backbone.train_preprocess, transform_id=f"train-aug-view{view}", **kwargs
                )
            views.append(feats)
        self.augmented_features = torch.stack(views) if views else self.eval_features.unsqueeze(0)  # (V, N, D)
        self.shot_features = self.shot_labels = None
        if h.shots > 0:
            labelled = build_dataset(h.dataset, h.labelled_split, h.root, h.download)
            labels = torch.as_tensor(getattr(labelled, "labels", None) if hasattr(labelled, "labels") else [y for _, y in labelled])
            idx = sample_few_shot(labels, h.shots, h.seed)
            self.shot_features, self.shot_labels = encode_dataset(backbone, Subset(labelled, idx.tolist()), **kwargs)
        return self

    def _require_connected(self) -> None:
        if self.backbone is None:
            raise RuntimeError("FewShotDataModule.connect(backbone) must be called before asking for data")

    # -- loaders --------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        self._require_connected()
        data = _AugmentedFeatures(self)
        # order and augmented views are a function of (seed, epoch) alone: Lightning calls set_epoch at
        # every epoch, so a run resumed from a checkpoint sees exactly the batches of an uninterrupted one
        return DataLoader(data, batch_size=self.hparams.batch_size, sampler=_EpochSeededSampler(data, self.hparams.seed))

    def _eval_loader(self) -> DataLoader:
        self._require_connected()
        n = self.eval_features.shape[0]
        data = TensorDataset(torch.arange(n), self.eval_features, self.eval_labels)
        # private generator: evaluating must not shift the global RNG that orders training batches
        return DataLoader(data, batch_size=self.hparams.eval_batch_size, collate_fn=_eval_collate, generator=torch.Generator())

    val_dataloader = _eval_loader
    test_dataloader = _eval_loader
    predict_dataloader = _eval_loader


def _eval_collate(items) -> dict[str, Tensor]:
    index, features, label = zip(*items)
    return {"index": torch.stack(index), "features": torch.stack(features), "label": torch.stack(label)}


class _AugmentedFeatures(Dataset):
    def __init__(self, dm: FewShotDataModule) -> None:
        self.features, self.views, self.labels = dm.unlabeled_features, dm.augmented_features, dm.eval_labels
        self.view_of = torch.zeros(self.features.shape[0], dtype=torch.long)  # (N,) view served per sample

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        strong = self.views[self.view_of[i], i]
        return {"index": torch.tensor(i), "features": self.features[i], "strong_features": strong, "label": self.labels[i]}


class _EpochSeededSampler(torch.utils.data.Sampler):
    """A random permutation (and a random augmented view per sample) drawn from (seed, epoch)."""

    def __init__(self, data: _AugmentedFeatures, seed: int) -> None:
        self.data, self.seed = data, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n = len(self.data)
        self.order = torch.randperm(n, generator=generator)  # (N,)
        self.data.view_of = torch.randint(self.data.views.shape[0], (n,), generator=generator)  # (N,)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.order.tolist())
