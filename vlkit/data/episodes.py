"""Episodic few-shot segmentation data: PASCAL-5i, COCO-20i and an offline Fashion-MNIST scene benchmark.

An *episode* (task) is 1-way K-shot: K support images with binary masks of one class and one query
image of the same class. The task list is fixed by ``(seed, fold)`` and drawn once for the largest shot
count (``max_shots``, 10): episode e has the same class, the same query and the first K of the same
supports for every K, so every method and every shot setting is scored on identical episodes.

Label maps everywhere: 0 background, ``c + 1`` for class c (0-based class ids), 255 void. An episode's
binary masks: 1 where the label is its class, 255 where void or padding, 0 elsewhere (the preprocessing
lives in :mod:`vlkit.data.segmentation_preprocessing`).

Pools (anything with ``__len__``, ``image(i)`` -> uint8 (H, W, 3), ``label(i)`` -> uint8 (H, W),
``num_classes``, ``classnames``, ``fingerprint`` and ``class_to_indices(min_pixels)``):

- :class:`vlkit.data.segmentation_lists.SegmentationListPool`: PASCAL-5i / COCO-20i from the standard
  list files (PFENet's ``lists/pascal/val.txt``: lines ``JPEGImages/x.jpg SegmentationClassAug/x.png``
  relative to ``root``).
- :class:`vlkit.data.scenes.FashionScenePool`: the offline benchmark, rendered deterministically from
  Fashion-MNIST (see :func:`vlkit.data.scenes.render_fashion_scenes` for exactly how).

This module holds what is common to them: the folds, the fixed task lists, the episode datasets and the
:class:`EpisodicDataModule`.

Folds: PASCAL-5i fold i holds novel classes 5i..5i+4; COCO-20i uses PFENet's interleaved split
(fold i = classes 4k + i); Fashion scenes use 5 folds of 2 novel classes (fold i = classes 2i, 2i+1; the
other 8 are its base classes).

Batch keys of the episode loaders (B episodes, K shots, S input size, H0 W0 the largest original size):

=========================  ==================  ====================================================
``support_images``         (B, K, 3, S, S)     float, normalised with the connected mean/std
``support_masks``          (B, K, S, S)        long {0, 1, 255} (255 = void or padding)
``query_image``            (B, 1, 3, S, S)     float
``query_valid``            (B, 1, S, S)        bool, the image area (not padding): from geometry only
``query_mask``             (B, 1, S, S)        long, resized query label (the authors' scoring label)
``query_mask_original``    (B, H0, W0)         long, original-resolution label, padded with 255
``query_size``             (B, 2)              original (H, W)
``query_resized_size``     (B, 2)              (h, w) of the image inside the padded input
``class_id`` ``fold``      (B,)                long
``episode``                (B,)                long, index in the fold's task list
``query_index``            (B,)                long, pool index (a key for feature caches)
``support_index``          (B, K)              long
=========================  ==================  ====================================================

Base-training loaders (``base_training=True``) yield ``image`` (B, 3, S, S) and ``label`` (B, S, S) with
the fold's base classes remapped to 1..n_base, background 0 and novel classes / void / padding 255
(the authors ignore novel pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vlkit.data.scenes import FashionScenePool
from vlkit.data.segmentation_lists import SegmentationListPool
from vlkit.data.sharding import evaluation_sampler
from vlkit.data.segmentation_preprocessing import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_rgb_uint8,
    binary_mask,
    preprocess_image,
    preprocess_label,
    resized_shape,
)
from vlkit.errors import ConfigError, check_choice, check_file, check_int, check_int_sequence, check_number

__all__ = [
    "Episode",
    "fold_classes",
    "build_episodes",
    "make_episode",
    "EpisodeDataset",
    "BaseSegmentationDataset",
    "collate_episodes",
    "EpisodicDataModule",
]

NUM_FOLDS = {"fashion_scenes": 5, "pascal": 4, "coco": 4}  # the benchmarks' fold counts
NUM_CLASSES = {"fashion_scenes": 10, "pascal": 20, "coco": 80}


# ----------------------------------------------------------------------------------------------------------
# Folds and task lists


def fold_classes(dataset: str, fold: int) -> list[int]:
    """0-based novel classes of ``fold`` for ``dataset`` in {"fashion_scenes", "pascal", "coco"}."""
    check_choice("dataset", dataset, sorted(NUM_FOLDS))
    check_int("fold", fold)
    if not 0 <= fold < NUM_FOLDS[dataset]:
        raise ConfigError(f"fold must be in 0..{NUM_FOLDS[dataset] - 1} for {dataset}, got {fold!r}", argument="fold")
    if dataset == "fashion_scenes":
        return [2 * fold, 2 * fold + 1]
    if dataset == "pascal":
        return list(range(5 * fold, 5 * fold + 5))
    return [4 * k + fold for k in range(20)]  # PFENet's use_split_coco


@dataclass(frozen=True)
class Episode:
    """One 1-way task: its class, fold, query and ``max_shots`` supports (a K-shot run uses the first K)."""

    class_id: int
    fold: int
    query: int
    supports: tuple[int, ...]


def build_episodes(
    class_to_indices: dict[int, list[int]],
    classes: list[int],
    num_episodes: int,
    max_shots: int = 10,
    seed: int = 0,
    fold: int = 0,
) -> list[Episode]:
    """A fixed task list: for each episode a uniform class, then a query and ``max_shots`` distinct supports
    drawn without replacement from the images holding that class. Depends only on the arguments.
    ``num_episodes``: an int >= 1; ``max_shots``: an int >= 1; ``classes``: non-empty."""
    check_int("num_episodes", num_episodes, low=1)
    check_int("max_shots", max_shots, low=1)
    if not classes:
        raise ConfigError(f"classes must be a non-empty list of class ids, got {classes!r}", argument="classes")
    usable = [c for c in classes if len(class_to_indices.get(c, [])) >= max_shots + 1]
    if not usable:
        counts = {c: len(class_to_indices.get(c, [])) for c in classes}
        raise ConfigError(
            f"max_shots={max_shots} needs max_shots + 1 images per class, got none: no class has the {max_shots + 1} "
            f"images an episode needs; images per class: {counts}",
            argument="max_shots",
        )
    rng = np.random.default_rng([seed, fold, 4])
    episodes = []
    for _ in range(num_episodes):
        c = usable[int(rng.integers(len(usable)))]
        pool = class_to_indices[c]
        picks = rng.choice(len(pool), size=max_shots + 1, replace=False)
        episodes.append(Episode(c, fold, int(pool[picks[0]]), tuple(int(pool[p]) for p in picks[1:])))
    return episodes


# ----------------------------------------------------------------------------------------------------------
# Episodes from user images


def make_episode(
    support_images: list,
    support_masks: list,
    query_image,
    image_size: int = 128,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> dict[str, torch.Tensor]:
    """One episode batch (B = 1) from user images, with the same keys as the loaders (no query labels).

    Masks: (H, W) arrays, nonzero = foreground (255 kept as ignore); each must match its image's size and
    hold some foreground. Grayscale and RGBA images are converted to RGB. ``image_size``: an int >= 1.
    """
    check_int("image_size", image_size, low=1)
    if not isinstance(support_images, (list, tuple)) or not isinstance(support_masks, (list, tuple)):
        raise TypeError("support_images and support_masks must be lists (one entry per shot)")
    if len(support_images) != len(support_masks) or not support_images:
        raise ConfigError(
            f"need as many support masks as support images (at least one): got {len(support_images)} images "
            f"and {len(support_masks)} masks",
            argument="support_masks",
        )
    s_imgs, s_masks = [], []
    for k, (img, mask) in enumerate(zip(support_images, support_masks)):
        rgb = as_rgb_uint8(img, f"support_images[{k}]")
        mask = np.asarray(mask)
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != rgb.shape[:2]:
            raise ConfigError(f"support_masks[{k}] has size {mask.shape}, its image {rgb.shape[:2]}; they must match",
                              argument="support_masks")
        binary = np.where(mask == IGNORE_INDEX, IGNORE_INDEX, (mask > 0).astype(np.uint8)).astype(np.uint8)
        if not (binary == 1).any():
            raise ConfigError(
                f"support_masks[{k}] must mark the object, got no foreground pixel; paint the object in the support image",
                argument="support_masks",
            )
        x, _ = preprocess_image(rgb, image_size, mean, std)
        s_imgs.append(x)
        s_masks.append(preprocess_label(binary, image_size))
    q = as_rgb_uint8(query_image, "query_image")
    qx, qvalid = preprocess_image(q, image_size, mean, std)
    rh, rw = resized_shape(q.shape[0], q.shape[1], image_size)
    return {
        "support_images": torch.stack(s_imgs)[None],  # (1, K, 3, S, S)
        "support_masks": torch.stack(s_masks)[None],  # (1, K, S, S)
        "query_image": qx[None, None],  # (1, 1, 3, S, S)
        "query_valid": qvalid[None, None],  # (1, 1, S, S)
        "query_size": torch.tensor([[q.shape[0], q.shape[1]]]),
        "query_resized_size": torch.tensor([[rh, rw]]),
    }


# ----------------------------------------------------------------------------------------------------------
# Datasets and the DataModule


class EpisodeDataset(Dataset):
    """K-shot episodes over a pool; items are dicts with the keys listed in the module docstring (no B).

    Args:
        pool: an image pool (:class:`vlkit.data.scenes.FashionScenePool`,
            :class:`vlkit.data.segmentation_lists.SegmentationListPool` or anything with their interface).
        episodes: the fixed task list (:func:`build_episodes`).
        shots: K, the first K supports of each episode are used; an int in 1..len(supports).
        image_size: S, the input side, an int >= 1.
        mean: normalisation mean (R, G, B).
        std: normalisation std (R, G, B).
    """

    def __init__(self, pool, episodes: list[Episode], shots: int, image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        check_int("shots", shots, low=1)
        check_int("image_size", image_size, low=1)
        if episodes and shots > len(episodes[0].supports):
            raise ConfigError(f"shots={shots} exceeds the {len(episodes[0].supports)} supports the task list holds",
                              argument="shots")
        self.pool, self.episodes, self.shots = pool, episodes, shots
        self.image_size, self.mean, self.std = image_size, mean, std

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ep = self.episodes[index]
        size = self.image_size
        s_imgs, s_masks = [], []
        for i in ep.supports[: self.shots]:
            x, _ = preprocess_image(self.pool.image(i), size, self.mean, self.std)
            s_imgs.append(x)
            s_masks.append(preprocess_label(binary_mask(self.pool.label(i), ep.class_id).numpy().astype(np.uint8), size))
        q_img = self.pool.image(ep.query)
        qx, qvalid = preprocess_image(q_img, size, self.mean, self.std)
        q_label = binary_mask(self.pool.label(ep.query), ep.class_id)  # (H0, W0)
        rh, rw = resized_shape(q_img.shape[0], q_img.shape[1], size)
        return {
            "support_images": torch.stack(s_imgs),  # (K, 3, S, S)
            "support_masks": torch.stack(s_masks),  # (K, S, S)
            "query_image": qx[None],  # (1, 3, S, S)
            "query_valid": qvalid[None],  # (1, S, S)
            "query_mask": preprocess_label(q_label.numpy().astype(np.uint8), size)[None],  # (1, S, S)
            "query_mask_original": q_label,  # (H0, W0)
            "query_size": torch.tensor(q_label.shape),
            "query_resized_size": torch.tensor([rh, rw]),
            "class_id": torch.tensor(ep.class_id),
            "fold": torch.tensor(ep.fold),
            "episode": torch.tensor(index),
            "query_index": torch.tensor(ep.query),
            "support_index": torch.tensor(ep.supports[: self.shots]),
        }


def collate_episodes(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack episode dicts; ``query_mask_original`` is padded with 255 to the batch's largest size."""
    out = {}
    for key in items[0]:
        if key == "query_mask_original":
            h = max(it[key].shape[0] for it in items)
            w = max(it[key].shape[1] for it in items)
            padded = torch.full((len(items), h, w), IGNORE_INDEX, dtype=torch.long)  # (B, H0, W0)
            for b, it in enumerate(items):
                padded[b, : it[key].shape[0], : it[key].shape[1]] = it[key]
            out[key] = padded
        else:
            out[key] = torch.stack([it[key] for it in items])
    return out


