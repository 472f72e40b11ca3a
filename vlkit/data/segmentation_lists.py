"""PASCAL-5i and COCO-20i image pools read from PFENet-style list files.

A list file holds one ``image_path label_path`` pair per line, relative to ``root`` (PFENet's
``lists/pascal/val.txt``: ``JPEGImages/x.jpg SegmentationClassAug/x.png``). Label PNGs: 0 background,
``c + 1`` for class c, 255 void. :class:`SegmentationListPool` serves them as an image pool for
:mod:`vlkit.data.episodes`; which classes each image holds is scanned once and cached as JSON under
``cache_root("episodes")`` (:mod:`vlkit.cache`, written atomically).

Folds (see :func:`vlkit.data.episodes.fold_classes`): PASCAL-5i fold i holds novel classes 5i..5i+4;
COCO-20i uses PFENet's interleaved split (fold i = classes 4k + i).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from vlkit.cache import atomic_write_json, cache_root
from vlkit.errors import ConfigError, check_choice

__all__ = ["PASCAL_CLASSNAMES", "SegmentationListPool"]

PASCAL_CLASSNAMES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


class SegmentationListPool:
    """Images and label PNGs named by a PFENet-style list file (``image_path label_path`` per line).

    PASCAL-5i: ``root`` = the VOC2012 directory with ``SegmentationClassAug``, list ``lists/pascal/val.txt``.
    COCO-20i: label PNGs with values 1..80 (PFENet's / RePRI's ``create_masks.py``), list ``lists/coco/val.txt``.
    Which classes each image holds is scanned once and cached (JSON, written atomically).

    Args:
        root: the directory the list file's paths are relative to.
        list_file: the list file, one ``image_path label_path`` pair per line (other lines are skipped).
        dataset: ``"pascal"`` (20 classes) or ``"coco"`` (80 classes).
    """

    def __init__(self, root: str, list_file: str, dataset: str = "pascal") -> None:
        check_choice("dataset", dataset, ("pascal", "coco"))
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise ConfigError(f"root must be the image directory, got {root!r}", argument="root")
        self.root = Path(root)
        list_path = Path(list_file)
        if not list_path.exists():
            raise FileNotFoundError(f"list file {list_file} not found (PFENet's lists/{dataset}/val.txt)")
        self.pairs = []
        for line in list_path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            self.pairs.append((self.root / parts[0], self.root / parts[1]))
        if not self.pairs:
            raise ConfigError(f"list file {list_file} must hold 'image label' lines, got none", argument="list_file")
        self.dataset = dataset
        self.num_classes = 20 if dataset == "pascal" else 80
        self.classnames = PASCAL_CLASSNAMES if dataset == "pascal" else [f"coco_{i}" for i in range(80)]
        digest = hashlib.sha1(f"{self.root.resolve()}|{list_path.resolve()}".encode()).hexdigest()[:12]
        self.fingerprint = f"{dataset}/{list_path.name}/{digest}"

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` read from disk: (H, W, 3) uint8 RGB."""
        with Image.open(self.pairs[index][0]) as img:
            return np.asarray(img.convert("RGB"))

    def label(self, index: int) -> np.ndarray:
        """Label PNG ``index`` read from disk: (H, W) uint8, 0 background, c + 1 for class c, 255 void."""
        with Image.open(self.pairs[index][1]) as img:
            return np.asarray(img, dtype=np.uint8)

    def class_to_indices(self, min_pixels: int = 2 * 32 * 32) -> dict[int, list[int]]:
        """Images where class c has at least ``min_pixels`` pixels (PFENet's 2 x 32 x 32 filter)."""
        cache = cache_root("episodes") / (self.fingerprint.replace("/", "_") + f"_min{min_pixels}.json")
        if cache.exists():
            return {int(k): v for k, v in json.loads(cache.read_text()).items()}
        result: dict[int, list[int]] = {c: [] for c in range(self.num_classes)}
        for i in range(len(self)):
            values, counts = np.unique(self.label(i), return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist()):
                if 1 <= v <= self.num_classes and n >= min_pixels:
                    result[v - 1].append(i)
        atomic_write_json(cache, result, indent=None)
        return result
