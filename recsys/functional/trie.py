"""A sparse prefix trie over fixed-depth semantic IDs, for constrained decoding.

Semantic IDs have a fixed depth L (every item gets the same number of codes), so the trie is stored
level by level as flat tensors instead of a Python dict keyed by the generated prefix (MiniOneRec's
``evaluate.py`` + ``LogitProcessor.py``):

- a prefix (c_0, ..., c_{t-1}) is packed into one integer key, sum_i c_i * R**(t-1-i) with radix R =
  the largest code used + 1, so a whole batch of prefixes is looked up with one ``searchsorted``;
- ``keys[t]`` (P_t,) are the sorted distinct prefixes of length t, and ``children[t]`` lists the codes
  that may follow each of them in compressed-sparse-row form: prefix p's codes are
  ``children[t].codes[children[t].offsets[p] : children[t].offsets[p + 1]]``, sorted.

Memory is O(number of prefixes): sum_t P_t keys and offsets plus sum_t P_{t+1} child codes, whatever the
radix (a dense (P_t, R) table per level would hold P_{L-1} * R flags at the last level, where each
prefix has about one child). Building is one sort of the items' full keys and one pass per level over
the sorted keys (a prefix of a sorted full key is sorted too). A lookup costs O(rows * log P_t) plus
the number of allowed codes returned, whatever the catalogue size.

A prefix that is not in the trie has no children: the caller masks every token (fail closed), it never
falls back to the unconstrained distribution (the authors' processor does, issue #50).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int

__all__ = ["LevelChildren", "pack_prefix", "build_prefix_tables", "allowed_children", "allowed_codes", "prefix_table_bytes"]


class LevelChildren(NamedTuple):
    """The codes allowed after each prefix of one length t, in compressed-sparse-row form.

    Args:
        offsets: (P_t + 1,) long, prefix p's children are ``codes[offsets[p] : offsets[p + 1]]``.
        codes: (P_{t+1},) int32 (long if the radix needs it), every child code, sorted within a prefix.
    """

    offsets: Tensor
    codes: Tensor


def pack_prefix(codes: Tensor, radix: int) -> Tensor:
    """(R, t) long codes -> (R,) long mixed-radix keys; t = 0 gives key 0 for every row."""
    check_int("radix", radix, low=1)
    key = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
    for i in range(codes.shape[1]):
        key = key * radix + codes[:, i]
    return key  # (R,)


def build_prefix_tables(codes: Tensor) -> tuple[list[Tensor], list[LevelChildren], int]:
    """Level-wise sparse trie tables from the items' codes.

    Args:
        codes: (N, L) long, code of every item at every level, values in [0, R).

    Returns:
        keys: list of L tensors, keys[t] (P_t,) sorted distinct packed prefixes of length t (P_0 = 1);
        children: list of L :class:`LevelChildren`, the codes allowed after each prefix of keys[t];
        radix: R.
    """
    if codes.dim() != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ConfigError(f"codes must be a non-empty (N, L) tensor, got shape {tuple(codes.shape)}", argument="codes")
    if codes.min() < 0:
        raise ConfigError(f"codes must be non-negative, got a minimum of {int(codes.min())}", argument="codes")
    radix = int(codes.max().item()) + 1
    n_levels = codes.shape[1]
    if radix ** n_levels >= 2**62:
        raise ConfigError(f"codes must fit int64 prefix keys: radix {radix} ** depth {n_levels} overflows", argument="codes")
    code_dtype = torch.int32 if radix <= 2**31 - 1 else torch.long
    below = torch.unique(pack_prefix(codes.long(), radix), sorted=True)  # (P_L,) sorted distinct full IDs
    keys: list[Tensor] = [below.new_zeros(0)] * n_levels
    children: list[LevelChildren] = [LevelChildren(below.new_zeros(0), below.new_zeros(0))] * n_levels
    for t in range(n_levels - 1, -1, -1):
        # the parents of the sorted length-(t+1) prefixes are sorted too: distinct runs = the length-t prefixes
        parent, counts = torch.unique_consecutive(below // radix, return_counts=True)  # (P_t,), (P_t,)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # (P_t + 1,)
        keys[t] = parent
        children[t] = LevelChildren(offsets, (below % radix).to(code_dtype))  # codes (P_{t+1},)
        below = parent
    return keys, children, radix


def allowed_children(prefix: Tensor, keys: Tensor, children: LevelChildren, radix: int) -> tuple[Tensor, Tensor]:
    """The codes allowed after each prefix of one length t, as flat (row, code) pairs.

    Args:
        prefix: (R, t) long codes generated so far; a negative entry or one >= radix marks an invalid token.
        keys: (P_t,) sorted packed prefixes of length t.
        children: the :class:`LevelChildren` of ``keys``.
        radix: R, the radix the keys were packed with.

    Returns:
        rows (A,) long and codes (A,) long: code ``codes[a]`` may follow prefix ``rows[a]``; rows are
        ascending, codes ascending within a row; a prefix that is not in the trie gets no pair (fail closed).
    """
    R = prefix.shape[0]
    valid = ((prefix >= 0) & (prefix < radix)).all(dim=1)  # (R,)
    key = pack_prefix(prefix.clamp(min=0, max=radix - 1), radix)  # (R,)
    position = torch.searchsorted(keys, key).clamp(max=keys.numel() - 1)  # (R,)
    found = valid & (keys[position] == key)  # (R,)
    start = children.offsets.index_select(0, position)  # (R,)
    count = torch.where(found, children.offsets.index_select(0, position + 1) - start, torch.zeros_like(start))  # (R,)
    total = int(count.sum())
    rows = torch.repeat_interleave(torch.arange(R, device=prefix.device), count, output_size=total)  # (A,)
    # pair a of row r reads child start[r] + (a - first pair of r); index_select: advanced indexing is ~10x slower on CPU
    shift = start - (count.cumsum(0) - count)  # (R,)
    child = torch.repeat_interleave(shift, count, output_size=total)  # (A,)
    child += torch.arange(total, device=prefix.device)
    return rows, children.codes.index_select(0, child).long()  # (A,), (A,)


def allowed_codes(prefix: Tensor, keys: Tensor, children: LevelChildren, radix: int) -> Tensor:
    """Codes allowed after each prefix of one length t, as a dense per-row mask.

    Args:
        prefix: (R, t) long codes generated so far; a negative entry marks an invalid token.
        keys: (P_t,) sorted packed prefixes; children: their :class:`LevelChildren`.
        radix: R, the radix the keys were packed with.

    Returns:
        (R, radix) bool; all False for a prefix that is not in the trie (fail closed).
    """
    rows, codes = allowed_children(prefix, keys, children, radix)  # (A,), (A,)
    out = torch.zeros(prefix.shape[0], radix, dtype=torch.bool, device=prefix.device)  # (R, radix)
    out[rows, codes] = True
    return out


def prefix_table_bytes(keys: list[Tensor], children: list[LevelChildren]) -> int:
    """Bytes held by the tables :func:`build_prefix_tables` returns (keys, offsets and child codes)."""
    tensors = list(keys) + [t for level in children for t in level]
    return sum(t.numel() * t.element_size() for t in tensors)
