"""Fashion-MNIST read from IDX files: Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``), any directory holding the four IDX files, or torchvision's
download for users with internet."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vlkit.errors import ConfigError, check_choice

__all__ = ["FASHION_MNIST_CLASSNAMES", "DEBIAN_ROOT", "FashionMNIST", "read_idx", "load_fashion_mnist_arrays"]

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSNAMES = [
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array (the format of LeCun's MNIST files)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ConfigError(f"{path} must be an IDX file, got a bad magic number", argument="root")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ConfigError(f"{path} must be an IDX file, got an unknown type code {data[2]:#x}", argument="root")
    dtype = dtypes[data[2]]
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ConfigError(f"{path}: header says {shape} but holds {array.size} values (truncated file?)", argument="root")
    return array.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz", root / "FashionMNIST" / "raw" / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found under {root}. Install Debian's package "
        "(`apt-get install dataset-fashion-mnist`) or pass download=True with internet access."
    )


def load_fashion_mnist_arrays(split: str = "test", root: str | os.PathLike | None = None, download: bool = False):
    """Return ``(images uint8 (N, 28, 28), labels int64 (N,))`` for ``split`` in ``{"train", "test"}``."""
    check_choice("split", split, tuple(_FILES))
    root = Path(root) if root is not None else DEBIAN_ROOT
    if download and not (root / "FashionMNIST").exists() and not any(root.glob("*idx*")):
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
    images = read_idx(_find(root, _FILES[split][0]))
    labels = read_idx(_find(root, _FILES[split][1])).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels", argument="root")
    return images, labels


class FashionMNIST(Dataset):
    """Fashion-MNIST as RGB PIL images.

    ``invert=True`` (the default) draws the garment dark on a white background, like the product photos
    ImageNet-trained towers know, which is what the offline preset expects.
    Items are ``(transform(image), label)``; ``classnames`` lists the 10 class names.
    """

    classnames = FASHION_MNIST_CLASSNAMES

    def __init__(
        self,
        split: str = "test",
        root: str | None = None,
        transform=None,
        invert: bool = True,
        download: bool = False,
    ) -> None:
        self.split = split
        self.images, self.labels = load_fashion_mnist_arrays(split, root, download)
        self.transform = transform
        self.invert = invert
        self.fingerprint = f"fashion-mnist/{split}/n={len(self.labels)}/invert={int(invert)}"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        """Image ``index`` as a 28x28 RGB PIL image (inverted when ``invert``), before ``transform``."""
        array = self.images[index]
        if self.invert:
            array = 255 - array
        return Image.fromarray(array, mode="L").convert("RGB")

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