class BaseSegmentationDataset(Dataset):
    """Dense base-class labels for base training: base classes -> 1..n_base, background 0, rest 255.

    Args:
        pool: an image pool (see :class:`EpisodeDataset`).
        base_classes: 0-based base class ids, in the order of their new labels 1..n_base.
        image_size: S, the input side, an int >= 1.
        mean: normalisation mean (R, G, B).
        std: normalisation std (R, G, B).
        flip: flip half the images horizontally (deterministically, by index).
    """

    def __init__(self, pool, base_classes: list[int], image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, flip: bool = False):
        check_int_sequence("base_classes", list(base_classes), low=0, high=253)  # c + 1 must stay below 255 (void)
        check_int("image_size", image_size, low=1)
        self.pool, self.image_size, self.mean, self.std, self.flip = pool, image_size, mean, std, flip
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[0] = 0
        for new, c in enumerate(base_classes, start=1):
            lut[c + 1] = new
        self.lut = lut

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, _ = preprocess_image(self.pool.image(index), self.image_size, self.mean, self.std)
        y = preprocess_label(self.lut[self.pool.label(index)], self.image_size)
        if self.flip and (index * 2654435761) % 2:  # deterministic flip of half the images
            x, y = x.flip(-1), y.flip(-1)
        return {"image": x, "label": y}


