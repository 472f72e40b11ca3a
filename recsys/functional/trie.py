"""A vectorised prefix trie over fixed-depth semantic IDs, for constrained decoding.

Semantic IDs have a fixed depth L (every item gets the same number of codes), so the trie is stored
level by level as tensors instead of a Python dict of string keys (MiniOneRec's ``LogitProcessor.py``):

- a prefix (c_0, ..., c_{t-1}) is packed into one integer key, sum_i c_i * R**(t-1-i) with radix R =
  the largest codebook size, so a whole batch of prefixes is looked up with one ``searchsorted``;
- ``allowed[t]`` is a dense (P_t, R) boolean table: row p says which codes may follow the p-th prefix of
  length t.

A prefix that is not in the trie gets an all-False row: the caller masks every token (fail closed), it
never falls back to the unconstrained distribution (the authors' processor does, issue #50).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int

__all__ = ["pack_prefix", "build_prefix_tables", "allowed_codes"]


def pack_prefix(codes: Tensor, radix: int) -> Tensor:
    """(R, t) long codes -> (R,) long mixed-radix keys; t = 0 gives key 0 for every row."""
    check_int("radix", radix, low=1)
    key = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
    for i in range(codes.shape[1]):
        key = key * radix + codes[:, i]
    return key  # (R,)


def build_prefix_tables(codes: Tensor) -> tuple[list[Tensor], list[Tensor], int]:
    """Level-wise trie tables from the items' codes.

    Args:
        codes: (N, L) long, code of every item at every level, values in [0, R).

    Returns:
        keys: list of L tensors, keys[t] (P_t,) sorted unique packed prefixes of length t;
        allowed: list of L tensors, allowed[t] (P_t, R) bool, codes allowed after each prefix;
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
    keys, allowed = [], []
    for t in range(n_levels):
        prefix_key = pack_prefix(codes[:, :t], radix)  # (N,)
        unique_keys, inverse = torch.unique(prefix_key, sorted=True, return_inverse=True)  # (P_t,), (N,)
        table = torch.zeros(unique_keys.numel(), radix, dtype=torch.bool, device=codes.device)  # (P_t, R)
        table[inverse, codes[:, t]] = True
        keys.append(unique_keys)
        allowed.append(table)
    return keys, allowed, radix


def allowed_codes(prefix: Tensor, keys: Tensor, allowed: Tensor, radix: int) -> Tensor:
    """Codes allowed after each prefix of one length t.

    Args:
        prefix: (R, t) long codes generated so far; a negative entry marks an invalid token.
        keys: (P_t,) sorted packed prefixes; allowed: (P_t, radix) bool.

    Returns:
        (R, radix) bool; all False for a prefix that is not in the trie (fail closed).
    """
    rows = prefix.shape[0]
    valid = (prefix >= 0).all(dim=1) & (prefix < radix).all(dim=1)  # (R,)
    key = pack_prefix(prefix.clamp(min=0, max=radix - 1), radix)  # (R,)
    position = torch.searchsorted(keys, key).clamp(max=keys.numel() - 1)  # (R,)
    found = valid & (keys[position] == key)  # (R,)
    out = allowed[position]  # (R, radix)
    return out & found.unsqueeze(1)  # (R, radix); rows not in the trie -> all False
