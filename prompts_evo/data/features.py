"""ProAPO's image data: features of the labelled shots (the only data the fitness sees), of a held-out
slice of the training split (logged, never used for selection) and of the test split, all through vlkit's
shared feature cache (``vlkit.data.features.encode_dataset``), so image features are computed once per
backbone; :class:`ProAPODataModule` serves them to ``LitProAPO``.

Subsets are ``torch.utils.data.Subset`` drawn with vlkit's own samplers, so the cache entries are the
same ones ``vlkit.data.fewshot.FewShotDataModule`` (TFUP, zero-shot) writes and reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from vlkit.cache import cache_root
from vlkit.data.sharding import evaluation_sampler
from vlkit.errors import ConfigError, check_dir, check_int

__all__ = ["DATASET_TYPE_WORDS", "TaskFeatures", "check_task_dataset", "check_task_settings", "load_task_features",
           "ProAPODataModule"]

# dataset-type words for the stage-1 template variants (the authors' dataset_type_list.json)
DATASET_TYPE_WORDS = {"fashion-mnist": ["clothing", "fashion product"]}


def check_task_dataset(dataset) -> str:
    """``"fashion-mnist"`` or ``"imagefolder:<existing dir>"``, checked without reading an image.

    ``"torchvision:<Name>"`` is refused here: vlkit's torchvision wrapper needs a ``root`` that the ProAPO
    API does not take (it would fail only after the backbone is built).
    """
    if dataset == "fashion-mnist":
        return dataset
    if isinstance(dataset, str) and dataset.startswith("imagefolder:"):
        from vlkit.data.fewshot import parse_imagefolder  # the folder, and any '?test_fraction=..&seed=..' split

        check_dir("dataset", parse_imagefolder(dataset)[0])
        return dataset
    hint = " ('torchvision:<Name>' needs a root, which ProAPO does not take)" if str(dataset).startswith("torchvision:") else ""
    raise ConfigError(f"dataset must be 'fashion-mnist' or 'imagefolder:<dir>', got {dataset!r}{hint}", argument="dataset")


def check_task_settings(dataset: str, shots: int, seed: int, heldout_size: int, test_size: int, batch_size: int) -> None:
    """Check the data settings of :func:`load_task_features` / :class:`ProAPODataModule` without loading
    anything: the dataset's form (and folder), integer-ness and ranges."""
    check_task_dataset(dataset)
    check_int("shots", shots, low=1)
    check_int("seed", seed)
    check_int("heldout_size", heldout_size, low=0)
    check_int("test_size", test_size, low=0)
    check_int("batch_size", batch_size, low=1)


@dataclass
class TaskFeatures:
    """The encoded images of one ProAPO task (features L2-normalised, on the CPU)."""

    classnames: list[str]
    shot_features: Tensor  # (C*K, D) normalised
    shot_labels: Tensor  # (C*K,)
    shot_indices: Tensor  # (C*K,) indices into the training split
    heldout_features: Tensor  # (H, D)
    heldout_labels: Tensor  # (H,)
    test_features: Tensor  # (N, D)
    test_labels: Tensor  # (N,)


def load_task_features(
    backbone,
    dataset: str = "fashion-mnist",
    shots: int = 1,
    seed: int = 0,
    heldout_size: int = 500,
    test_size: int = 0,
    cache_dir: str | None = None,
    device=None,
    batch_size: int = 64,
) -> TaskFeatures:
    """Sample ``shots`` labelled images per class from the training split (``sample_few_shot`` with
    ``seed``), a disjoint seeded held-out slice of ``heldout_size`` training images, and the test split
    (``test_size`` > 0: vlkit's fixed seed-0 subset of that size, the one ``FewShotDataModule`` uses);
    encode all through the shared cache (``cache_dir``; None: no cache)."""
    from vlkit.data.features import encode_dataset
    from vlkit.data.fewshot import build_dataset, sample_few_shot, sample_subset

    check_task_settings(dataset, shots, seed, heldout_size, test_size, batch_size)
    kwargs = dict(batch_size=batch_size, cache_dir=cache_dir, device=device, progress=True)  # a bar per cache miss
    train = build_dataset(dataset, "train")
    train_labels = torch.as_tensor(train.labels) if hasattr(train, "labels") else torch.tensor([y for _, y in train])
    shot_indices = sample_few_shot(train_labels, shots, seed)  # (C*K,)
    shot_features, shot_labels = encode_dataset(backbone, Subset(train, shot_indices.tolist()), **kwargs)
    heldout_features = torch.zeros(0, shot_features.shape[1])
    heldout_labels = torch.zeros(0, dtype=torch.long)
    if heldout_size:
        rest = torch.ones(len(train_labels), dtype=torch.bool)
        rest[shot_indices] = False
        pool = torch.nonzero(rest).flatten()  # training images that are not shots
        picked = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(10_000 + seed))[:heldout_size]]
        heldout_features, heldout_labels = encode_dataset(backbone, Subset(train, picked.sort().values.tolist()), **kwargs)
    test = build_dataset(dataset, "test")
    test_indices = sample_subset(len(test), test_size or None, 0)
    test_features, test_labels = encode_dataset(backbone, Subset(test, test_indices.tolist()), **kwargs)
    return TaskFeatures(
        list(train.classnames), shot_features, shot_labels.long(), shot_indices, heldout_features,
        heldout_labels.long(), test_features, test_labels.long(),
    )


