"""Dense backbone features of episode pool images, encoded once and cached in memory and on disk.

Few-shot segmentation episodes draw their support and query images from a fixed pool, so the same image
comes back in many episodes and every run. :class:`DenseFeatureCache` keeps each pool image's backbone
feature map (float16, on the CPU) by its pool index, and stores the whole map of one (backbone, pool,
image size) on disk as one :class:`vlkit.cache.KeyedCache` entry under ``<cache root>/repri_features/``:
written atomically, and a missing, corrupt or foreign file is a miss (the features are encoded again and
the file rewritten).

The cache does not know the backbone (the data layer imports no model): the caller passes its fingerprint
for the key and the module (or any callable) that encodes images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from vlkit.cache import KeyedCache

__all__ = ["DenseFeatureCache", "DENSE_FEATURE_NAMESPACE"]

# sub-folder of the cache root; named after RePRI, its first user, as in the kit's first version
DENSE_FEATURE_NAMESPACE = "repri_features"


class DenseFeatureCache:
    """Feature maps of pool images by pool index: encode the missing ones, serve the rest from memory/disk.

    Args:
        backbone_fingerprint: identity of the backbone's weights and preprocessing (``backbone.fingerprint``).
        pool_fingerprint: identity of the image pool and its input pipeline (e.g.
            ``EpisodicDataModule.pool_fingerprint(split)``).
        image_size: side of the (square) input images, part of the key (None: the pool fingerprint names it).
        directory: cache root (None: the kit's cache root, ``vlkit.cache.cache_root()``).

    Use: ``cache.load()`` once, ``cache.encode(images, keys, backbone, batch_size)`` per batch, then
    ``cache.save()`` (writes only when something new was encoded).
    """

    def __init__(
        self,
        backbone_fingerprint: str,
        pool_fingerprint: str,
        image_size: int | None = None,
        directory: str | os.PathLike | None = None,
    ) -> None:
        self.key = {"backbone": str(backbone_fingerprint), "pool": str(pool_fingerprint), "image_size": image_size}
        self.store = KeyedCache(DENSE_FEATURE_NAMESPACE, directory=directory)
        self.features: dict[int, Tensor] = {}  # pool index -> (D, h, w) float16 on the CPU
        self.dirty = False

    @property
    def path(self) -> Path:
        """The cache file of this (backbone, pool, image size)."""
        return self.store.path(self.key)

    def load(self) -> int:
        """Add the features stored on disk to the ones in memory (memory wins); returns how many were read."""
        payload = self.store.get(self.key, check=_valid_payload)
        if payload is None:
            return 0
        for k, f in zip(payload["keys"].tolist(), payload["features"]):
            self.features.setdefault(int(k), f)
        return len(payload["keys"])

    def encode(self, images: Tensor, keys: Sequence[int], encode: Callable[[Tensor], Tensor], batch_size: int) -> Tensor:
        """Feature maps of ``images`` (N, 3, S, S) whose pool indices are ``keys`` (N ints).

        Images not seen before go through ``encode`` ((b, 3, S, S) -> (b, D, h, w)) in batches of
        ``batch_size``, each distinct index once. Returns (N, D, h, w) float32 on ``images``' device
        (cached maps are float16: values round to about 3 significant digits).
        """
        keys = [int(k) for k in keys]
        missing = sorted({k for k in keys if k not in self.features})
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}  # index -> its first row in the batch
            rows = torch.tensor([first[k] for k in missing], device=images.device)  # (M,)
            for i in range(0, len(rows), batch_size):
                feats = encode(images[rows[i : i + batch_size]])  # (b, D, h, w)
                for k, f in zip(missing[i : i + batch_size], feats):
                    self.features[k] = f.to("cpu", torch.float16)
            self.dirty = True
        return torch.stack([self.features[k] for k in keys]).to(images.device, torch.float32)  # (N, D, h, w)

    def save(self) -> Path | None:
        """Write every feature map in memory to disk atomically if any is new; returns the file (or None)."""
        if not self.dirty or not self.features:
            return None
        keys = sorted(self.features)
        payload = {
            "keys": torch.tensor(keys, dtype=torch.long),  # (M,)
            "features": torch.stack([self.features[k] for k in keys]),  # (M, D, h, w) float16
        }
        path = self.store.put(self.key, payload)
        self.dirty = False
        return path


def _valid_payload(payload: dict) -> bool:
    keys, feats = payload["keys"], payload["features"]
    return keys.dim() == 1 and feats.dim() == 4 and feats.shape[0] == keys.shape[0]
