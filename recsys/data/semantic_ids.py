"""Semantic IDs: each catalogue item's tuple of codes, its tokens (``<a_12><b_3><c_7>``) and the on-disk index.

An item's semantic ID is L codes, one per level; code ``c`` of level ``l`` is written as the token
``<{letter l}_{c}>`` (MiniOneRec's format, levels ``a`` .. ``h``). :class:`SemanticIDs` holds the
catalogue's IDs as an (N, L) long tensor and reads/writes the authors' index format
``{item_id: [tokens]}`` (``sid_index.json``); writes are atomic (``vlkit.cache``). Three ways to get IDs
for a data set (:func:`load_semantic_ids`): an index file (LitRQVAE's output or the authors'), the
authors' released index of an ``amazon18-*`` data set, or unique random IDs (``"random-<K>x<L>"``).

Why the data layer: semantic IDs are a property of the catalogue (a table read from and written to
disk, like the items' titles), not weights. The models layer receives them as plain tensors and token
lists (``SIDTrie(codes, level_token_ids, ...)``, the tokenizers' ``sid_tokens``), so ``recsys.models``
never imports this module; LitRQVAE (methods) produces them and LitMiniOneRec (methods) consumes them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from recsys.data.sequences import SeqRecData, released_sid_path
from recsys.functional.quantize import append_dedup_level, collision_groups
from vlkit.cache import atomic_write_text
from vlkit.errors import ConfigError, check_file, check_int

__all__ = [
    "LEVEL_LETTERS",
    "SemanticIDs",
    "sid_token",
    "parse_random_sid_path",
    "random_semantic_ids",
    "load_semantic_ids",
]

LEVEL_LETTERS = "abcdefgh"
_SID_PATTERN = re.compile(r"<([a-h])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """The token of code ``code`` at level ``level``: ``<a_12>``, ``<b_3>``, ... (MiniOneRec's format)."""
    if not 0 <= level < len(LEVEL_LETTERS) or code < 0:
        raise ConfigError(f"level must be in [0, {len(LEVEL_LETTERS)}) and code >= 0, got level {level}, code {code}",
                          argument="level")
    return f"<{LEVEL_LETTERS[level]}_{code}>"


@dataclass
class SemanticIDs:
    """The catalogue's semantic IDs.

    Args:
        item_ids: item ids in catalogue order (N of them).
        codes: (N, L) long, item n's code at level l.
        codebook_sizes: L sizes; ``codebook_sizes[l]`` = number of codes (tokens) of level l, every code of
            level l lying in [0, codebook_sizes[l]).
    """

    item_ids: list[str]
    codes: Tensor
    codebook_sizes: list[int]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if n == 0:
            raise ConfigError("item_ids must be a non-empty list of item ids, got []", argument="item_ids")
        if not isinstance(self.codes, Tensor) or self.codes.dim() != 2 or self.codes.shape[0] != n:
            raise ConfigError(f"codes must be an (N={n}, L) tensor, got {tuple(getattr(self.codes, 'shape', ()))}",
                              argument="codes")
        if not 1 <= self.codes.shape[1] <= len(LEVEL_LETTERS):
            raise ConfigError(f"semantic IDs must have 1 to {len(LEVEL_LETTERS)} levels, got {self.codes.shape[1]}",
                              argument="codes")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise ConfigError(f"codebook_sizes must have one size per level ({self.codes.shape[1]}), got {list(self.codebook_sizes)}",
                              argument="codebook_sizes")
        for level, size in enumerate(self.codebook_sizes):
            column = self.codes[:, level]  # (N,)
            if int(column.min()) < 0 or int(column.max()) >= size:
                raise ConfigError(f"codes of level {level} must lie in [0, {size}), got [{int(column.min())}, {int(column.max())}]",
                                  argument="codes")

    @property
    def num_levels(self) -> int:
        """L, the depth of every ID."""
        return self.codes.shape[1]

    def tokens(self, index: int) -> list[str]:
        """The L tokens of the item at catalogue position ``index``, e.g. ``["<a_3>", "<b_1>"]``."""
        return [sid_token(l, int(c)) for l, c in enumerate(self.codes[index].tolist())]

    def sid_string(self, index: int) -> str:
        """The item's ID as one string of its tokens, e.g. ``"<a_3><b_1>"`` (what prompts show)."""
        return "".join(self.tokens(index))

    def level_tokens(self, level: int) -> list[str]:
        """Every token of one level in code order: ``level_tokens(l)[c] == sid_token(l, c)``."""
        return [sid_token(level, c) for c in range(self.codebook_sizes[level])]

    def all_tokens(self) -> list[str]:
        """Every level's tokens, level by level (so that each level's ids are contiguous once added)."""
        return [token for level in range(self.num_levels) for token in self.level_tokens(level)]

    def save(self, path: str | Path) -> None:
        """Write ``{item: [tokens]}`` (the authors' index format), atomically."""
        payload = {item: self.tokens(i) for i, item in enumerate(self.item_ids)}
        atomic_write_text(path, json.dumps(payload))

    @classmethod
    def load(cls, path: str | Path, item_ids: list[str], dedup: bool = True, allow_collisions: bool = False) -> "SemanticIDs":
        """Read an index JSON for the given catalogue; collisions get a dedup level when ``dedup``.

        Without ``dedup``, items sharing an ID are an error (constrained decoding needs unique IDs) unless
        ``allow_collisions`` (collision statistics of a reference index).
        """
        check_file("sid_path", path)
        if isinstance(item_ids, str) or not item_ids:
            raise ConfigError(f"item_ids must be a non-empty list of item ids, got {item_ids!r}", argument="item_ids")
        try:
            raw = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"sid index {path} must be JSON {{item: [tokens]}}, got invalid JSON ({err})", argument="sid_path") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"sid index {path} must be a JSON object {{item: [tokens]}}, got {type(raw).__name__}", argument="sid_path")
        missing = [i for i in item_ids if i not in raw]
        if missing:
            raise ConfigError(f"sid index {path} lacks {len(missing)} of the {len(item_ids)} items, e.g. {missing[:3]}",
                              argument="sid_path")
        rows = []
        for item in item_ids:
            tokens = raw[item]
            if isinstance(tokens, str) or not isinstance(tokens, list) or not tokens:
                raise ConfigError(f"sid index {path}: item {item!r} must map to a non-empty list of tokens, got {tokens!r}",
                                  argument="sid_path")
            parsed = [_SID_PATTERN.fullmatch(t) if isinstance(t, str) else None for t in tokens]
            if not all(parsed) or [LEVEL_LETTERS.index(m.group(1)) for m in parsed] != list(range(len(tokens))):
                raise ConfigError(f"sid index {path}: item {item!r} has malformed tokens {tokens}", argument="sid_path")
            rows.append([int(m.group(2)) for m in parsed])
        if len({len(r) for r in rows}) != 1:
            raise ConfigError(f"sid index {path}: IDs must all have the same depth, got depths {sorted({len(r) for r in rows})}",
                              argument="sid_path")
        codes = torch.tensor(rows, dtype=torch.long)  # (N, L)
        if dedup:
            codes = append_dedup_level(codes)
        elif not allow_collisions:
            _, counts = collision_groups(codes)  # (N,) size of each item's ID group
            if int(counts.max()) > 1:
                shared = [item_ids[i] for i in torch.nonzero(counts > 1).flatten()[:3].tolist()]
                raise ConfigError(
                    f"sid index {path} with dedup=False must give every item a unique ID, got "
                    f"{int((counts > 1).sum())} items sharing IDs (e.g. {shared}); load with dedup=True to add a dedup level",
                    argument="dedup",
                )
        sizes = [int(codes[:, l].max()) + 1 for l in range(codes.shape[1])]
        return cls(list(item_ids), codes, sizes)


