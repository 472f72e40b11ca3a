"""How the demos show small images: enlarged pixel by pixel to a readable size (one place for TFUP and RePRI)."""

from __future__ import annotations

import numpy as np

__all__ = ["enlarge"]


def enlarge(image, size: int):
    """``image`` (a PIL image or an (H, W[, C]) array) repeated pixel by pixel by the smallest whole factor that
    brings its longer side to at least ``size``; an image already that large is returned as it is. A 28 px
    Fashion-MNIST image or a 128 px scene stays sharp instead of being blurred or shown tiny. Returns the
    same kind it got."""
    if not isinstance(image, np.ndarray) and image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")  # palette and other modes: shown as RGB
    pixels = np.asarray(image)
    longest = max(pixels.shape[:2])
    if longest >= size:
        return image
    factor = -(-size // longest)  # ceil(size / longest side)
    bigger = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)  # (H*f, W*f[, C])
    if isinstance(image, np.ndarray):
        return bigger
    from PIL import Image

    return Image.fromarray(bigger)