class EpisodicDataModule(L.LightningDataModule):
    """Fixed, seeded 1-way K-shot episodes (test: novel classes; val: the same classes on held-out scenes)
    and, with ``base_training=True``, dense base-class batches for base training.

    Args:
        dataset: "fashion_scenes" (offline), "pascal" or "coco".
        folds: distinct folds evaluated together (metrics per fold and their mean); base training needs exactly one.
        shots: K, an int in 1..max_shots.
        episodes_per_fold: tasks per fold, an int >= 1 (the authors use 1000 x 5 runs on PASCAL).
        max_shots: the task list holds this many supports, an int >= 1; K-shot uses the first K (same queries
            for all K).
        seed: task-list seed, an int.
        image_size: S, the input side, an int >= 8: images are resized (long side) to S and padded to S x S.
        canvas_size: side of the rendered Fashion scenes, an int >= 32 (their original resolution, where they
            are scored).
        batch_size: episodes per batch, optimised together; an int >= 1.
        num_workers: DataLoader workers, an int >= 0.
        root: Fashion-MNIST IDX directory (None: Debian's) or the PASCAL/COCO image root.
        val_list: PFENet list file of the val split for pascal/coco (needed only by the val loader).
        test_list: PFENet list file of the test split for pascal/coco (PFENet's ``lists/pascal/val.txt``).
        train_list: PFENet list file of the base-training split for pascal/coco (needed only by base training).
        test_scenes: rendered test pool size for fashion_scenes, an int >= 1.
        val_scenes: rendered val pool size for fashion_scenes, an int >= 1.
        train_scenes: rendered base-training pool size for fashion_scenes, an int >= 1.
        min_foreground_pixels: an image joins a class's pool only if the class covers this many pixels, an
            int >= 1 (None: 128 for fashion scenes, PFENet's 2 x 32 x 32 for pascal/coco).
        base_training: train/val loaders yield dense base-class batches instead of episodes.
        base_batch_size: images per base-training batch, an int >= 1.
    """

    def __init__(
        self,
        dataset: str = "fashion_scenes",
        folds: list[int] | None = None,
        shots: int = 1,
        episodes_per_fold: int = 200,
        max_shots: int = 10,
        seed: int = 0,
        image_size: int = 128,
        canvas_size: int = 128,
        batch_size: int = 50,
        num_workers: int = 0,
        root: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        train_list: str | None = None,
        test_scenes: int = 1000,
        val_scenes: int = 500,
        train_scenes: int = 4000,
        min_foreground_pixels: int | None = None,
        base_training: bool = False,
        base_batch_size: int = 32,
    ) -> None:
        super().__init__()
        check_choice("dataset", dataset, sorted(NUM_FOLDS))
        if folds is not None:
            check_int_sequence("folds", folds, low=0, high=NUM_FOLDS[dataset] - 1)
            if len(set(folds)) != len(folds):
                raise ConfigError(f"folds must be distinct, got {list(folds)}", argument="folds")
        folds = list(range(NUM_FOLDS[dataset])) if folds is None else list(folds)
        for f in folds:
            fold_classes(dataset, f)  # validates
        check_int("max_shots", max_shots, low=1)
        check_int("shots", shots)
        if not 1 <= shots <= max_shots:
            raise ConfigError(f"shots must be in 1..max_shots={max_shots}, got {shots}", argument="shots")
        check_int("episodes_per_fold", episodes_per_fold, low=1)
        check_int("seed", seed)
        check_int("image_size", image_size, low=8)
        check_int("canvas_size", canvas_size, low=32)
        check_int("batch_size", batch_size, low=1)
        check_int("num_workers", num_workers, low=0)
        check_int("base_batch_size", base_batch_size, low=1)
        for name, value in (("test_scenes", test_scenes), ("val_scenes", val_scenes), ("train_scenes", train_scenes)):
            check_int(name, value, low=1)
        check_int("min_foreground_pixels", min_foreground_pixels, low=1, allow_none=True)
        if base_training and len(folds) != 1:
            raise ConfigError(f"base training is per fold: pass exactly one fold, got folds={folds}", argument="folds")
        if dataset != "fashion_scenes" and root is None:
            raise ConfigError(f"dataset={dataset!r} needs root= the image directory and the list files, got root=None",
                              argument="root")
        if dataset != "fashion_scenes":
            for name, path in (("val_list", val_list), ("test_list", test_list), ("train_list", train_list)):
                if path is not None:
                    check_file(name, path)
        self.save_hyperparameters()
        self.dataset, self.folds, self.shots = dataset, folds, shots
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.image_size = image_size
        self._pools: dict[str, object] = {}

    def connect(self, mean=None, std=None, image_size: int | None = None) -> None:
        """Late-bound preprocessing from the model: normalisation mean/std (3 values each, std > 0) and the
        input side (an int >= 8)."""
        for name, values in (("mean", mean), ("std", std)):
            if values is not None:
                if len(values) != 3:
                    raise ConfigError(f"{name} must be 3 values (R, G, B), got {tuple(values)!r}", argument=name)
                for v in values:
                    check_number(name, float(v), low=0 if name == "std" else None, low_open=True)
        check_int("image_size", image_size, low=8, allow_none=True)
        if mean is not None:
            self.mean = tuple(float(m) for m in mean)
        if std is not None:
            self.std = tuple(float(s) for s in std)
        if image_size is not None:
            self.image_size = int(image_size)

    @property
    def min_pixels(self) -> int:
        """Pixels a class must cover for an image to join its pool (``min_foreground_pixels`` or the default)."""
        if self.hparams.min_foreground_pixels is not None:
            return self.hparams.min_foreground_pixels
        return 128 if self.dataset == "fashion_scenes" else 2 * 32 * 32

    def pool(self, split: str):
        """The image pool of ``split`` in {"train", "val", "test"} (rendered or listed once, then kept)."""
        check_choice("split", split, ("train", "val", "test"))
        if split not in self._pools:
            hp = self.hparams
            if self.dataset == "fashion_scenes":
                n = {"train": hp.train_scenes, "val": hp.val_scenes, "test": hp.test_scenes}[split]
                self._pools[split] = FashionScenePool(split, n, hp.canvas_size, hp.seed, hp.root)
            else:
                list_file = {"train": hp.train_list, "val": hp.val_list, "test": hp.test_list}[split]
                if list_file is None:
                    raise ConfigError(f"{split}_list is needed for dataset={self.dataset!r}, got None",
                                      argument=f"{split}_list")
                self._pools[split] = SegmentationListPool(hp.root, list_file, self.dataset)
        return self._pools[split]

    def episodes(self, split: str = "test") -> list[Episode]:
        """The fixed task list of ``split``, folds concatenated in order."""
        pool = self.pool(split)
        by_class = pool.class_to_indices(self.min_pixels)
        out = []
        for f in self.folds:
            out += build_episodes(
                by_class, fold_classes(self.dataset, f), self.hparams.episodes_per_fold, self.hparams.max_shots,
                self.hparams.seed + (0 if split == "test" else 7919), f,
            )  # fmt: skip
        return out

    def _episode_loader(self, split: str) -> DataLoader:
        data = EpisodeDataset(self.pool(split), self.episodes(split), self.shots, self.image_size, self.mean, self.std)
        return DataLoader(
            data, batch_size=self.hparams.batch_size, shuffle=False, num_workers=self.hparams.num_workers,
            collate_fn=collate_episodes, sampler=evaluation_sampler(data),  # several ranks: each episode once
        )  # fmt: skip

    def _base_loader(self, split: str, shuffle: bool) -> DataLoader:
        data = BaseSegmentationDataset(self.pool(split), self.base_classes(), self.image_size, self.mean, self.std, flip=shuffle)
        sampler = None if shuffle else evaluation_sampler(data)  # evaluation under several ranks: each scene once
        return DataLoader(data, batch_size=self.hparams.base_batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          sampler=sampler)

    @property
    def fingerprint(self) -> str:
        """Identifies the test pool's images (with preprocessing): a key for feature caches."""
        return f"{self.pool('test').fingerprint}|S={self.image_size}|mean={self.mean}|std={self.std}"

    def pool_fingerprint(self, split: str) -> str:
        """Like :attr:`fingerprint`, for the pool of ``split``."""
        return f"{self.pool(split).fingerprint}|S={self.image_size}|mean={self.mean}|std={self.std}"

    def base_classes(self) -> list[int]:
        """The first fold's base classes: every class of the dataset that is not one of its novel classes."""
        novel = set(fold_classes(self.dataset, self.folds[0]))
        return [c for c in range(NUM_CLASSES[self.dataset]) if c not in novel]

    def train_dataloader(self) -> DataLoader:
        """Shuffled dense base-class batches (only with ``base_training=True``)."""
        if not self.hparams.base_training:
            raise ConfigError(
                "train_dataloader needs base_training=True, got False (RePRI itself trains nothing: use `vlkit test`)",
                argument="base_training",
            )
        return self._base_loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Base-class batches of the val pool with ``base_training``, else the val episodes."""
        if self.hparams.base_training:
            return self._base_loader("val", shuffle=False)
        return self._episode_loader("val")

    def test_dataloader(self) -> DataLoader:
        """The test episodes (the benchmark's fixed task list)."""
        return self._episode_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test episodes, for ``predict``."""
        return self._episode_loader("test")