def parse_random_sid_path(sid_path: str) -> tuple[int, int]:
    """``"random-<K>x<L>"`` -> (K codes per level, L levels), checked (K >= 2, 1 <= L <= 8)."""
    spec = sid_path.split("-", 1)[1]
    parts = spec.split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"sid_path 'random-<K>x<L>' needs integers K and L, got {sid_path!r}", argument="sid_path")
    k, l = int(parts[0]), int(parts[1])
    if k < 2 or not 1 <= l <= 8:
        raise ConfigError(f"sid_path 'random-<K>x<L>' needs K >= 2 codes and 1 <= L <= 8 levels, got {sid_path!r}",
                          argument="sid_path")
    return k, l


def random_semantic_ids(item_ids: list[str], codebook_size: int, num_levels: int, seed: int = 0) -> SemanticIDs:
    """Unique random IDs (a seeded permutation written in base ``codebook_size``): for tests and benchmarks."""
    n = len(item_ids)
    if isinstance(item_ids, str) or n == 0:
        raise ConfigError(f"item_ids must be a non-empty list of item ids, got {item_ids!r}", argument="item_ids")
    check_int("codebook_size", codebook_size, low=1)
    check_int("num_levels", num_levels, low=1, high=8)
    if codebook_size**num_levels < n:
        raise ConfigError(f"codebook_size**num_levels must be >= the {n} items, got {codebook_size}**{num_levels} = "
                          f"{codebook_size**num_levels}", argument="codebook_size")
    g = torch.Generator().manual_seed(seed)
    numbers = torch.randperm(codebook_size**num_levels, generator=g)[:n]  # (N,)
    digits = [(numbers // codebook_size ** (num_levels - 1 - l)) % codebook_size for l in range(num_levels)]  # L x (N,)
    return SemanticIDs(list(item_ids), torch.stack(digits, dim=1), [codebook_size] * num_levels)  # codes (N, L)


def load_semantic_ids(sid_path: str, data: SeqRecData) -> SemanticIDs:
    """The unique semantic IDs of ``data``'s catalogue named by ``sid_path``.

    ``sid_path`` is an index file (``sid_index.json``: LitRQVAE's output or the authors' format; colliding
    items get a dedup level), ``"released"`` (the authors' released index of an ``amazon18-*`` data set)
    or ``"random-<K>x<L>"`` (unique random IDs, for tests).
    """
    if sid_path.startswith("random-"):
        k, l = parse_random_sid_path(sid_path)
        return random_semantic_ids(data.item_ids, k, l)
    path = sid_path
    if path == "released":
        path = released_sid_path(data.name) or ""
        if not path:
            raise ConfigError(f"sid_path='released' needs an amazon18-* data set with its released index, got {data.name!r}",
                              argument="sid_path")
    if not Path(path).exists():
        raise FileNotFoundError(f"sid_path {path!r} does not exist (run LitRQVAE first, or use 'released')")
    return SemanticIDs.load(path, data.item_ids, dedup=True)
