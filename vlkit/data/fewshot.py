"""Image-classification data for few-shot and unsupervised adaptation: datasets by name, seeded K-shot
sampling, and ``FewShotDataModule`` (encoded features, cached on disk, served as batches of dicts)."""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from vlkit.cache import cache_root
from vlkit.data.features import encode_dataset
from vlkit.data.sharding import evaluation_sampler
from vlkit.errors import ConfigError, check_choice, check_int

__all__ = [
    "build_dataset",
    "sample_few_shot",
    "sample_subset",
    "FewShotDataModule",
    "ImageFolderDataset",
    "IMAGE_EXTENSIONS",
    "check_image_folder",
    "describe_split",
    "parse_imagefolder",
    "split_image_folder",
]


# the image extensions torchvision's ImageFolder reads (torchvision.datasets.folder.IMG_EXTENSIONS)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def check_image_folder(root: str, argument: str = "dataset") -> Path:
    """``root`` is a directory of ``<class>/<image>`` files, every class folder holding at least one image
    with one of :data:`IMAGE_EXTENSIONS`; otherwise a ConfigError naming the folder and the extensions."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{argument} image folder must be an existing directory, got {str(root)!r} (no such directory)",
                          argument=argument)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    empty = [d.name for d in classes if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in d.rglob("*") if f.is_file())]
    if not classes or empty:
        got = "no class folders" if not classes else f"no images in class folder(s) {empty[:5]}"
        raise ConfigError(
            f"{argument} image folder {str(root)!r} must hold <class>/<image> files with one of the extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}, got {got}",
            argument=argument,
        )
    return folder


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``; class names are folder names with '_' read as spaces.

    ``indices`` keeps only those images (one side of a seeded split, see :func:`split_image_folder`) and
    ``split`` names that selection in the fingerprint. ``labels`` (N,) holds the kept images' classes,
    read from the folder names without decoding any image.
    """

    def __init__(self, root: str, transform=None, indices=None, split: str = "") -> None:
        from torchvision.datasets import ImageFolder

        check_image_folder(root)
        self.root = root
        self.inner = ImageFolder(root)
        self.transform = transform
        self.classnames = [c.replace("_", " ") for c in self.inner.classes]
        self._select(range(len(self.inner)) if indices is None else indices, split)

    def _select(self, indices, split: str) -> None:
        self.indices = [int(i) for i in indices]
        self.labels = torch.tensor([self.inner.targets[i] for i in self.indices], dtype=torch.long)  # (N,)
        digest = hashlib.sha1("\n".join(self.inner.samples[i][0] for i in self.indices).encode()).hexdigest()[:12]
        selection = f"{split}:" if split else ""
        self.fingerprint = f"imagefolder:{os.path.abspath(self.root)}:{selection}{len(self.indices)}:{digest}"

    def select(self, indices, split: str) -> ImageFolderDataset:
        """A view of this folder keeping only ``indices`` (positions in the whole folder), named ``split``
        in its fingerprint; the folder is not walked again."""
        view = copy.copy(self)
        view._select(indices, split)
        return view

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.inner[self.indices[index]]
        image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


_IMAGEFOLDER_KEYS = ("test_fraction", "seed")
IMAGEFOLDER_HELP = (
    "'imagefolder:<dir>' with train/ and test/ class folders inside, or 'imagefolder:<dir>?test_fraction=0.2&seed=0' "
    "for a seeded per-class split of one folder (test_fraction=1: the whole folder is the test split, no train split)"
)


