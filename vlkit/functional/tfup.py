"""TFUP: Training-Free Unsupervised Prompt (Long et al., arXiv 2404.16339), and the Tip-Adapter kernel
it shares (Zhang et al., ECCV 2022, eq. 6).

Notation: N test samples, M cache entries (K per class x C classes), C classes, D feature dim.
All features are L2-normalised before use; W (C, D) are the text class weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vlkit.errors import ConfigError, check_choice, check_int, check_non_negative, check_number, check_positive

__all__ = [
    "tfup_cache_shots",
    "select_confident_prototypes",
    "semantic_kl",
    "multi_level_similarity",
    "cache_logits",
    "tfup_logits",
    "marginal_entropy",
]


def tfup_cache_shots(num_samples: int, num_classes: int, proportion: float = 0.3, low: int = 9, high: int | None = 16) -> int:
    """Shots per class: K = min(high, max(low, floor(proportion * N / C))) (authors' main.py).

    With ``high=None`` (TFUP-T's training subset, proportion 0.75) there is no upper bound.

    Args:
        num_samples: N >= 1. num_classes: C >= 1. proportion: in [0, 1] (0: always ``low``).
        low: an int >= 1. high: an int >= ``low`` or None.
    """
    check_int("num_samples", num_samples, low=1)
    check_int("num_classes", num_classes, low=1)
    check_number("proportion", proportion, low=0, high=1)
    check_int("low", low, low=1)
    check_int("high", high, low=low, allow_none=True)
    shots = max(low, math.floor(proportion * num_samples / num_classes))
    return shots if high is None else min(high, shots)


def _check_same_dim(test_features: Tensor, cache_keys: Tensor, class_weights: Tensor) -> None:
    """(N, D), (M, D), (C, D): 2-D and one feature dim D (cheap: shapes only)."""
    shapes = {"test_features": test_features, "cache_keys": cache_keys, "class_weights": class_weights}
    for name, tensor in shapes.items():
        if tensor.dim() != 2:
            raise ConfigError(f"{name} must be 2-D (rows, D), got shape {tuple(tensor.shape)}", argument=name)
    dims = {name: tensor.shape[1] for name, tensor in shapes.items()}
    if len(set(dims.values())) != 1:
        raise ConfigError(f"test_features, cache_keys and class_weights must share the feature dim D, got {dims}")


def _neg_entropy(p: Tensor) -> Tensor:
    return (p * torch.log(p.clamp_min(1e-12))).sum(-1)  # (..., ) sum_c p log p


def select_confident_prototypes(probs: Tensor, shots: int, candidates_per_shot: int = 2) -> Tensor:
    """Confidence + prototype sample selection (TFUP sec. 3.2, the authors' ``refine_few_shots_without_label``).

    For each class c: take the ``candidates_per_shot * K`` samples with the highest p[:, c] (instance
    confidence); score each candidate j by s_j = sum_{k in set} KL(p_j || p_k) (prototype score: low when
    p_j sits at the centre of the set); keep the K lowest. Classes are selected independently, so one
    sample may enter several classes (as in the authors' code).

    Vectorised: sum_k KL(p_j||p_k) = S * sum_c p_jc log p_jc - p_j . sum_k log p_k, S = set size.

    Args:
        probs: (N, C) class probabilities (rows sum to 1).
        shots: K.
    Returns:
        (C, K) long indices into the N samples; row c holds class c's selection, ordered by score.
    """
    if probs.dim() != 2:
        raise ConfigError(f"probs must be (N, C), got shape {tuple(probs.shape)}", argument="probs")
    n, c = probs.shape
    if not torch.isfinite(probs).all():
        raise ConfigError("probs must be finite, got NaN or inf (non-finite features?)", argument="probs")
    check_int("shots", shots, low=1)
    check_int("candidates_per_shot", candidates_per_shot, low=1)
    if n < shots:
        raise ConfigError(f"shots={shots} per class needs at least {shots} samples, got N={n}", argument="shots")
    set_size = min(n, candidates_per_shot * shots)
    cand = probs.topk(set_size, dim=0).indices.T  # (C, S) candidate indices per class
    p = probs[cand]  # (C, S, C) candidate probability rows
    log_sum = torch.log(p.clamp_min(1e-12)).sum(1, keepdim=True)  # (C, 1, C) sum_k log p_k
    score = set_size * _neg_entropy(p) - (p * log_sum).sum(-1)  # (C, S)
    keep = score.topk(shots, dim=1, largest=False).indices  # (C, K)
    return torch.gather(cand, 1, keep)  # (C, K)


def semantic_kl(test_probs: Tensor, cache_probs: Tensor) -> Tensor:
    """D_ij = KL(p_i || q_j) = sum_c p_ic log p_ic - p_i . log q_j, one matmul. (N, C), (M, C) -> (N, M)."""
    log_q = torch.log(cache_probs.clamp_min(1e-12))  # (M, C)
    return torch.addmm(_neg_entropy(test_probs).unsqueeze(1), test_probs, log_q.T, alpha=-1.0)  # (N, M)


def multi_level_similarity(
    test_features: Tensor,
    cache_keys: Tensor,
    class_weights: Tensor,
    temperature: float = 10.0,
    eps: float = 1e-8,
) -> Tensor:
    """Multi-level similarity measure A (TFUP sec. 3.3): feature cosine times a semantic weight.

    p_i = softmax(t f_i W^T), q_j = softmax(t k_j W^T), D_ij = KL(p_i || q_j). Per test row i the authors
    z-score D_i. over j and then min-max it to [0, 1]; since a z-score is an increasing affine map (when
    the row's std > 0), the min-max of the z-score equals the min-max of D itself, which is what we
    compute. S_ij = 2 (1 - minmax_j(D_ij)) lies in [0, 2]; A_ij = cos(f_i, k_j) * S_ij.
    A row whose D is constant carries no semantic information; there the authors' code divides by 0
    (NaN), and we set S_ij = 1 (the row's cosine is kept as it is).

    Args:
        test_features: (N, D); cache_keys: (M, D); class_weights: (C, D); temperature: t > 0 (10 as the authors).
    Returns:
        (N, M) affinities.
    """
    check_positive("temperature", temperature)
    _check_same_dim(test_features, cache_keys, class_weights)
    f = F.normalize(test_features, dim=-1)
    k = F.normalize(cache_keys, dim=-1)
    w = F.normalize(class_weights, dim=-1)
    p = torch.softmax(temperature * f @ w.T, dim=-1)  # (N, C)
    q = torch.softmax(temperature * k @ w.T, dim=-1)  # (M, C)
    d = semantic_kl(p, q)  # (N, M), a fresh tensor: transformed in place below
    lo, hi = d.aminmax(dim=1, keepdim=True)  # (N, 1) each
    span = hi - lo
    informative = span > eps
    # S = 2 - 2 (d - lo) / span on informative rows, S = 1 on constant rows; three in-place passes
    neg_scale = torch.where(informative, -2.0 / span.clamp_min(eps), torch.zeros_like(span))  # (N, 1)
    offset = torch.where(informative, torch.full_like(span, 2.0), torch.ones_like(span))  # (N, 1)
    semantic = d.sub_(lo).mul_(neg_scale).add_(offset)  # (N, M)
    return semantic.mul_(f @ k.T)  # (N, M) A = cos * S


def cache_logits(affinity: Tensor, cache_values: Tensor, beta: float = 1.0) -> Tensor:
    """Tip-Adapter's kernel: exp(-beta (1 - A)) L.  affinity (N, M), cache_values (M, C) one-hot -> (N, C).

    ``beta`` >= 0 (0: every cache entry weighs 1)."""
    check_non_negative("beta", beta)
    if affinity.shape[-1] != cache_values.shape[0]:
        raise ConfigError(
            f"affinity has {affinity.shape[-1]} cache columns but cache_values {cache_values.shape[0]} rows",
            argument="cache_values",
        )
    return torch.exp(-beta * (1.0 - affinity)) @ cache_values.to(affinity.dtype)  # (N, C)


def tfup_logits(
    test_features: Tensor,
    class_weights: Tensor,
    cache_keys: Tensor,
    cache_values: Tensor,
    alpha: float = 0.3,
    beta: float = 1.0,
    logit_scale: float = 100.0,
    temperature: float = 10.0,
    similarity: str = "msm",
    chunk_size: int = 4096,
) -> Tensor:
    """Residual TFUP prediction: s f W^T + alpha exp(-beta (1 - A)) L (TFUP eq. for the final logits).

    ``similarity="msm"`` uses the multi-level similarity (TFUP); ``"cosine"`` uses A = f k^T, which is
    Tip-Adapter's cache (with labelled shots as keys). Rows are processed in chunks of ``chunk_size`` so
    the (N, M) affinity never exists whole.

    Shapes: test_features (N, D), class_weights (C, D), cache_keys (M, D), cache_values (M, C) -> (N, C).
    Ranges: alpha, beta >= 0; logit_scale, temperature > 0; chunk_size an int >= 1.
    """
    check_choice("similarity", similarity, ("msm", "cosine"))
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    check_positive("logit_scale", logit_scale)
    check_positive("temperature", temperature)
    check_int("chunk_size", chunk_size, low=1)
    _check_same_dim(test_features, cache_keys, class_weights)
    for name, tensor in (("test_features", test_features), ("cache_keys", cache_keys), ("class_weights", class_weights)):
        if not torch.isfinite(tensor).all():
            raise ConfigError(f"{name} must be finite, got NaN or inf values", argument=name)
    if cache_values.dim() != 2 or cache_keys.shape[0] != cache_values.shape[0]:
        raise ConfigError(
            f"cache_values must be (M, C) with M = {cache_keys.shape[0]} cache_keys rows, got {tuple(cache_values.shape)}",
            argument="cache_values",
        )
    if cache_values.shape[1] != class_weights.shape[0]:
        raise ConfigError(
            f"cache_values has {cache_values.shape[1]} classes but class_weights {class_weights.shape[0]}",
            argument="cache_values",
        )
    w = F.normalize(class_weights, dim=-1)
    k = F.normalize(cache_keys, dim=-1)
    out = []
    for start in range(0, test_features.shape[0], chunk_size):
        f = F.normalize(test_features[start : start + chunk_size], dim=-1)  # (n, D)
        if similarity == "msm":
            affinity = multi_level_similarity(f, k, w, temperature)  # (n, M)
        else:
            affinity = f @ k.T  # (n, M)
        kernel = affinity.mul_(beta).sub_(beta).exp_()  # exp(-beta (1 - A)) in place, (n, M)
        out.append(torch.addmm(logit_scale * f @ w.T, kernel, cache_values.to(kernel.dtype), alpha=alpha))  # (n, C)
    return torch.cat(out)  # (N, C)


def marginal_entropy(logits: Tensor) -> Tensor:
    """H(mean_i softmax(logits_i)): entropy of the batch's marginal prediction (POUF; TFUP-T's term).

    TFUP-T minimises -H so the batch prediction stays spread over classes. logits (B, C) -> scalar.
    """
    if logits.dim() != 2:
        raise ConfigError(f"logits must be (B, C), got shape {tuple(logits.shape)}", argument="logits")
    marginal = torch.softmax(logits, dim=-1).mean(0)  # (C,)
    return -(marginal * torch.log(marginal.clamp_min(1e-12))).sum()
