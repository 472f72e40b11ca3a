"""Top-K ranking metrics from the rank of the target, with confidence intervals.

One target per row (MiniOneRec's ``calc.py``): with r the 0-based rank of the target among the
recommendations (``r = -1`` or ``r >= K`` when it is not in the top K),

    HR@K   = mean_u 1[0 <= r_u < K]
    NDCG@K = mean_u 1[0 <= r_u < K] / log2(r_u + 2)

(with a single relevant item the ideal DCG is 1). Confidence intervals: normal approximation of the
mean over users, mean +- z * std / sqrt(n) (z = 1.96 for 95 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int, check_int_sequence, check_positive

__all__ = [
    "DEFAULT_KS",
    "target_rank_from_scores",
    "first_hit_rank",
    "hit_at_k",
    "ndcg_at_k",
    "chance_metrics",
    "mean_with_ci",
    "ranking_metrics",
    "ranking_log_dict",
]

DEFAULT_KS = (1, 3, 5, 10, 20)  # the cut-offs every recsys method reports


def target_rank_from_scores(scores: Tensor, target: Tensor) -> Tensor:
    """0-based rank of the target in a full ranking (ties counted pessimistically: ahead of the target).

    Args:
        scores: (B, N) score of every item; higher is better. ``-inf`` marks items excluded.
        target: (B,) long index of the target item in [0, N).

    Returns:
        (B,) long rank = number of items scoring >= the target's score, minus one.
    """
    if scores.dim() != 2 or target.dim() != 1 or scores.shape[0] != target.shape[0] or scores.shape[1] == 0:
        raise ConfigError(f"scores must be (B, N) with N >= 1 and target (B,), got {tuple(scores.shape)} and {tuple(target.shape)}",
                          argument="scores")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= scores.shape[1]):
        raise ConfigError(f"target must hold item indices in [0, {scores.shape[1]}), got [{int(target.min())}, {int(target.max())}]",
                          argument="target")
    target_score = scores.gather(1, target.unsqueeze(1))  # (B, 1)
    return (scores >= target_score).sum(dim=1) - 1  # (B,)


def first_hit_rank(recommended: Tensor, target: Tensor) -> Tensor:
    """Rank of the first recommendation equal to the target (the authors' "first matching beam").

    Args:
        recommended: (B, K) item indices in rank order; -1 pads missing entries.
        target: (B,) item indices.

    Returns:
        (B,) long 0-based rank, -1 when the target is not among the K.
    """
    if recommended.dim() != 2 or target.dim() != 1 or recommended.shape[0] != target.shape[0]:
        raise ConfigError(f"recommended must be (B, K) and target (B,), got {tuple(recommended.shape)} and {tuple(target.shape)}",
                          argument="recommended")
    hits = recommended == target.unsqueeze(1)  # (B, K)
    found = hits.any(dim=1)
    rank = hits.float().argmax(dim=1)  # first True
    return torch.where(found, rank, torch.full_like(rank, -1))


def hit_at_k(rank: Tensor, k: int) -> Tensor:
    """(B,) float 1[0 <= rank < k]."""
    check_int("k", k, low=1)
    return ((rank >= 0) & (rank < k)).float()


def ndcg_at_k(rank: Tensor, k: int) -> Tensor:
    """(B,) float 1[0 <= rank < k] / log2(rank + 2)."""
    hit = hit_at_k(rank, k)
    return hit / torch.log2(rank.clamp(min=0).float() + 2.0)


def chance_metrics(num_items: int, k: int) -> dict[str, float]:
    """HR@K and NDCG@K of a uniformly random full ranking of ``num_items`` items: the chance level.

    The target's rank is uniform over 0..N-1, so each metric is the mean of its per-row value over those N
    ranks: HR@K = min(K, N) / N, NDCG@K = sum_{r < min(K, N)} 1 / log2(r + 2) / N.

    Returns:
        ``{"hr@K": ..., "ndcg@K": ...}`` (fractions).
    """
    check_int("num_items", num_items, low=1)
    rank = torch.arange(num_items)  # (N,) every rank the target can take, each with probability 1/N
    return {f"hr@{k}": hit_at_k(rank, k).mean().item(), f"ndcg@{k}": ndcg_at_k(rank, k).mean().item()}


def mean_with_ci(values: Tensor, z: float = 1.96) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation confidence interval (population std / sqrt(n))."""
    check_positive("z", z)
    n = values.numel()
    if n == 0:
        return float("nan"), float("nan")
    mean = values.float().mean().item()
    if n == 1:
        return mean, float("nan")
    std = values.float().std(unbiased=True).item()
    return mean, z * std / math.sqrt(n)


def ranking_metrics(rank: Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, tuple[float, float]]:
    """``{"hr@K": (mean, ci95), "ndcg@K": (mean, ci95)}`` for every K."""
    check_int_sequence("ks", ks, low=1)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = mean_with_ci(hit_at_k(rank, k))
        out[f"ndcg@{k}"] = mean_with_ci(ndcg_at_k(rank, k))
    return out


def ranking_log_dict(stage: str, ranks: Tensor | Sequence[Tensor], ks: tuple[int, ...] = DEFAULT_KS,
                     prefix: str = "") -> dict[str, float]:
    """The metrics a method logs for one stage, from the targets' ranks.

    Args:
        stage: ``"val"`` or ``"test"`` (the metric names' first part).
        ranks: (B,) long 0-based ranks (-1 = not found), or a list of such tensors (the epoch's batches),
            concatenated on the CPU.
        ks: cut-offs.
        prefix: put before every name (``"exact_"`` for exact full ranking).

    Returns:
        ``{"<stage>/<prefix>hr@K": mean, "<stage>/<prefix>hr@K_ci": 95 % half-width, ... ndcg@K ...,
        "<stage>/<prefix>rows": number of ranks}``; empty when there are no ranks.
    """
    if not isinstance(ranks, Tensor):
        if not ranks:
            return {}
        ranks = torch.cat([r.detach().cpu() for r in ranks])  # (sum of B,)
    out: dict[str, float] = {}
    for name, (mean, ci) in ranking_metrics(ranks, tuple(ks)).items():
        out[f"{stage}/{prefix}{name}"] = mean
        out[f"{stage}/{prefix}{name}_ci"] = ci
    out[f"{stage}/{prefix}rows"] = float(ranks.numel())
    return out