class _ShotSet(Dataset):
    """One item: every labelled shot. Under DDP each rank's sampler pads to this one item, so every rank
    scores the same full shot set (a per-shot dataset would be sharded and each rank would search on half)."""

    def __init__(self, task: TaskFeatures) -> None:
        self.task = task

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"features": self.task.shot_features, "label": self.task.shot_labels}  # (C*K, D), (C*K,)


def _only_item(items: list[dict]) -> dict[str, Tensor]:
    return items[0]


def _feature_collate(items) -> dict[str, Tensor]:
    features, labels = zip(*items)
    return {"features": torch.stack(features), "label": torch.stack(labels)}  # (B, D), (B,)


class ProAPODataModule(L.LightningDataModule):
    """The image features ProAPO needs: labelled shots, a held-out slice and the test split.

    Features are encoded once by the backbone handed over in ``connect(backbone)`` (``LitProAPO.setup``
    calls it) and cached on disk, shared with ``vlkit.fewshot``; later runs skip the image encoder.

    Batches (dicts):
      - train: one batch per epoch holding every labelled shot, ``features`` (C*K, D) and ``label`` (C*K,):
        the fitness scores each candidate on all shots at once, and one epoch runs one generation (under
        DDP every rank gets the whole shot set, so every rank runs the same search).
      - val: held-out training images (disjoint from the shots; logged, never used for selection),
        ``features`` (B, D) and ``label`` (B,); no batches when ``heldout_size`` is 0.
      - test: the test split (or its seed-0 subset of ``test_size`` images), same keys.
    After ``connect``: ``classnames``, ``type_words`` (the dataset's default type words), ``task`` (a
    :class:`TaskFeatures` with ``shot_features`` (C*K, D), ``shot_labels``, ``shot_indices``,
    ``heldout_features``/``heldout_labels``, ``test_features``/``test_labels``).

    Args:
        dataset: ``"fashion-mnist"`` or ``"imagefolder:<dir>"`` (with ``train/`` and ``test/`` inside).
        shots: labelled images per class (>= 1); the fitness sees only these.
        seed: seed of the shot sampling and of the held-out slice.
        heldout_size: training images (not shots) for the logged ``val/acc`` (0: no validation).
        test_size: test images scored by ``vlkit test`` (0: the whole test split).
        batch_size: image batch size while encoding.
        eval_batch_size: feature batch size of the val / test loaders.
        cache_dir: feature cache root (None: the kit's cache, ``$VLKIT_CACHE`` or ``~/.cache/vlkit``).
    """

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        shots: int = 1,
        seed: int = 0,
        heldout_size: int = 200,
        test_size: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 2048,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_task_settings(dataset, shots, seed, heldout_size, test_size, batch_size)
        check_int("eval_batch_size", eval_batch_size, low=1)
        if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir.strip()):
            raise ConfigError(f"cache_dir must be a folder path or None, got {cache_dir!r}", argument="cache_dir")
        self.save_hyperparameters()
        self.backbone = None
        self.task: TaskFeatures | None = None

    @property
    def type_words(self) -> list[str]:
        """The dataset-type words of the stage-1 template variants (the authors' dataset_type_list.json)."""
        return list(DATASET_TYPE_WORDS.get(self.hparams.dataset, []))

    @property
    def classnames(self) -> list[str]:
        """The class names (after ``connect``)."""
        return self._connected().classnames

    def connect(self, backbone, device=None) -> ProAPODataModule:
        """Encode (or load from the cache) the shot, held-out and test features with ``backbone``
        (on ``device``; None: CUDA when available). A second call with the same backbone does nothing."""
        if self.backbone is backbone and self.task is not None:
            return self
        h = self.hparams
        self.task = load_task_features(
            backbone, h.dataset, h.shots, h.seed, h.heldout_size, h.test_size,
            cache_dir=h.cache_dir if h.cache_dir is not None else str(cache_root()), device=device, batch_size=h.batch_size,
        )
        self.backbone = backbone
        return self

    def _connected(self) -> TaskFeatures:
        if self.task is None:
            raise RuntimeError("ProAPODataModule.connect(backbone) must be called before asking for data")
        return self.task

    def shot_batch(self) -> dict[str, Tensor]:
        """The training batch: every labelled shot, ``features`` (C*K, D) and ``label`` (C*K,)."""
        task = self._connected()
        return {"features": task.shot_features, "label": task.shot_labels}

    def _loader(self, features: Tensor, labels: Tensor, batch_size: int) -> DataLoader:
        # private generator: iterating must not shift the global RNG; under several ranks each row once
        rows = TensorDataset(features, labels)
        return DataLoader(rows, batch_size=batch_size, collate_fn=_feature_collate, generator=torch.Generator(),
                          sampler=evaluation_sampler(rows))

    def train_dataloader(self) -> DataLoader:
        """One batch per epoch: all shots (see the class docstring)."""
        return DataLoader(_ShotSet(self._connected()), batch_size=1, collate_fn=_only_item)

    def val_dataloader(self) -> DataLoader:
        """Held-out training images, ``eval_batch_size`` per batch."""
        task = self._connected()
        return self._loader(task.heldout_features, task.heldout_labels, self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test images, ``eval_batch_size`` per batch."""
        task = self._connected()
        return self._loader(task.test_features, task.test_labels, self.hparams.eval_batch_size)
