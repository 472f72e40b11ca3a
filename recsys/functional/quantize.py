"""Semantic-ID post-processing: Sinkhorn re-assignment of colliding items, dedup level, statistics.

- Sinkhorn-Knopp (Cuturi 2013) in the log domain, as LC-Rec/MiniOneRec use it to spread colliding items
  over the last codebook (``generate_indices.py``: epsilon 0.003, 50 iterations, up to 20 rounds).
- An extra level that numbers the items still sharing an ID (TIGER's disambiguation token), so every
  item's ID is unique and all IDs keep one fixed depth.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_finite_tensor, check_int, check_positive

__all__ = [
    "sinkhorn_assign",
    "collision_groups",
    "collision_rate",
    "codebook_usage",
    "append_dedup_level",
]


def sinkhorn_assign(distances: Tensor, epsilon: float = 0.003, iterations: int = 50) -> Tensor:
    """Balanced assignment of B points to K codes by entropic optimal transport.

    Args:
        distances: (B, K) squared distances between points and codes.
        epsilon: entropy weight; small values approach a hard balanced assignment.
        iterations: Sinkhorn iterations.

    Returns:
        (B,) long code per point: argmax of the transport plan with uniform marginals
        (each point mass 1/B, each code mass 1/K).
    """
    if distances.dim() != 2 or distances.numel() == 0:
        raise ConfigError(f"distances must be a non-empty (B, K) tensor, got shape {tuple(distances.shape)}", argument="distances")
    check_finite_tensor("distances", distances)
    check_positive("epsilon", epsilon)
    check_int("iterations", iterations, low=1)
    d = distances.double()
    # centre and scale as LC-Rec does, so epsilon is relative to the spread of the distances
    spread = (d.max() - d.min()).clamp(min=1e-12)
    log_q = -(d - d.min()) / spread / epsilon  # (B, K)
    B, K = d.shape
    log_row = torch.full((B,), -torch.log(torch.tensor(float(B), dtype=torch.float64)).item(), dtype=torch.float64)
    log_col = torch.full((K,), -torch.log(torch.tensor(float(K), dtype=torch.float64)).item(), dtype=torch.float64)
    log_row, log_col = log_row.to(d.device), log_col.to(d.device)
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) + log_col.unsqueeze(0)  # columns -> 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) + log_row.unsqueeze(1)  # rows -> 1/B
    return log_q.argmax(dim=1)


def collision_groups(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Group items by their full ID.

    Args:
        codes: (N, L) long.

    Returns:
        group: (N,) long id of each item's group; counts: (N,) long size of each item's group.
    """
    _check_codes(codes)
    _, group, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return group, counts[group]


def _check_codes(codes: Tensor) -> None:
    if codes.dim() != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ConfigError(f"codes must be a non-empty (N, L) tensor, got shape {tuple(codes.shape)}", argument="codes")


def collision_rate(codes: Tensor) -> float:
    """Share of items whose ID is shared with another item (MiniOneRec/LC-Rec report 1 - unique/N;
    we report both through :func:`codebook_usage`)."""
    _, counts = collision_groups(codes)
    return (counts > 1).float().mean().item()


def codebook_usage(codes: Tensor, codebook_sizes: list[int] | None = None) -> dict[str, float]:
    """Collision statistics and the number of distinct codes used per level."""
    _check_codes(codes)
    N, L = codes.shape
    unique = torch.unique(codes, dim=0).shape[0]
    out: dict[str, float] = {
        "items": float(N),
        "unique_ids": float(unique),
        "collision_rate": 1.0 - unique / N,  # LC-Rec/MiniOneRec definition
        "items_in_collisions": float((collision_groups(codes)[1] > 1).sum().item()),
        "max_items_per_id": float(collision_groups(codes)[1].max().item()),
    }
    for level in range(L):
        used = torch.unique(codes[:, level]).numel()
        out[f"level{level}_used"] = float(used)
        if codebook_sizes is not None and level < len(codebook_sizes):
            out[f"level{level}_use_frac"] = used / codebook_sizes[level]
    return out


def append_dedup_level(codes: Tensor) -> Tensor:
    """Append a level numbering items that share an ID (0, 1, 2, ... in item order); no-op if unique.

    Args:
        codes: (N, L) long.

    Returns:
        (N, L) unchanged when all IDs are unique, else (N, L + 1).
    """
    group, counts = collision_groups(codes)
    if counts.max() <= 1:
        return codes
    ordinal = torch.zeros_like(group)
    seen: dict[int, int] = {}
    for i, g in enumerate(group.tolist()):  # N is a catalogue (thousands): a Python pass is fine
        ordinal[i] = seen.get(g, 0)
        seen[g] = ordinal[i].item() + 1
    return torch.cat([codes, ordinal.unsqueeze(1)], dim=1)  # (N, L + 1)
