"""The offline few-shot segmentation benchmark: Fashion-MNIST garments composed into labelled scenes.

:func:`render_fashion_scenes` draws the scenes deterministically (scene s depends only on the seed and s);
:class:`FashionScenePool` renders one split of them and serves it as an image pool for
:mod:`vlkit.data.episodes` (``__len__``, ``image(i)`` -> uint8 (H, W, 3), ``label(i)`` -> uint8 (H, W),
``num_classes``, ``classnames``, ``fingerprint``, ``class_to_indices(min_pixels)``).

Label maps: 0 background, ``c + 1`` for Fashion-MNIST class c. Folds (see
:func:`vlkit.data.episodes.fold_classes`): 5 folds of 2 novel classes (fold i = classes 2i, 2i+1).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES, load_fashion_mnist_arrays
from vlkit.errors import ConfigError, check_choice, check_int, check_number

__all__ = ["render_fashion_scenes", "FashionScenePool"]


def _item_layers(gray: np.ndarray, size: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 28x28 uint8 garment resized to ``size`` (bilinear): its intensity g in [0, 1] and alpha."""
    item = Image.fromarray(gray, mode="L").resize((size, size), Image.BILINEAR)
    g = np.asarray(item, dtype=np.float32) / 255.0
    if flip:
        g = g[:, ::-1]
    alpha = np.clip((g - 0.1) / 0.3, 0.0, 1.0)  # soft edge; alpha >= 0.5 exactly where g >= 0.25
    return g, alpha


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = int(rng.integers(3))
    if kind == 0:  # solid colour
        bg = np.broadcast_to(rng.uniform(0, 1, 3).astype(np.float32), (size, size, 3)).copy()
    elif kind == 1:  # linear gradient between two colours at a random angle
        c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        bg = (c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]).astype(np.float32)
    else:  # smooth colour texture: a coarse random grid upsampled bilinearly
        cells = int(rng.integers(2, 7))
        grid = (rng.uniform(0, 1, (cells, cells, 3)) * 255).astype(np.uint8)
        bg = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return bg


