"""Entropy signals of ARES (Adaptive Entropy Policy Optimisation), as pure tensor functions.

Paper: "ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy Shaping"
(arXiv 2510.08457). Code read: github.com/shawn0728/ARES (EasyR1 fork). Equations restated, none copied.

Shapes: B sequences (= n_groups x G), G group size, T completion tokens, V vocabulary, W window.
Difficulty buckets are integers: 0 = easy, 1 = medium, 2 = hard (``BUCKET_NAMES``).

Contents
- ``token_entropy``: exact full-vocabulary entropy H_t = -sum_j p_tj log p_tj from logits (the authors
  approximate it from vLLM's top-10 log-probs), via ``logsumexp_and_entropy``: one chunked pass over the
  logits that yields the log-softmax normaliser (which the sampled tokens' log-probs need,
  ``vlkit.functional.policy.sampled_token_logprobs_and_entropy``) and the entropy together, so that the
  extra memory is O(chunk_size x V) whatever the number of tokens; ``token_chunks`` tiles the tokens.
- ``window_entropy``: mean entropy over the w tokens after t (authors' code) or starting at t (paper).
- ``response_entropy_threshold`` / ``update_hwe_threshold``: the per-response 95th percentile of the
  window entropy and the global threshold tau <- 0.99 tau + 0.01 median(batch), as the authors track it.
- ``hwe_token_mask``: high window-entropy (HWE) tokens, optionally restricted to trigger-word tokens.
- ``difficulty_buckets``: easy/medium/hard from a group's pass rate (edges 2/3 and 1/3).
- ``bucket_mean``, ``bucket_targets``, ``update_entropy_alpha``: per-bucket HWE targets and alpha.
- ``hierarchical_entropy_reward``: the difficulty- and correctness-dependent entropy reward r_H.
- ``update_kl_controller``: the per-bucket ("dynamic") KL coefficient controller.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int, check_non_negative, check_number, check_positive, check_probability

__all__ = [
    "BUCKET_NAMES",
    "EASY",
    "MEDIUM",
    "HARD",
    "DEFAULT_CHUNK_TOKENS",
    "token_chunks",
    "logsumexp_and_entropy",
    "token_entropy",
    "window_entropy",
    "response_entropy_threshold",
    "update_hwe_threshold",
    "hwe_token_mask",
    "difficulty_buckets",
    "bucket_mean",
    "bucket_targets",
    "update_entropy_alpha",
    "huber",
    "hierarchical_entropy_reward",
    "update_kl_controller",
]

BUCKET_NAMES = ("easy", "medium", "hard")
EASY, MEDIUM, HARD = 0, 1, 2

# Authors' reward constants per bucket (easy, medium, hard), from examples/reward_function/aepo.py.
MARGIN_FRACTION = (0.15, 0.25, 0.35)  # f_d: margin m = max(1, f_d * max(target, 1))
HUBER_KAPPA = (2.0, 3.0, 4.0)  # kappa_d of the Huber penalty
SIGMOID_TEMPERATURE = (2.0, 2.5, 3.0)  # s_d of sigma_s(x) = 1 / (1 + exp(-x / s))
CAP_SCALE = (1.0, 1.0, 1.2)  # cap = alpha_d * CAP_SCALE[d]
WRONG_BONUS = (0.6, 0.8, 1.0)  # wrong answers: + WRONG_BONUS[d] * cap * sigma_s(max(delta - m, 0))


# Tokens per chunk of the log-softmax passes: 32 x V float32 (6 MB at V = 49,152) stays in a CPU's L3
# cache between the passes over a chunk, and the extra memory is 32 / (B x T) of the (B, T, V) logits.
DEFAULT_CHUNK_TOKENS = 32


def token_chunks(batch: int, length: int, chunk_size: int) -> Iterator[tuple[slice, slice]]:
    """Tile a (batch, length) grid of token positions into chunks of at most ``chunk_size`` tokens.

    Whole sequences are grouped while they fit (rows b0:b1, all positions); a sequence longer than
    ``chunk_size`` is cut along its positions (row b, positions t0:t1). Indexing a (B, T, V) tensor with a
    chunk's two slices is a view (no copy), also when the logits are a slice ``logits[:, P - 1 : -1]`` of a
    longer forward, which ``reshape(-1, V)`` would copy whole.

    Args:
        batch: B, the number of sequences (>= 0).
        length: T, the positions per sequence (>= 0).
        chunk_size: the most tokens in one chunk, an int >= 1.

    Yields:
        (rows, positions) slices; together they cover every (b, t) exactly once, in order.
    """
    check_int("chunk_size", chunk_size, low=1)
    if length == 0:
        return
    if chunk_size >= length:
        step = chunk_size // length  # whole sequences per chunk
        for b in range(0, batch, step):
            yield slice(b, b + step), slice(0, length)
        return
    for b in range(batch):
        for t in range(0, length, chunk_size):
            yield slice(b, b + 1), slice(t, t + chunk_size)


@torch.no_grad()
def logsumexp_and_entropy(
    logits: Tensor, chunk_size: int = DEFAULT_CHUNK_TOKENS, with_entropy: bool = True
) -> tuple[Tensor, Tensor | None]:
    """The log-softmax normaliser and the exact entropy of every position, in one chunked pass.

    Per position, with m = max_j z_j and e_j = exp(z_j - m), s = sum_j e_j:
    logsumexp(z) = m + log s (so log p_j = z_j - logsumexp(z)) and
    H = -sum_j p_j log p_j = logsumexp(z) - sum_j p_j z_j = log s - (sum_j e_j z_j / s - m).
    Each chunk of ``chunk_size`` tokens is read once into one float32 (chunk, V) buffer that serves both
    (an exponential of -inf contributes 0, not NaN). No gradient: the entropy is a detached signal in
    ARES (the HWE threshold and counts, the top-entropy token selection); the log-probs' gradient is
    :func:`vlkit.functional.policy.sampled_token_logprobs_and_entropy`'s own backward.

    Args:
        logits: (B, T, V) unnormalised scores, any float dtype, any strides (a slice of a longer forward is
            fine: chunks are views).
        chunk_size: tokens per chunk, an int >= 1; the extra memory is at most chunk_size x V float32 values
            (twice that for non-float32 logits, whose chunk is upcast first).
        with_entropy: False skips the entropy (then only the normaliser is computed, one pass fewer).

    Returns:
        (logsumexp (B, T), entropy (B, T) in nats or None), float32.
    """
    check_int("chunk_size", chunk_size, low=1)
    if logits.dim() != 3:
        raise ConfigError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}", argument="logits")
    B, T, _ = logits.shape
    lse = torch.empty(B, T, dtype=torch.float32, device=logits.device)  # (B, T)
    entropy = torch.empty_like(lse) if with_entropy else None  # (B, T)
    for rows, positions in token_chunks(B, T, chunk_size):
        z = logits[rows, positions].float()  # (b, t, V) a view when the logits are float32
        peak = z.amax(dim=-1, keepdim=True)  # (b, t, 1)
        e = torch.sub(z, peak).exp_()  # (b, t, V) the one chunk buffer
        total = e.sum(dim=-1)  # (b, t)
        log_total, peak = total.log(), peak.squeeze(-1)  # (b, t) each
        lse[rows, positions] = peak + log_total
        if entropy is not None:
            weighted = e.mul_(z).nan_to_num_(nan=0.0).sum(dim=-1)  # (b, t) sum_j e_j z_j; 0 * -inf -> 0
            entropy[rows, positions] = log_total - (weighted / total - peak)
        del e  # before the next chunk's buffer is allocated: one buffer alive at a time
    return lse, entropy


def token_entropy(logits: Tensor, chunk_size: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """Exact entropy of the full next-token distribution, H = logsumexp(z) - sum_j softmax(z)_j z_j.

    The same chunked pass as the policy loss's log-probs (:func:`logsumexp_and_entropy`); use
    :func:`vlkit.functional.policy.sampled_token_logprobs_and_entropy` where the log-probs of sampled
    tokens are needed too, so the logits are read once.

    Args:
        logits: (..., V) unnormalised scores (any float dtype; computed in float32).
        chunk_size: tokens (positions) processed at once, so the float32 buffer is at most chunk_size x V.

    Returns:
        (...) entropy in nats, float32, no gradient.
    """
    check_int("chunk_size", chunk_size, low=1)
    if logits.dim() < 1:
        raise ConfigError("logits must have a vocabulary dimension (..., V), got a scalar", argument="logits")
    z = logits.detach()
    if z.dim() == 1:
        z = z.view(1, 1, -1)  # (1, 1, V)
    elif z.dim() == 2:
        z = z.unsqueeze(0)  # (1, N, V)
    else:
        z = z.flatten(0, -3)  # (B, T, V): merges leading dims (a view when they are contiguous)
    return logsumexp_and_entropy(z, chunk_size)[1].view(logits.shape[:-1])


def window_entropy(entropy: Tensor, mask: Tensor, window: int = 4, include_current: bool = False) -> Tensor:
    """Mean entropy of a window of ``window`` tokens at every position.

    ``include_current=False`` (authors' code, ``rollout.window_size=4``): positions t+1 ... t+w;
    ``include_current=True`` (paper's definition): positions t ... t+w-1. Window slots that fall after the
    end of a response are filled with the response's mean entropy (the authors pad with the mean), so
    every valid position has a value; padded positions (mask 0) get 0.

    Args:
        entropy: (B, T) per-token entropy.
        mask: (B, T) 1 for completion tokens (right-padded: valid tokens first).
        window: w >= 1.

    Returns:
        (B, T) window entropy, float32.
    """
    check_int("window", window, low=1)
    if entropy.shape != mask.shape or entropy.dim() != 2:
        raise ConfigError(
            f"entropy and mask must both be (B, T), got {tuple(entropy.shape)} and {tuple(mask.shape)}", argument="mask"
        )
    m = mask.float()  # (B, T)
    h = entropy.float() * m  # (B, T)
    n_valid = m.sum(dim=1, keepdim=True)  # (B, 1)
    mean_h = h.sum(dim=1, keepdim=True) / n_valid.clamp(min=1.0)  # (B, 1)
    shift = 0 if include_current else 1
    B, T = h.shape
    # zero-pad on the right so that every window [t+shift, t+shift+w) is in range, then sum by cumsum
    pad = torch.zeros(B, window + shift, dtype=h.dtype, device=h.device)
    h_pad = torch.cat([h, pad], dim=1)  # (B, T + w + shift)
    m_pad = torch.cat([m, pad], dim=1)  # (B, T + w + shift)
    csum_h = torch.cat([torch.zeros_like(pad[:, :1]), h_pad.cumsum(dim=1)], dim=1)  # (B, T + w + shift + 1)
    csum_m = torch.cat([torch.zeros_like(pad[:, :1]), m_pad.cumsum(dim=1)], dim=1)
    starts = torch.arange(T, device=h.device) + shift  # (T,)
    ends = starts + window  # (T,)
    sum_h = csum_h[:, ends] - csum_h[:, starts]  # (B, T) entropy inside each window
    count = csum_m[:, ends] - csum_m[:, starts]  # (B, T) valid tokens inside each window
    out = (sum_h + (window - count) * mean_h) / window  # (B, T) missing slots filled with the mean
    return out * m


def response_entropy_threshold(window_ent: Tensor, mask: Tensor, quantile: float = 0.95) -> Tensor:
    """Per-response threshold tau_resp: the ``quantile`` of its window entropies (authors: 95th percentile).

    Uses linear interpolation between order statistics (numpy's default percentile).

    Args:
        window_ent: (B, T) window entropy; mask: (B, T) valid tokens.

    Returns:
        (B,) threshold per response; NaN for an empty response.
    """
    check_probability("quantile", quantile)
    if window_ent.shape != mask.shape or window_ent.dim() != 2:
        raise ConfigError(
            f"window_ent and mask must both be (B, T), got {tuple(window_ent.shape)} and {tuple(mask.shape)}",
            argument="mask",
        )
    values = window_ent.float().masked_fill(~mask.bool(), float("nan"))  # (B, T) padding -> NaN
    return torch.nanquantile(values, quantile, dim=1)  # (B,) NaN where a response is empty


def update_hwe_threshold(tau: Tensor, response_thresholds: Tensor, decay: float = 0.99) -> Tensor:
    """Global HWE threshold: tau <- decay * tau + (1 - decay) * median(tau_resp over the batch).

    The median is ``np.median``'s (the mean of the two middle values for an even count), as the authors'.
    A negative tau means "not yet set" (the authors start at -1); it is then set to the batch median
    directly. Empty responses (NaN) are ignored; if all are NaN tau is returned unchanged.

    Args:
        tau: () current threshold. response_thresholds: (B,) from ``response_entropy_threshold``.
    """
    check_probability("decay", decay)
    finite = response_thresholds[torch.isfinite(response_thresholds)]  # (B',)
    if finite.numel() == 0:
        return tau
    # np.median as the authors use it: the mean of the two middle values for an even count (torch.median
    # would return the lower one; batches are prompts x G with G even, so the count is usually even)
    ordered = finite.sort().values  # (B',)
    n = ordered.numel()
    stat = ((ordered[(n - 1) // 2] + ordered[n // 2]) / 2).to(tau.dtype)  # one value twice when n is odd
    return torch.where(tau < 0, stat, decay * tau + (1.0 - decay) * stat)


def hwe_token_mask(
    window_ent: Tensor,
    mask: Tensor,
    threshold: Tensor | float,
    token_ids: Tensor | None = None,
    trigger_ids: Tensor | None = None,
) -> Tensor:
    """High window-entropy tokens: window entropy >= threshold, optionally only at trigger tokens.

    With ``trigger_ids`` the authors' rule applies: a position counts when its token is a reasoning
    trigger word and the window after it is hot. Unlike the authors (argmax of the top-10 dict), the
    token checked is the **sampled** token, ``token_ids``.

    Args:
        window_ent: (B, T); mask: (B, T); threshold: scalar tau.
        token_ids: (B, T) sampled token ids, needed with ``trigger_ids``.
        trigger_ids: (K,) token ids of trigger words (see ``vlkit.models.language.trigger_token_ids``).

    Returns:
        (B, T) bool.
    """
    hot = (window_ent >= threshold) & mask.bool()  # (B, T)
    if trigger_ids is None:
        return hot
    if token_ids is None or token_ids.shape != window_ent.shape:
        raise ConfigError(
            f"token_ids (B, T) matching window_ent {tuple(window_ent.shape)} is required when trigger_ids is given, "
            f"got {None if token_ids is None else tuple(token_ids.shape)}",
            argument="token_ids",
        )
    return hot & torch.isin(token_ids, trigger_ids.to(token_ids.device))  # (B, T)


def difficulty_buckets(
    correct: Tensor, group_size: int, easy_min: float = 2.0 / 3.0, medium_min: float = 1.0 / 3.0
) -> Tensor:
    """Difficulty per group from its pass rate: easy if acc >= 2/3, medium if acc >= 1/3, else hard.

    Args:
        correct: (B,) correctness in [0, 1], groups contiguous (B = n_groups * G).
        group_size: G >= 1.

    Returns:
        (B,) long bucket per sequence (the group's bucket repeated G times).
    """
    check_int("group_size", group_size, low=1)
    if correct.dim() != 1 or correct.numel() % group_size:
        raise ConfigError(
            f"correct must be 1-D with a length divisible by group_size={group_size}, got {tuple(correct.shape)}",
            argument="correct",
        )
    check_probability("easy_min", easy_min)
    check_number("medium_min", medium_min, low=0, high=easy_min)
    acc = correct.float().view(-1, group_size).mean(dim=1)  # (B/G,)
    tol = 1e-6  # 2 of 3 correct is 0.6666667 in float32, and must count as easy
    bucket = torch.full_like(acc, HARD, dtype=torch.long)  # (B/G,)
    bucket[acc >= medium_min - tol] = MEDIUM
    bucket[acc >= easy_min - tol] = EASY
    return bucket.repeat_interleave(group_size)  # (B,)


def bucket_mean(values: Tensor, buckets: Tensor, n_buckets: int = 3) -> tuple[Tensor, Tensor]:
    """Per-bucket sum and count of ``values`` (so that callers can all-reduce before dividing).

    Args:
        values: (B,); buckets: (B,) long in [0, n_buckets).

    Returns:
        sums (n_buckets,) float32 and counts (n_buckets,) float32; mean = sums / counts.
    """
    check_int("n_buckets", n_buckets, low=1)
    if values.dim() != 1 or buckets.shape != values.shape:
        raise ConfigError(
            f"values and buckets must both be (B,), got {tuple(values.shape)} and {tuple(buckets.shape)}", argument="buckets"
        )
    sums = torch.zeros(n_buckets, device=values.device).index_add_(0, buckets, values.float())  # (3,)
    counts = torch.zeros(n_buckets, device=values.device).index_add_(0, buckets, torch.ones_like(values, dtype=torch.float32))
    return sums, counts


def bucket_targets(sums: Tensor, counts: Tensor, previous: Tensor, coefficient: float = 1.0) -> Tensor:
    """HWE-count target per bucket: round(coefficient * mean count of the bucket in this batch).

    Buckets absent from the batch keep their ``previous`` target. (3,) in, (3,) out. ``coefficient`` >= 0.
    """
    check_non_negative("coefficient", coefficient)
    mean = sums / counts.clamp(min=1.0)  # (3,)
    return torch.where(counts > 0, torch.round(coefficient * mean), previous.to(mean.dtype))


def update_entropy_alpha(
    alpha: Tensor, sums: Tensor, counts: Tensor, targets: Tensor, step: float = 0.05, low: float = 0.0, high: float = 2.0
) -> Tensor:
    """alpha_d <- clip(alpha_d + step * Delta_d, low, high); Delta = mean - target (easy, medium),
    target - mean (hard). Buckets absent from the batch are unchanged. (3,) in, (3,) out.
    ``step`` >= 0; ``low`` <= ``high``, both finite."""
    check_non_negative("step", step)
    check_number("low", low)
    check_number("high", high, low=low)
    mean = sums / counts.clamp(min=1.0)  # (3,)
    sign = torch.tensor([1.0, 1.0, -1.0], device=alpha.device)  # easy, medium, hard
    delta = sign * (mean - targets)  # (3,)
    updated = (alpha + step * delta).clamp(low, high)
    return torch.where(counts > 0, updated, alpha)


def _check_bucket_vector(name: str, values: Tensor, low: float, high: float | None) -> None:
    """A (3,) per-bucket tensor, finite and in [low, high] (one small host sync: three numbers)."""
    values = torch.as_tensor(values)
    if tuple(values.shape) != (3,):
        raise ConfigError(f"{name} must be (3,): one value per bucket (easy, medium, hard), got shape {tuple(values.shape)}",
                          argument=name)
    listed = values.detach().float().cpu().tolist()
    bad = [v for v in listed if not math.isfinite(v) or v < low or (high is not None and v > high)]
    if bad:
        expected = f"finite and >= {low}" if high is None else f"finite and in [{low}, {high}]"
        raise ConfigError(f"{name} must be {expected}, got {listed}", argument=name)


def huber(x: Tensor, kappa: Tensor | float) -> Tensor:
    """Authors' Huber: x^2 / (2 kappa) for x <= kappa, else x - kappa / 2 (continuous at kappa); kappa > 0."""
    if not isinstance(kappa, Tensor):
        check_positive("kappa", kappa)
    return torch.where(x <= kappa, x * x / (2.0 * kappa), x - kappa / 2.0)


def hierarchical_entropy_reward(
    hwe_counts: Tensor, targets: Tensor, buckets: Tensor, correct: Tensor, alpha: Tensor
) -> Tensor:
    """The ARES hierarchical entropy reward r_H (authors' ``aepo.py``), per sequence.

    With n the HWE count, T the bucket's target, delta = n - T, m = max(1, f_d max(T, 1)),
    cap = alpha_d c_d, Huber(x, kappa_d) and sigma_s(x) = 1 / (1 + exp(-x / s_d)):

    ======  =================================================  ==========================================
    bucket  correct                                            wrong
    ======  =================================================  ==========================================
    easy    -min(cap, Huber(max(delta - m, 0)) / (m + k) cap)  +0.6 cap sigma_s(max(delta - m, 0))
    medium  -min(cap, Huber(max(|delta| - m, 0)) / (m+k) cap)  +0.8 cap sigma_s(max(delta - m, 0))
    hard    delta >= -m: +cap sigma_s(delta + m);              +cap sigma_s(max(delta - m, 0))
            else -min(cap, 0.5 Huber(-delta - m) / (m+k) cap)
    ======  =================================================  ==========================================

    Args:
        hwe_counts: (B,) HWE tokens per response. targets: (3,) per bucket. buckets: (B,) long.
        correct: (B,) in [0, 1]; > 0.5 counts as correct. alpha: (3,) per bucket.

        targets must be >= 0 (they are HWE token counts) and alpha in [0, 2]; both finite.

    Returns:
        (B,) r_H (the total reward is correct + r_H, see ``vlkit.functional.aepo.shaped_rewards``).
    """
    _check_bucket_vector("targets", targets, 0.0, None)
    _check_bucket_vector("alpha", alpha, 0.0, 2.0)
    if hwe_counts.dim() != 1 or buckets.shape != hwe_counts.shape or correct.shape != hwe_counts.shape:
        raise ConfigError(
            f"hwe_counts, buckets and correct must all be (B,), got {tuple(hwe_counts.shape)}, {tuple(buckets.shape)}, "
            f"{tuple(correct.shape)}",
            argument="hwe_counts",
        )
    dev = hwe_counts.device
    n = hwe_counts.float()  # (B,)
    T = targets.to(dev).float()[buckets]  # (B,)
    f = torch.tensor(MARGIN_FRACTION, device=dev)[buckets]  # (B,)
    kappa = torch.tensor(HUBER_KAPPA, device=dev)[buckets]
    s = torch.tensor(SIGMOID_TEMPERATURE, device=dev)[buckets]
    cap = alpha.to(dev).float()[buckets] * torch.tensor(CAP_SCALE, device=dev)[buckets]  # (B,)
    bonus = torch.tensor(WRONG_BONUS, device=dev)[buckets]
    delta = n - T
    m = torch.clamp(f * T.clamp(min=1.0), min=1.0)  # (B,)
    zero = torch.zeros_like(n)

    def penalty(x: Tensor, scale: float = 1.0) -> Tensor:
        return -torch.minimum(cap, scale * huber(x, kappa) / (m + kappa) * cap)

    def sigmoid_s(x: Tensor) -> Tensor:
        return torch.sigmoid(x / s)

    over = torch.maximum(delta - m, zero)  # HWE count above the tolerated band
    easy_ok = penalty(over)
    medium_ok = penalty(torch.maximum(delta.abs() - m, zero))
    hard_ok = torch.where(delta >= -m, cap * sigmoid_s(delta + m), penalty(-delta - m, scale=0.5))
    wrong = bonus * cap * sigmoid_s(over)
    ok = torch.where(buckets == EASY, easy_ok, torch.where(buckets == MEDIUM, medium_ok, hard_ok))  # (B,)
    return torch.where(correct > 0.5, ok, wrong)


def update_kl_controller(
    kl_ema: Tensor,
    error_ema: Tensor,
    log_beta: Tensor,
    bucket_kl_sums: Tensor,
    bucket_counts: Tensor,
    target: Tensor | float = 0.01,
    kl_momentum: float = 0.03,
    error_momentum: float = 0.03,
    rate: float = 0.05,
    error_clip: float = 0.2,
    deadband: float = 0.02,
    beta_min: float = 1e-4,
    beta_max: float = 1e2,
    update_beta: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the per-bucket KL controller (authors' "dynamic KL", ``dp_actor.py``).

    For each bucket d present in the batch (count > 0), with m_d its mean per-sequence KL:
      K_d <- (1 - kl_momentum) K_d + kl_momentum m_d
      e_d = K_d / target_d - 1 (left alone when |e_d| < deadband)
      if update_beta:  E_d <- (1 - error_momentum) E_d + error_momentum e_d;
                       log beta_d += rate * clip(E_d, -error_clip, error_clip), beta in [beta_min, beta_max]
    The KL term of sequence i is then kl_coef * beta_{d(i)} * KL_i: too much KL raises beta.

    Args:
        kl_ema, error_ema, log_beta: (3,) state. bucket_kl_sums, bucket_counts: (3,) sums of per-sequence
        KL and counts per bucket (already all-reduced across ranks, so all ranks take the same step).
        target: scalar or (3,) KL target per bucket (authors: 0.01 for all).

    Returns:
        new (kl_ema, error_ema, log_beta).
    """
    if not isinstance(target, Tensor):  # tensors are checked by their owner (no device sync)
        check_positive("target", target)
    check_probability("kl_momentum", kl_momentum)
    check_probability("error_momentum", error_momentum)
    check_non_negative("rate", rate)
    check_non_negative("error_clip", error_clip)
    check_non_negative("deadband", deadband)
    check_positive("beta_min", beta_min)
    check_number("beta_max", beta_max, low=beta_min)
    present = bucket_counts > 0  # (3,)
    mean_kl = bucket_kl_sums / bucket_counts.clamp(min=1.0)  # (3,)
    target_t = torch.as_tensor(target, dtype=kl_ema.dtype, device=kl_ema.device).expand_as(kl_ema)
    new_kl = torch.where(present, (1.0 - kl_momentum) * kl_ema + kl_momentum * mean_kl, kl_ema)
    error = new_kl / target_t - 1.0  # (3,)
    active = present & (error.abs() >= deadband)
    if not update_beta:
        return new_kl, error_ema, log_beta
    new_err = torch.where(active, (1.0 - error_momentum) * error_ema + error_momentum * error, error_ema)
    new_log_beta = torch.where(active, log_beta + rate * new_err.clamp(-error_clip, error_clip), log_beta)
    new_log_beta = new_log_beta.clamp(math.log(beta_min), math.log(beta_max))
    return new_kl, new_err, new_log_beta