def parse_imagefolder(name: str) -> tuple[str, float | None, int]:
    """``"imagefolder:<dir>[?test_fraction=F&seed=S]"`` -> (dir, F or None, S); S defaults to 0."""
    from urllib.parse import parse_qsl

    body = name.removeprefix("imagefolder:")
    folder, question, query = body.partition("?")
    if not folder:
        raise ConfigError(f"dataset must be {IMAGEFOLDER_HELP}, got {name!r}", argument="dataset")
    if not question:
        return folder, None, 0
    options = dict(parse_qsl(query, keep_blank_values=True))
    for key in options:
        if key not in _IMAGEFOLDER_KEYS:
            raise ConfigError(
                f"dataset options after '?' must be among {list(_IMAGEFOLDER_KEYS)}, got {key!r} in {name!r}",
                argument="dataset",
            )
    if "test_fraction" not in options:
        raise ConfigError(f"dataset must give test_fraction in {name!r} (e.g. ?test_fraction=0.2&seed=0)", argument="dataset")
    try:
        fraction, seed = float(options["test_fraction"]), int(options.get("seed", 0))
    except ValueError:
        raise ConfigError(
            f"dataset test_fraction must be a number in (0, 1] and seed an integer, got {query!r} in {name!r}",
            argument="dataset",
        ) from None
    if not 0 < fraction <= 1:
        raise ConfigError(f"dataset test_fraction must be in (0, 1], got {fraction} in {name!r}", argument="dataset")
    return folder, fraction, seed


