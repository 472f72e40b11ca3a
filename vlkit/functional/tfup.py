"""TFUP: Training-Free Unsupervised Prompt (Long et al., arXiv 2404.16339), and the Tip-Adapter kernel
it shares (Zhang et al., ECCV 2022, eq. 6).

Notation: N test samples, M cache entries (K per class x C classes), C classes, D feature dim.
All features are L2-normalised before use; W (C, D) are the text class weights.

Inference is split in two: :func:`prepare_tfup_cache` does everything that depends on the cache only (once
per cache: normalisation, finiteness checks, the cache-side softmax, the class layout of the values), and
:func:`prepared_tfup_logits` scores test features in row chunks against it, so memory beyond the inputs and
the (N, C) output stays flat in N. :func:`select_confident_prototypes_from_features` streams the selection
the same way.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from vlkit.errors import ConfigError, check_choice, check_int, check_non_negative, check_number, check_positive

__all__ = [
    "tfup_cache_shots",
    "select_confident_prototypes",
    "select_confident_prototypes_from_features",
    "semantic_kl",
    "multi_level_similarity",
    "cache_logits",
    "PreparedTFUPCache",
    "prepare_tfup_cache",
    "prepared_tfup_logits",
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
    return _keep_prototypes(cand, probs[cand], shots)  # probs[cand]: (C, S, C) candidate probability rows


def _keep_prototypes(cand: Tensor, p: Tensor, shots: int) -> Tensor:
    """The prototype step: in each class's candidate set keep the ``shots`` rows with the lowest summed KL.

    cand (C, S) sample indices, p (C, S, C) their probability rows -> (C, K) indices ordered by score."""
    set_size = cand.shape[1]
    log_sum = torch.log(p.clamp_min(1e-12)).sum(1, keepdim=True)  # (C, 1, C) sum_k log p_k
    score = set_size * _neg_entropy(p) - (p * log_sum).sum(-1)  # (C, S)
    keep = score.topk(shots, dim=1, largest=False).indices  # (C, K)
    return torch.gather(cand, 1, keep)  # (C, K)


def select_confident_prototypes_from_features(
    features: Tensor,
    class_weights: Tensor,
    shots: int,
    temperature: float = 10.0,
    candidates_per_shot: int = 2,
    chunk_size: int = 8192,
) -> Tensor:
    """:func:`select_confident_prototypes` on p = softmax(t normalize(f) W^T), streamed over row chunks.

    The (N, C) probability matrix never exists whole: each chunk's per-class top-S rows are merged into a
    running top-S (S = ``candidates_per_shot * shots``), and only the C*S candidate rows are scored, so the
    memory beyond the input is O(chunk_size * C + C * S * C) at any N (TFUP's selection at N = 1M rows).
    ``class_weights`` are used as given (the zero-shot head's unit rows), as in the authors' selection.

    Args:
        features: (N, D) test features (normalised here, per chunk).
        class_weights: (C, D) text class weights.
        shots: K, an int >= 1 and <= N.
        temperature: t > 0 (10 as the authors).
        candidates_per_shot: candidate-set size per shot, an int >= 1 (2 as the authors).
        chunk_size: rows per chunk, an int >= 1.
    Returns:
        (C, K) long indices into the N rows; row c holds class c's selection, ordered by score (as
        :func:`select_confident_prototypes` on the full matrix, up to the order of exactly tied rows).
    """
    for name, tensor in (("features", features), ("class_weights", class_weights)):
        if tensor.dim() != 2:
            raise ConfigError(f"{name} must be 2-D (rows, D), got shape {tuple(tensor.shape)}", argument=name)
    if features.shape[1] != class_weights.shape[1]:
        raise ConfigError(
            f"features have dimension {features.shape[1]} but class_weights {class_weights.shape[1]}",
            argument="class_weights",
        )
    check_int("shots", shots, low=1)
    check_positive("temperature", temperature)
    check_int("candidates_per_shot", candidates_per_shot, low=1)
    check_int("chunk_size", chunk_size, low=1)
    n = features.shape[0]
    if n < shots:
        raise ConfigError(f"shots={shots} per class needs at least {shots} samples, got N={n}", argument="shots")
    if not torch.isfinite(class_weights).all():
        raise ConfigError("class_weights must be finite, got NaN or inf values", argument="class_weights")
    _check_finite_rows("features", features, chunk_size)
    set_size = min(n, candidates_per_shot * shots)

    def probabilities(rows: Tensor) -> Tensor:
        return torch.softmax(temperature * F.normalize(rows, dim=-1) @ class_weights.T, dim=-1)  # (n, C)

    top_values = top_index = None
    for start in range(0, n, chunk_size):
        probs = probabilities(features[start : start + chunk_size])  # (n, C)
        values, index = probs.topk(min(set_size, probs.shape[0]), dim=0)  # (s, C) each
        index += start
        if top_values is not None:  # merge with the running top-S: (S + s, C) -> (S, C)
            values, index = torch.cat([top_values, values]), torch.cat([top_index, index])
            values, keep = values.topk(min(set_size, values.shape[0]), dim=0)
            index = index.gather(0, keep)
        top_values, top_index = values, index
    cand = top_index.T.contiguous()  # (C, S) candidate indices per class, by decreasing p[:, c]
    p = probabilities(features[cand.flatten()]).view(*cand.shape, -1)  # (C, S, C) candidate probability rows
    return _keep_prototypes(cand, p, shots)


def _check_finite_rows(name: str, tensor: Tensor, chunk_size: int = 65536) -> None:
    """Every element finite, checked chunk by chunk with one cheap pass (row sums: NaN or inf in a row makes its
    sum non-finite); only a suspicious chunk gets the exact element test. The error counts the bad values."""
    for start in range(0, tensor.shape[0], chunk_size):
        rows = tensor[start : start + chunk_size]
        if not torch.isfinite(rows.sum(dim=-1)).all() and not torch.isfinite(rows).all():
            bad = sum(int((~torch.isfinite(tensor[s : s + chunk_size])).sum()) for s in range(0, tensor.shape[0], chunk_size))
            raise ConfigError(
                f"{name} must be finite, got {bad} NaN or inf values in a tensor of shape {tuple(tensor.shape)}",
                argument=name,
            )


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


_LOG2_E = 1.0 / math.log(2.0)  # exp(x) = 2 ** (x log2 e): exp2 is the cheaper kernel on CPU


class _Workspace:
    """The (rows, M) work memory of :func:`prepared_tfup_logits`, kept from one call to the next on one cache (CPU).

    Fresh buffers of this size come from the OS on every call (glibc maps allocations this large afresh), and
    touching their pages the first time costs about as much as all the element-wise passes over them.
    A call that finds the workspace busy (another thread scoring with the same cache) takes fresh memory;
    a copied or pickled cache starts with an empty workspace. CUDA's caching allocator already reuses memory,
    so GPU calls do not use it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.memory: Tensor | None = None

    def __reduce__(self):
        return (_Workspace, ())


@contextmanager
def _work_memory(workspace: _Workspace, numel: int, like: Tensor):
    """A flat tensor of ``numel`` elements (``like``'s dtype and device): the workspace's when it is free."""
    if like.device.type != "cpu" or not workspace.lock.acquire(blocking=False):
        yield like.new_empty(numel)
        return
    try:
        memory = workspace.memory
        if memory is None or memory.numel() < numel or memory.dtype != like.dtype:
            workspace.memory = None  # drop the old buffer before allocating the new one
            memory = workspace.memory = like.new_empty(numel)
        yield memory[:numel]
    finally:
        workspace.lock.release()


@dataclass(frozen=True)
class PreparedTFUPCache:
    """A TFUP / Tip-Adapter cache set up once for scoring (made by :func:`prepare_tfup_cache`).

    Cache entries may be reordered (the kernel's per-class sum does not depend on their order).

    Attributes:
        class_weights: (C, D) W with unit rows.
        keys: (M, D) cache keys with unit rows.
        log_probs_t: (C', M) log q^T, q_j = softmax(t k_j W^T) (``similarity="msm"``), zero rows appended
            up to C' = C rounded up to a multiple of 16 (a product with such an inner size runs at full speed
            on CPU BLAS); None for cosine.
        shots_per_class: K > 0 when the values are one-hot with K entries per class, laid out shot-major
            (entry s * C + c is class c's s-th shot): the per-class sum is a (n, K, C) reshape; else 0.
        entry_class: (M,) class of each entry when the values are one-hot with unequal counts (summed
            with ``index_add_``); else None.
        values: (M, C) the values when they are not one-hot (a matmul); else None.
        temperature: t of the MSM probabilities.
        similarity: ``"msm"`` or ``"cosine"``.
        workspace: work memory reused by the calls scoring against this cache (on CPU; at most 30 MiB with the
            default chunks, held as long as the cache).
    """

    class_weights: Tensor
    keys: Tensor
    log_probs_t: Tensor | None
    shots_per_class: int
    entry_class: Tensor | None
    values: Tensor | None
    temperature: float
    similarity: str
    workspace: _Workspace = field(default_factory=_Workspace, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        """C."""
        return self.class_weights.shape[0]


def prepare_tfup_cache(
    class_weights: Tensor, cache_keys: Tensor, cache_values: Tensor, temperature: float = 10.0, similarity: str = "msm"
) -> PreparedTFUPCache:
    """The once-per-cache part of :func:`tfup_logits`: checks, normalisation, the cache softmax, the class layout.

    Args:
        class_weights: (C, D) text class weights.
        cache_keys: (M, D) cache features.
        cache_values: (M, C) cache labels, one-hot (TFUP's pseudo-labels, Tip-Adapter's shots) or soft.
        temperature: t > 0 of the MSM probabilities (10 as the authors).
        similarity: ``"msm"`` (TFUP's multi-level similarity) or ``"cosine"`` (Tip-Adapter).
    Returns:
        :class:`PreparedTFUPCache`, in the floating dtype the keys and weights promote to.
    """
    check_choice("similarity", similarity, ("msm", "cosine"))
    check_positive("temperature", temperature)
    for name, tensor in (("cache_keys", cache_keys), ("class_weights", class_weights)):
        if tensor.dim() != 2:
            raise ConfigError(f"{name} must be 2-D (rows, D), got shape {tuple(tensor.shape)}", argument=name)
    if cache_keys.shape[1] != class_weights.shape[1]:
        raise ConfigError(
            f"cache_keys and class_weights must share the feature dim D, got {cache_keys.shape[1]} and "
            f"{class_weights.shape[1]}",
            argument="cache_keys",
        )
    if cache_values.dim() != 2 or cache_keys.shape[0] != cache_values.shape[0]:
        raise ConfigError(
            f"cache_values must be (M, C) with M = {cache_keys.shape[0]} cache_keys rows, got {tuple(cache_values.shape)}",
            argument="cache_values",
        )
    if cache_keys.shape[0] == 0:
        raise ConfigError("cache_keys must hold at least one cache entry, got 0 rows", argument="cache_keys")
    num_classes = class_weights.shape[0]
    if cache_values.shape[1] != num_classes:
        raise ConfigError(
            f"cache_values has {cache_values.shape[1]} classes but class_weights {num_classes}", argument="cache_values"
        )
    dtype = torch.promote_types(class_weights.dtype, cache_keys.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    keys = cache_keys.to(dtype)
    norms = torch.linalg.vector_norm(keys, dim=-1, keepdim=True)  # (M, 1), reused for the unit rows below
    if not bool(torch.isfinite(norms).all()):  # NaN or inf in a row makes its norm non-finite (one pass, no mask)
        _check_finite_rows("cache_keys", cache_keys)
    _check_finite_rows("class_weights", class_weights)
    w = F.normalize(class_weights.to(dtype), dim=-1)  # (C, D)
    shots, entry_class, values = 0, None, None
    # one-hot: entries >= 0 with max 1 and sum 1 (three fast row reductions, no (M, C) mask); such values are finite
    if bool((cache_values.amax(1) == 1).all() & (cache_values.amin(1) >= 0).all() & (cache_values.sum(1) == 1).all()):
        exact = cache_values if cache_values.dtype in (torch.float32, torch.float64) else cache_values.double()
        # the label of each one-hot row as sum_c c v_jc: one matrix-vector product (a row argmax is ~10x slower)
        classes = torch.arange(num_classes, dtype=exact.dtype, device=exact.device)  # (C,)
        labels = torch.mv(exact, classes).round_().long()  # (M,)
        counts = torch.bincount(labels, minlength=num_classes)  # (C,)
        if int(counts.min()) == int(counts.max()):
            shots = int(counts[0])
            order = labels.argsort(stable=True).view(num_classes, shots).T.reshape(-1)  # (K*C,) shot-major
            keys, norms = keys.index_select(0, order), norms.index_select(0, order)  # (M, D), entry s * C + c
        else:
            entry_class = labels
    else:
        _check_finite_rows("cache_values", cache_values)
        values = cache_values.to(dtype)  # (M, C)
    norms.clamp_min_(1e-12)  # as F.normalize
    keys = keys.div_(norms) if keys is not cache_keys else keys / norms  # unit rows; never in place on the caller's
    log_probs_t = None
    if similarity == "msm":
        # log q^T = log clamp(softmax(t K W^T), 1e-12)^T (as multi_level_similarity), made as (C, M) directly:
        # log_softmax over the classes, clamped at log(1e-12) (log is increasing, so the clamp commutes)
        log_probs_t = keys.new_empty(-(-num_classes // 16) * 16, keys.shape[0])  # (C', M)
        log_probs_t[num_classes:].zero_()  # the padded rows stay 0
        scores = torch.mm(temperature * w, keys.T)  # (C, M) t w_c . k_j
        torch.log_softmax(scores, dim=0, out=log_probs_t[:num_classes]).clamp_min_(math.log(1e-12))
    return PreparedTFUPCache(w, keys, log_probs_t, shots, entry_class, values, float(temperature), similarity)


_WORKSPACE_BYTES = 30 << 20  # work memory of one call: glibc's malloc keeps a freed block of up to 32 MiB for the
# next call (larger ones go back to the OS, and their pages fault in again on every call)


def _default_chunk_rows(num_rows: int, row_bytes: int) -> int:
    """Rows per chunk: as many as fit the 30 MiB workspace (667 at M = 5,520 for the MSM in float32; on one CPU
    thread the matrix products lose speed below ~512 rows), 64 to 4096, balanced so the last chunk is not small."""
    most = max(64, min(4096, _WORKSPACE_BYTES // max(1, row_bytes)))
    chunks = max(1, -(-num_rows // most))
    return max(1, -(-num_rows // chunks))  # ceil(N / chunks)


_BLOCK_ELEMENTS = 3 << 19  # element-wise passes run on (rows, M) blocks of ~1.5M elements: two such float32 blocks
# (the kernel and the cross term, 12 MB) stay in a CPU's last-level cache between passes, where whole chunks
# (2 x 15 MB at 667 rows) would go to DRAM on every pass


def _add_class_sums(logits: Tensor, kernel: Tensor, cache: PreparedTFUPCache, weight: float) -> None:
    """logits += weight * kernel L for the cache's values L (M, C): a per-class sum when they are one-hot.

    logits (n, C) written in place; kernel (n, M)."""
    if cache.shots_per_class:
        sums = kernel.view(-1, cache.shots_per_class, cache.num_classes).sum(1)  # (n, K, C) -> (n, C)
        logits.add_(sums, alpha=weight)
    elif cache.entry_class is not None:
        logits.add_(torch.zeros_like(logits).index_add_(1, cache.entry_class, kernel), alpha=weight)  # (n, C)
    else:
        logits.addmm_(kernel, cache.values, alpha=weight)  # (n, M) @ (M, C)


def prepared_tfup_logits(
    test_features: Tensor,
    cache: PreparedTFUPCache,
    alpha: float = 0.3,
    beta: float = 1.0,
    logit_scale: float = 100.0,
    chunk_size: int | None = None,
) -> Tensor:
    """TFUP's residual logits s f W^T + alpha exp(-beta (1 - A)) L against a :func:`prepare_tfup_cache` cache.

    Per chunk of rows: three matrix products (f W^T, p (log q)^T for the MSM, then f K^T) and, on cache-sized
    row blocks of the (n, M) results, two reductions and four element-wise passes (work buffers reused across
    chunks and, on CPU, across calls on one cache: ``cache.workspace``). The MSM needs only the cross term
    c_ij = p_i . log q_j: KL(p_i || q_j) = sum p_i log p_i - c_ij, and the row constant cancels in the min-max,
    so S_ij = 2 - 2 minmax_j(KL_ij) = 2 (c_ij - min_j c_ij) / span_i,
    span_i = max_j c_ij - min_j c_ij (S = 1 on rows whose KL is constant, as :func:`multi_level_similarity`; here
    constant up to float rounding). The exponent beta A_ij = cos_ij S_ij beta is a_i cos_ij (c_ij - min_j c_ij)
    with a_i = 2 beta / span_i: a_i scales the row f_i before the f K^T product (no pass over the block), and
    exp(-beta) moves onto the (n, C) sums. The one-hot ``kernel @ L`` is a per-class sum.

    Args:
        test_features: (N, D).
        cache: the prepared cache (C classes, M entries, the same D).
        alpha: residual weight of the cache, >= 0. beta: kernel sharpness, >= 0.
        logit_scale: s > 0.
        chunk_size: rows per chunk, an int >= 1; None picks equal chunks whose work memory fits 30 MiB (memory
            is O(chunk * M) at any N).
    Returns:
        (N, C) logits, equal to :func:`tfup_logits` (up to float rounding).
    """
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    check_positive("logit_scale", logit_scale)
    check_int("chunk_size", chunk_size, low=1, allow_none=True)
    if test_features.dim() != 2 or test_features.shape[1] != cache.keys.shape[1]:
        raise ConfigError(
            f"test_features must be (N, D) with the cache's D = {cache.keys.shape[1]}, got shape "
            f"{tuple(test_features.shape)}",
            argument="test_features",
        )
    num_entries, msm = cache.keys.shape[0], cache.log_probs_t is not None
    padded = cache.log_probs_t.shape[0] if msm else 0  # C'
    row_elements = num_entries + msm * (num_entries + padded + 2)  # kernel, cross, probs, high, low
    rows = chunk_size or _default_chunk_rows(test_features.shape[0], row_elements * cache.keys.element_size())
    _check_finite_rows("test_features", test_features, rows)
    dtype, num_classes, n_total = cache.keys.dtype, cache.num_classes, test_features.shape[0]
    out = torch.empty(n_total, num_classes, dtype=dtype, device=test_features.device)  # (N, C)
    # work buffers reused by every chunk (and, on CPU, by the next call on this cache): memory O(rows * M) at any N
    rows = min(rows, max(1, n_total))
    block = max(1, _BLOCK_ELEMENTS // num_entries)  # rows per element-wise block
    sizes = (rows * num_entries, rows * num_entries * msm, rows * padded, rows * msm, rows * msm)
    scale = beta * _LOG2_E  # exp(beta (A - 1)) = exp2(beta log2(e) (A - 1))
    # exp(beta (A - 1)) = exp2(scale A) 2^-scale: with |A| <= 2, exp2(scale A) stays in float range while
    # 2 scale <= 120, so the factor 2^-scale moves onto the (n, C) sums (one pass less over the (n, M) block)
    folded = 2.0 * scale <= 120.0
    weight = alpha * 2.0 ** (-scale) if folded else alpha
    keys_t = cache.keys.T  # (D, M) view
    with _work_memory(cache.workspace, sum(sizes), out) as memory:
        kernel_buffer, cross_buffer, probs_buffer, high, low = memory.split(sizes)
        kernel_buffer = kernel_buffer.view(rows, num_entries)  # (rows, M)
        if msm:
            cross_buffer = cross_buffer.view(rows, num_entries)  # (rows, M)
            probs_buffer = probs_buffer.view(rows, padded)  # (rows, C')
            probs_buffer[:, num_classes:].zero_()  # the padded columns stay 0
            high, low = high.view(rows, 1), low.view(rows, 1)  # (rows, 1) row max / min of the cross term
        for start in range(0, n_total, rows):
            f = F.normalize(test_features[start : start + rows].to(dtype), dim=-1)  # (n, D), a fresh tensor
            n = f.shape[0]
            logits = out[start : start + n]  # (n, C) view, written in place
            text = torch.mm(f, cache.class_weights.T)  # (n, C) cos(f, w)
            torch.mul(text, logit_scale, out=logits)
            if msm:
                p = probs_buffer[:n]  # (n, C')
                p[:, :num_classes] = torch.softmax(text.mul_(cache.temperature), dim=-1)  # (n, C)
                cross = torch.mm(p, cache.log_probs_t, out=cross_buffer[:n])  # (n, M) c_ij = p_i . log q_j
                hi, lo = high[:n], low[:n]  # (n, 1) each
                for s in range(0, n, block):  # both reductions on one block while it is in cache
                    torch.amax(cross[s : s + block], 1, keepdim=True, out=hi[s : s + block])
                    torch.amin(cross[s : s + block], 1, keepdim=True, out=lo[s : s + block])
                span = hi - lo  # (n, 1)
                # a row whose KL is constant up to float rounding (the matrix product need not give equal columns
                # bit for bit) carries no semantic information: spread below 1e-5 of its size counts as constant
                informative = span > 1e-5 * torch.maximum(hi.abs(), lo.abs()) + 1e-8  # (n, 1)
                # scale A = a cos (c - lo), a = 2 scale / span; on constant rows S = 1: a = scale, c - lo := 1
                f.mul_(torch.where(informative, 2.0 * scale / span.clamp_min(1e-8), torch.full_like(span, scale)))
                if not bool(informative.all()):  # rare: reset the constant rows (a pass over those rows only)
                    constant = ~informative.squeeze(1)  # (n,)
                    cross[constant] = 1.0
                    lo[constant] = 0.0
            else:
                f.mul_(scale)  # scale A = (scale f) . k, A = cos
            kernel = torch.mm(f, keys_t, out=kernel_buffer[:n])  # (n, M) scale cos(f, k), times a_i for the MSM
            for s in range(0, n, block):
                part = kernel[s : s + block]  # (b, M)
                if msm:
                    part.mul_(cross[s : s + block].sub_(lo[s : s + block]))  # (b, M) scale A
                if not folded:
                    part.sub_(scale)
                part.exp2_()  # (b, M) exp(beta A), or exp(-beta (1 - A)) when not folded
                _add_class_sums(logits[s : s + block], part, cache, weight)
    return out


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
    chunk_size: int | None = None,
) -> Tensor:
    """Residual TFUP prediction: s f W^T + alpha exp(-beta (1 - A)) L (TFUP eq. for the final logits).

    ``similarity="msm"`` uses the multi-level similarity (TFUP); ``"cosine"`` uses A = f k^T, which is
    Tip-Adapter's cache (with labelled shots as keys). Rows are processed in chunks of ``chunk_size`` so
    the (N, M) affinity never exists whole. One call = :func:`prepare_tfup_cache` then
    :func:`prepared_tfup_logits`; prepare once to score several batches against one cache.

    Shapes: test_features (N, D), class_weights (C, D), cache_keys (M, D), cache_values (M, C) -> (N, C).
    Ranges: alpha, beta >= 0; logit_scale, temperature > 0; chunk_size an int >= 1 or None (auto).
    """
    check_choice("similarity", similarity, ("msm", "cosine"))
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    check_positive("logit_scale", logit_scale)
    check_positive("temperature", temperature)
    check_int("chunk_size", chunk_size, low=1, allow_none=True)
    _check_same_dim(test_features, cache_keys, class_weights)
    cache = prepare_tfup_cache(class_weights, cache_keys, cache_values, temperature, similarity)
    return prepared_tfup_logits(test_features, cache, alpha, beta, logit_scale, chunk_size)


def marginal_entropy(logits: Tensor) -> Tensor:
    """H(mean_i softmax(logits_i)): entropy of the batch's marginal prediction (POUF; TFUP-T's term).

    TFUP-T minimises -H so the batch prediction stays spread over classes. logits (B, C) -> scalar.
    """
    if logits.dim() != 2:
        raise ConfigError(f"logits must be (B, C), got shape {tuple(logits.shape)}", argument="logits")
    marginal = torch.softmax(logits, dim=-1).mean(0)  # (C,)
    return -(marginal * torch.log(marginal.clamp_min(1e-12))).sum()
