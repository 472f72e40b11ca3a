"""Features of the labelled shots (the only data the fitness sees), of a held-out slice of the training
split (logged, never used for selection) and of the test split, all through vlkit's shared feature
cache (``vlkit.data.features.encode_dataset``), so image features are computed once per backbone.

Subsets are ``torch.utils.data.Subset`` drawn with vlkit's own samplers, so the cache entries are the
same ones ``vlkit.data.fewshot.FewShotDataModule`` (TFUP, zero-shot) writes and reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Subset

from vlkit.errors import ConfigError, check_dir, check_int

__all__ = ["DATASET_TYPE_WORDS", "TaskFeatures", "check_task_dataset", "load_task_features"]

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
        check_dir("dataset", dataset.removeprefix("imagefolder:"))
        return dataset
    hint = " ('torchvision:<Name>' needs a root, which ProAPO does not take)" if str(dataset).startswith("torchvision:") else ""
    raise ConfigError(f"dataset must be 'fashion-mnist' or 'imagefolder:<dir>', got {dataset!r}{hint}", argument="dataset")


@dataclass
class TaskFeatures:
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
    encode all through the shared cache."""
    from vlkit.data.features import encode_dataset
    from vlkit.data.fewshot import build_dataset, sample_few_shot, sample_subset

    check_task_dataset(dataset)
    check_int("shots", shots, low=1)
    check_int("seed", seed)
    check_int("heldout_size", heldout_size, low=0)
    check_int("test_size", test_size, low=0)
    check_int("batch_size", batch_size, low=1)
    kwargs = dict(batch_size=batch_size, cache_dir=cache_dir, device=device, progress=False)
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