def split_image_folder(labels: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded per-class split of one folder: (train indices, test indices), disjoint, each sorted.

    Each class c with n_c images gives round(n_c * test_fraction) of them (at least 1, and at most
    n_c - 1 unless ``test_fraction == 1``) to the test side, drawn by a generator seeded with ``seed``.
    """
    labels = torch.as_tensor(labels)  # (N,)
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()  # (n_c,)
        n = members.numel()
        if test_fraction < 1 and n < 2:
            raise ConfigError(
                f"dataset test_fraction={test_fraction} needs >= 2 images in every class (one per side), got {n} in class {c}",
                argument="dataset",
            )
        n_test = n if test_fraction >= 1 else min(n - 1, max(1, round(n * test_fraction)))
        shuffled = members[torch.randperm(n, generator=generator)]  # (n_c,)
        test.append(shuffled[:n_test])
        train.append(shuffled[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def describe_split(name: str) -> str:
    """How a dataset name splits train from test, for result rows: ``"official"``, ``"folders train/ test/"``
    or ``"seeded test_fraction=0.2 seed=0"``."""
    if not name.startswith("imagefolder:"):
        return "official"
    _, fraction, seed = parse_imagefolder(name)
    return "folders train/ test/" if fraction is None else f"seeded test_fraction={fraction:g} seed={seed}"


def _image_folder_split(name: str, split: str) -> ImageFolderDataset:
    folder, fraction, seed = parse_imagefolder(name)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"dataset image folder must be an existing directory, got {folder!r} (no such directory)",
                          argument="dataset")
    if fraction is None:
        # one folder per split; never the same folder for two splits
        present = [d for d in ("train", "val", "test") if (root / d).is_dir()]
        if not present:
            raise ConfigError(f"dataset must be {IMAGEFOLDER_HELP}, got {name!r}: no train/ or test/ folder in it",
                              argument="dataset")
        if split not in present:
            raise ConfigError(
                f"dataset {name!r} must have a {split}/ folder for the {split!r} split, got only {[d + '/' for d in present]}",
                argument="dataset",
            )
        return ImageFolderDataset(str(root / split))
    if split not in ("train", "test"):
        raise ConfigError(f"split of a seeded image-folder split must be 'train' or 'test', got {split!r} ({name!r})",
                          argument="split")
    whole = ImageFolderDataset(str(root))
    train, test = split_image_folder(whole.labels, fraction, seed)
    indices = train if split == "train" else test
    if indices.numel() == 0:
        raise ConfigError(
            f"dataset {name!r} leaves no images for the 'train' split (test_fraction=1 makes the whole folder the "
            "test split); use test_fraction < 1 for labelled shots",
            argument="dataset",
        )
    return whole.select(indices.tolist(), f"{split}-f{fraction:g}-s{seed}")


class _TorchvisionDataset(Dataset):
    def __init__(self, name: str, root: str, split: str, download: bool) -> None:
        import torchvision.datasets as tvd

        if not name or not hasattr(tvd, name):
            raise ConfigError(f"dataset must name a torchvision dataset class ('torchvision:<Name>'), got {name!r}",
                              argument="dataset")
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
    """``"fashion-mnist"``, ``"imagefolder:<dir>"`` (``<dir>/<split>/<class>/<image>``: one folder per
    split), ``"imagefolder:<dir>?test_fraction=0.2&seed=0"`` (a seeded per-class split of
    ``<dir>/<class>/<image>``, see :func:`split_image_folder`) or ``"torchvision:<ClassName>"`` (with
    ``root``). Items are ``(PIL image, label)``; ``.classnames`` and ``.fingerprint`` are set. The train and
    test splits of an image folder never share an image."""
    if name == "fashion-mnist":
        from vlkit.data.fashion_mnist import FashionMNIST

        return FashionMNIST(split=split, root=root, download=download)
    if name.startswith("imagefolder:"):
        return _image_folder_split(name, split)
    if name.startswith("torchvision:"):
        if root is None:
            raise ConfigError(
                f"root must be the directory torchvision reads or downloads into for dataset {name!r}, got None",
                argument="root",
            )
        return _TorchvisionDataset(name.removeprefix("torchvision:"), root, split, download)
    raise ConfigError(
        f"dataset must be 'fashion-mnist', 'imagefolder:<dir>' or 'torchvision:<Name>', got {name!r}", argument="dataset"
    )


def sample_few_shot(labels: Tensor, shots: int, seed: int) -> Tensor:
    """K indices per class, drawn without replacement by a generator seeded with ``seed``.

    Returns (C*K,) indices grouped by class (class 0's K first). Raises if a class has fewer than K.
    ``labels``: (N,) non-empty; ``shots``: an int >= 1; ``seed``: an int.
    """
    labels = torch.as_tensor(labels)
    check_int("shots", shots, low=1)
    check_int("seed", seed)
    if labels.dim() != 1 or labels.numel() == 0:
        raise ConfigError(f"labels must be a non-empty (N,) tensor, got shape {tuple(labels.shape)}", argument="labels")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()  # (n_c,)
        if members.numel() < shots:
            raise ConfigError(f"shots={shots} but class {c} has only {members.numel()} samples", argument="shots")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:shots]])
    return torch.cat(chosen)  # (C*K,)


def sample_subset(num_items: int, size: int | None, seed: int) -> Tensor:
    """A seeded random subset of ``size`` indices (sorted), or all indices when size is None.

    ``num_items``: an int >= 0; ``size``: None or an int >= 1 (sizes >= num_items keep everything)."""
    check_int("num_items", num_items, low=0)
    check_int("subset_size", size, low=1, allow_none=True)
    if size is None or size >= num_items:
        return torch.arange(num_items)
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
        dataset: ``"fashion-mnist"``, ``"imagefolder:<dir>"`` (with ``train/`` and ``test/`` inside),
            ``"imagefolder:<dir>?test_fraction=0.2&seed=0"`` (a seeded split of one folder) or
            ``"torchvision:<Name>"``.
        root: data root (Fashion-MNIST defaults to Debian's ``/usr/share/datasets/fashion-mnist``).
        eval_split: split scored (and, transductively as in TFUP, also the unlabeled set); it must exist
            (``"train"`` or ``"test"`` for Fashion-MNIST).
        labelled_split: split the labelled K shots come from (checked like ``eval_split`` when shots > 0).
        subset_size: evaluate on a seeded subset of this many images, an int >= 1 (None: all).
        subset_seed: seed of that subset, an int (fixed across methods so all see the same images).
        shots: labelled shots per class, an int >= 0 (0: none, the unsupervised setting).
        seed: seed of the shot sampling, an int.
        augment_views: augmented views per unlabeled image, an int >= 0, pre-encoded once (TFUP-T's strong view).
        batch_size: batch size of the training feature loader, an int >= 1.
        eval_batch_size: batch size of the val/test/predict loaders, an int >= 1 (features are small: large
            batches keep Lightning's per-step overhead out of the per-epoch curve).
        cache_dir: root of the feature cache (features go to ``<cache_dir>/features/``); None: the kit's
            cache root, ``$VLKIT_CACHE`` or ``~/.cache/vlkit`` (``vlkit.cache.cache_root()``).
        encode_batch_size: image batch size while encoding, an int >= 1.
        download: let torchvision (or the Fashion-MNIST reader) download a missing data set into ``root``.
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
        cache_dir: str | None = None,
        encode_batch_size: int = 64,
        download: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError(f"dataset must be a dataset name string, got {dataset!r}", argument="dataset")
        check_int("subset_size", subset_size, low=1, allow_none=True)
        check_int("subset_seed", subset_seed)
        check_int("shots", shots, low=0)
        check_int("seed", seed)
        check_int("augment_views", augment_views, low=0)
        check_int("batch_size", batch_size, low=1)
        check_int("eval_batch_size", eval_batch_size, low=1)
        check_int("encode_batch_size", encode_batch_size, low=1)
        if dataset == "fashion-mnist":  # the split names are known without reading a file
            check_choice("eval_split", eval_split, ("train", "test"))
            if shots > 0:
                check_choice("labelled_split", labelled_split, ("train", "test"))
        if shots > 0 and labelled_split == eval_split:  # the labelled shots would be scored images
            raise ConfigError(
                f"labelled_split must differ from eval_split ({eval_split!r}) when shots > 0, got {labelled_split!r}",
                argument="labelled_split",
            )
        self.save_hyperparameters()
        self.backbone = None
        self.classnames: list[str] = list(build_dataset(dataset, eval_split, root, download).classnames)
        if not self.classnames:
            raise ConfigError(f"dataset {dataset!r} split {eval_split!r} must hold at least one class, got none",
                              argument="dataset")

    # -- model-dependent part -------------------------------------------------------------------------
    def connect(self, backbone) -> FewShotDataModule:
        """Encode (or load from cache) every feature set this module serves, with ``backbone``."""
        h = self.hparams
        if self.backbone is backbone:
            return self
        self.backbone = backbone
        eval_set = build_dataset(h.dataset, h.eval_split, h.root, h.download)
        eval_set = Subset(eval_set, sample_subset(len(eval_set), h.subset_size, h.subset_seed).tolist())
        cache_dir = h.cache_dir if h.cache_dir is not None else cache_root()  # the kit's one cache root
        kwargs = dict(cache_dir=cache_dir, batch_size=h.encode_batch_size)
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
        """The unlabelled training features with one augmented view each, ordered by (seed, epoch)."""
        self._require_connected()
        data = _AugmentedFeatures(self)
        # order and augmented views are a function of (seed, epoch) alone: Lightning calls set_epoch at
        # every epoch, so a run resumed from a checkpoint sees exactly the batches of an uninterrupted one
        return DataLoader(data, batch_size=self.hparams.batch_size, sampler=_EpochSeededSampler(data, self.hparams.seed))

    def _eval_loader(self) -> DataLoader:
        self._require_connected()
        n = self.eval_features.shape[0]
        data = TensorDataset(torch.arange(n), self.eval_features, self.eval_labels)
        # private generator: evaluating must not shift the global RNG that orders training batches; under
        # several ranks each scores its own rows, none twice (vlkit.data.sharding)
        return DataLoader(data, batch_size=self.hparams.eval_batch_size, collate_fn=_eval_collate, generator=torch.Generator(),
                          sampler=evaluation_sampler(data))

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
        """Draw this epoch's order and views (called by Lightning at every epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n = len(self.data)
        self.order = torch.randperm(n, generator=generator)  # (N,)
        self.data.view_of = torch.randint(self.data.views.shape[0], (n,), generator=generator)  # (N,)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.order.tolist())
