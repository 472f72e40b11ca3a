"""Image and label preprocessing for few-shot segmentation: resize the long side, pad, binarise.

Label maps: 0 background, ``c + 1`` for class c (0-based class ids), :data:`IGNORE_INDEX` (255) void. An
episode's binary masks: 1 where the label is its class, 255 where void or padding, 0 elsewhere.
Images are resized so that the long side is S, normalised, and padded bottom/right to S x S; labels are
resized with nearest neighbours and padded with 255.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vlkit.errors import ConfigError, check_int

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "resized_shape",
    "preprocess_image",
    "preprocess_label",
    "binary_mask",
    "as_rgb_uint8",
]

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (h, w) of an (height, width) image whose long side is resized to ``size`` (each side >= 1)."""
    scale = size / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def preprocess_image(
    image: np.ndarray, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize the long side to ``size`` (bilinear), normalise, pad bottom/right with zeros to (size, size).

    image: (H, W, 3) uint8 -> ``(image (3, size, size) float, valid (size, size) bool)``; ``valid`` marks
    the image area, known from geometry alone. ``size``: an int >= 1.
    """
    check_int("size", size, low=1)
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ConfigError(f"image must be (H, W, 3) RGB uint8, got shape {image.shape}", argument="image")
    h, w = resized_shape(image.shape[0], image.shape[1], size)
    if (h, w) != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0  # (3, h, w)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = torch.zeros(3, size, size)
    out[:, :h, :w] = x
    valid = torch.zeros(size, size, dtype=torch.bool)
    valid[:h, :w] = True
    return out, valid


def preprocess_label(label: np.ndarray, size: int) -> torch.Tensor:
    """Resize a label map's long side to ``size`` (nearest) and pad with 255: (H, W) -> (size, size) long."""
    check_int("size", size, low=1)
    if label.ndim != 2 or 0 in label.shape:
        raise ConfigError(f"label must be a non-empty (H, W) map, got shape {label.shape}", argument="label")
    h, w = resized_shape(label.shape[0], label.shape[1], size)
    if (h, w) != label.shape:
        label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    out = torch.full((size, size), IGNORE_INDEX, dtype=torch.long)
    out[:h, :w] = torch.from_numpy(label.astype(np.int64))
    return out


def binary_mask(label: np.ndarray | torch.Tensor, class_id: int) -> torch.Tensor:
    """Episode mask from a label map: 1 where ``label == class_id + 1``, 255 where void, else 0."""
    label = torch.as_tensor(np.asarray(label)).long()
    out = (label == class_id + 1).long()
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


def as_rgb_uint8(image, name: str) -> np.ndarray:
    """Accept PIL images or arrays that are grayscale (H, W), (H, W, 1), RGB or RGBA; return (H, W, 3) uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.size == 0 or array.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must be a non-empty numeric image, got dtype {array.dtype} and shape {array.shape}",
                          argument=name)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # a NaN would become an arbitrary pixel value after the uint8 cast, silently
        raise ConfigError(f"{name} must be finite, got {int((~np.isfinite(array)).sum())} NaN/inf value(s) in an image "
                          f"of shape {array.shape}", argument=name)
    if array.dtype != np.uint8:
        if array.dtype.kind == "f" and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        if array.shape[2] == 1:
            return np.repeat(array, 3, axis=2)
        return np.ascontiguousarray(array[..., :3])  # RGBA: drop alpha
    raise ConfigError(f"{name} must be an image (H, W), (H, W, 1|3|4) or PIL, got shape {array.shape}", argument=name)