def render_fashion_scenes(
    images: np.ndarray,
    labels: np.ndarray,
    num_scenes: int,
    canvas_size: int = 128,
    seed: int = 0,
    items_per_scene: tuple[int, int] = (2, 4),
    item_scale: tuple[float, float] = (0.25, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Compose Fashion-MNIST garments into scenes with segmentation labels, deterministically.

    Scene s uses its own generator ``numpy.random.default_rng([seed, s])`` (so scene s never depends on
    how many scenes are rendered) and:

    1. a background, one of three kinds with equal probability: a solid random colour, a linear gradient
       between two random colours at a random angle, or a smooth texture (a 2x2 to 6x6 grid of random
       colours upsampled bilinearly); then Gaussian pixel noise (sigma 0.02);
    2. ``n`` garments, n uniform in ``items_per_scene`` (2 to 4); each: a uniform class, a uniform image of
       that class, a side of ``uniform(item_scale) * canvas_size`` pixels (bilinear from 28x28), a
       horizontal flip with probability 1/2, a uniform position fully inside the canvas, and a random
       colour tint (redrawn up to 10 times until it differs from the mean background under it by at
       least 0.3 in mean absolute RGB). The garment is shaded ``tint * (0.35 + 0.65 g)`` (g its intensity
       in [0, 1]) and alpha-blended with ``alpha = clip((g - 0.1) / 0.3, 0, 1)``;
    3. labels: pixels with ``g >= 0.25`` (alpha >= 0.5) take the garment's class + 1; later garments
       occlude earlier ones in both image and label.

    Args:
        images: (N, 28, 28) uint8 Fashion-MNIST images (0 = background, as in the IDX files).
        labels: (N,) int64 classes 0..9, each class present.
        num_scenes: an int >= 0. canvas_size: an int >= 8. items_per_scene: (low, high), 1 <= low <= high.
        item_scale: (low, high) fractions of the canvas, 0 < low <= high <= 1.

    Returns:
        ``(scenes, label_maps)``: (num_scenes, S, S, 3) uint8 and (num_scenes, S, S) uint8.
    """
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ConfigError(f"images must be (N, 28, 28) with N = len(labels), got {images.shape} and {labels.shape}",
                          argument="images")
    check_int("num_scenes", num_scenes, low=0)
    check_int("canvas_size", canvas_size, low=8)
    lo, hi = items_per_scene
    if not 1 <= lo <= hi:
        raise ConfigError(f"items_per_scene must be (low, high) with 1 <= low <= high, got {items_per_scene}",
                          argument="items_per_scene")
    check_number("item_scale", item_scale[0], low=0, high=1, low_open=True)
    check_number("item_scale", item_scale[1], low=item_scale[0], high=1)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    empty = [c for c in range(10) if not len(by_class[c])]
    if num_scenes and empty:
        raise ConfigError(f"labels must hold every class 0..9, got none of classes {empty}", argument="labels")
    size = canvas_size
    scenes = np.empty((num_scenes, size, size, 3), dtype=np.uint8)
    label_maps = np.zeros((num_scenes, size, size), dtype=np.uint8)
    for s in range(num_scenes):
        rng = np.random.default_rng([seed, s])
        canvas = _background(rng, size)
        label_map = label_maps[s]
        for _ in range(int(rng.integers(lo, hi + 1))):
            c = int(rng.integers(10))
            index = int(by_class[c][int(rng.integers(len(by_class[c])))])
            side = max(8, int(round(rng.uniform(*item_scale) * size)))
            side = min(side, size)
            g, alpha = _item_layers(images[index], side, bool(rng.random() < 0.5))
            y0, x0 = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            region = canvas[y0 : y0 + side, x0 : x0 + side]  # (side, side, 3) view
            under = region.reshape(-1, 3).mean(0)
            tint = rng.uniform(0, 1, 3)
            for _ in range(10):
                if np.abs(tint - under).mean() >= 0.3:
                    break
                tint = rng.uniform(0, 1, 3)
            colour = tint[None, None] * (0.35 + 0.65 * g[..., None])  # (side, side, 3)
            region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
            label_map[y0 : y0 + side, x0 : x0 + side][g >= 0.25] = c + 1
        canvas += rng.normal(0, 0.02, canvas.shape).astype(np.float32)
        scenes[s] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    return scenes, label_maps


class FashionScenePool:
    """A rendered pool of Fashion-MNIST scenes (see :func:`render_fashion_scenes`).

    Args:
        split: ``"test"`` renders from the Fashion-MNIST test images (the benchmark's episodes); ``"val"``
            from train images 50000..59999 (episodes for design choices and base-training validation);
            ``"train"`` from train images 0..49999 (base training). Each split has its own seed offset.
        num_scenes: scenes to render, an int >= 1.
        canvas_size: the scenes' side in pixels, an int >= 32.
        seed: an int; scene s of a split depends only on (seed, split, s).
        root: the Fashion-MNIST IDX directory (None: Debian's ``dataset-fashion-mnist`` package).
    """

    num_classes = 10
    classnames = FASHION_MNIST_CLASSNAMES
    _SPLITS = {"train": ("train", slice(0, 50000), 1), "val": ("train", slice(50000, 60000), 2), "test": ("test", slice(None), 0)}

    def __init__(
        self,
        split: str = "test",
        num_scenes: int = 1000,
        canvas_size: int = 128,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        check_choice("split", split, sorted(self._SPLITS))
        check_int("num_scenes", num_scenes, low=1)
        check_int("canvas_size", canvas_size, low=32)
        check_int("seed", seed)
        source, rows, offset = self._SPLITS[split]
        images, labels = load_fashion_mnist_arrays(source, root)
        self.scenes, self.labels = render_fashion_scenes(
            images[rows], labels[rows], num_scenes, canvas_size, seed=1000 * seed + offset
        )
        self.split = split
        self.fingerprint = f"fashion_scenes/{split}/n={num_scenes}/size={canvas_size}/seed={seed}/v1"

    def __len__(self) -> int:
        return len(self.scenes)

    def image(self, index: int) -> np.ndarray:
        """Scene ``index``: (S, S, 3) uint8."""
        return self.scenes[index]

    def label(self, index: int) -> np.ndarray:
        """Label map of scene ``index``: (S, S) uint8, 0 background, c + 1 for class c."""
        return self.labels[index]

    def class_to_indices(self, min_pixels: int = 128) -> dict[int, list[int]]:
        """Scenes in which class c covers at least ``min_pixels`` visible pixels."""
        counts = np.stack([(self.labels == c + 1).sum(axis=(1, 2)) for c in range(self.num_classes)], 1)  # (N, C)
        return {c: np.flatnonzero(counts[:, c] >= min_pixels).tolist() for c in range(self.num_classes)}
