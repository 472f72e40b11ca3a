"""Encoded-feature cache: each (backbone, weights, preprocessing, dataset, split) is encoded once.

Files live under ``<cache_dir>/features/<sha1 of the key>.pt`` (a :class:`vlkit.cache.KeyedCache` in the
``features`` namespace; ``cache_dir`` is usually the kit's cache root, ``vlkit.cache.cache_root()``) and
hold the key, the features and the labels; they are written atomically, and a file that fails to load or
whose key, shapes or values do not check out (a file of an older format included) is a miss and rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from vlkit.cache import KeyedCache
from vlkit.errors import ConfigError, check_int

__all__ = ["encode_dataset", "feature_cache_path", "FEATURE_NAMESPACE"]

FEATURE_NAMESPACE = "features"  # sub-folder of the cache root holding encoded image features


def _dataset_fingerprint(dataset: Dataset) -> str:
    if isinstance(dataset, Subset):
        digest = hashlib.sha1(str(list(map(int, dataset.indices))).encode()).hexdigest()[:12]
        return f"{_dataset_fingerprint(dataset.dataset)}/subset-{len(dataset.indices)}-{digest}"
    fingerprint = getattr(dataset, "fingerprint", None)
    if not fingerprint:
        raise ConfigError(
            f"dataset {type(dataset).__name__} has no .fingerprint, so its features cannot be cached; "
            "set dataset.fingerprint to a string naming the data and split, or pass cache_dir=None",
            argument="dataset",
        )
    return str(fingerprint)


def _feature_key(backbone, dataset: Dataset, transform_id: str) -> str:
    return f"{backbone.fingerprint}|{_dataset_fingerprint(dataset)}|{transform_id}"


def feature_cache_path(backbone, dataset: Dataset, cache_dir: str | os.PathLike, transform_id: str = "eval") -> tuple[Path, str]:
    """Where :func:`encode_dataset` caches ``dataset``'s features under ``cache_dir``, and the cache key.

    Returns ``(<cache_dir>/features/<sha1 of key>.pt, key)``; the key names the backbone fingerprint
    (weights + preprocessing), the dataset fingerprint (data, split, subset) and ``transform_id``.
    """
    key = _feature_key(backbone, dataset, transform_id)
    return KeyedCache(FEATURE_NAMESPACE, directory=cache_dir).path(key), key


def _valid_features(n: int):
    """A KeyedCache check: ``n`` finite feature rows and ``n`` labels."""

    def check(payload: dict) -> bool:
        feats, labels = payload["features"], payload["labels"]
        return feats.shape[0] == n and labels.shape[0] == n and bool(torch.isfinite(feats).all())

    return check


class _PreprocessedView(Dataset):
    """Applies the backbone's preprocessing to a dataset of (PIL image, label) items."""

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


@torch.no_grad()
def encode_dataset(
    backbone,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    transform=None,
    transform_id: str = "eval",
) -> tuple[Tensor, Tensor]:
    """Encode every image of ``dataset`` (items ``(PIL image, label)``) with ``backbone``.

    Returns ``(features (N, D) float32, L2-normalised, on CPU; labels (N,) int64)``. With ``cache_dir``
    the result is cached on disk under ``<cache_dir>/features/`` (``cache_dir`` is a cache root, e.g.
    ``vlkit.cache.cache_root()``; None: no cache) and a second call loads it without touching the image
    encoder. ``device`` defaults to CUDA when available. ``transform`` replaces ``backbone.preprocess`` (e.g. the
    random training augmentation); ``transform_id`` must then name it (and its seed) for the cache key.
    ``batch_size``: an int >= 1; ``num_workers``: an int >= 0.
    """
    check_int("batch_size", batch_size, low=1)
    check_int("num_workers", num_workers, low=0)
    n = len(dataset)
    if n == 0:
        raise ConfigError("dataset must hold at least one image to encode, got an empty dataset", argument="dataset")
    store = key = None
    if cache_dir is not None:
        store, key = KeyedCache(FEATURE_NAMESPACE, directory=cache_dir), _feature_key(backbone, dataset, transform_id)
        cached = store.get(key, check=_valid_features(n))
        if cached is not None:
            return cached["features"], cached["labels"]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backbone = backbone.to(device).eval()
    # a private generator: iterating a DataLoader draws a base seed, which must not shift the caller's RNG
    loader = DataLoader(
        _PreprocessedView(dataset, transform or backbone.preprocess),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    iterator = loader
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(loader, desc=f"encoding {_dataset_fingerprint(dataset)}", leave=False)
    feats, labels = [], []
    for images, targets in iterator:
        out = backbone.encode_image(images.to(device)).float()  # (B, D)
        if not torch.isfinite(out).all():
            raise ConfigError(
                f"image features must be finite, got non-finite image features from backbone {backbone.fingerprint} "
                "(a NaN/inf image, or broken weights)",
                argument="dataset",
            )
        feats.append(F.normalize(out, dim=-1).cpu())
        labels.append(torch.as_tensor(targets, dtype=torch.long))
    features, labels_t = torch.cat(feats), torch.cat(labels)  # (N, D), (N,)
    if store is not None:
        store.put(key, {"features": features, "labels": labels_t})
    return features, labels_t
