"""Policy-optimisation core shared by ARES (vlkit) and MiniOneRec RL (recsys).

Pure tensor math, no Lightning. Shapes: B sequences (= groups x G), G group size, T tokens.

References
- GRPO: Shao et al., DeepSeekMath (arXiv 2402.03300), eq. 3 (group-normalised advantage) and
  eq. 4 (the unbiased "k3" KL estimator of Schulman, http://joschu.net/blog/kl-approx.html).
- PPO clipped surrogate: Schulman et al. 2017 (arXiv 1707.06347), eq. 7; dual clip: Ye et al. 2020
  (arXiv 1912.09729), eq. 5; asymmetric "clip-higher": DAPO (arXiv 2503.14476), eq. 10.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_choice, check_int, check_non_negative, check_number, check_probability

__all__ = [
    "group_advantages",
    "clipped_surrogate",
    "kl_penalty",
    "aggregate_tokens",
]


def group_advantages(rewards: Tensor, group_size: int, scale: str = "std", eps: float = 1e-6) -> Tensor:
    """Group-relative advantages (GRPO eq. 3).

    Args:
        rewards: (B,) scalar reward per sequence, B = n_groups * group_size, groups contiguous.
        group_size: G, the number of samples per prompt (must be >= 2).
        scale: ``"std"`` divides by the group's standard deviation (GRPO, unbiased=False as in TRL),
            ``"none"`` only centres (Dr. GRPO, arXiv 2503.20783).
        eps: added to the standard deviation so that a group whose rewards are all equal gets 0.

    Returns:
        (B,) advantages A_i = (r_i - mean_g) / (std_g + eps).
    """
    check_int("group_size", group_size, low=2)  # advantages are relative to the group
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ConfigError(
            f"rewards must be 1-D with a length divisible by group_size={group_size}, got shape {tuple(rewards.shape)}",
            argument="rewards",
        )
    check_choice("scale", scale, ("std", "none"))
    check_non_negative("eps", eps)
    grouped = rewards.view(-1, group_size)  # (B/G, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (B/G, G)
    if scale == "std":
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.reshape(-1)  # (B,)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of sampled tokens.

    Args:
        logprobs, ref_logprobs: (B, T) log pi(o_t) and log pi_ref(o_t) of the sampled tokens.
        estimator: ``"k1"`` log-ratio, ``"k2"`` half squared log-ratio, ``"k3"`` (GRPO eq. 4)
            r - log r - 1 with r = pi_ref / pi, non-negative and unbiased.

    Returns:
        (B, T) per-token KL estimate.
    """
    log_ratio = logprobs - ref_logprobs  # (B, T) log pi/pi_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        neg = (-log_ratio).clamp(max=20.0)  # log(pi_ref/pi), clamped to keep exp finite
        return neg.exp() - neg - 1.0
    raise ConfigError(f"estimator must be one of 'k1', 'k2', 'k3', got {estimator!r}", argument="estimator")


def clipped_surrogate(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
) -> Tensor:
    """Per-token clipped policy-gradient loss (to minimise).

    loss_t = -min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A), r_t = exp(logp_t - old_logp_t);
    with dual clip c > 1, for A < 0 the loss is additionally capped at -c A (Ye et al. eq. 5).

    Args:
        logprobs: (B, T) current log-probs of the sampled tokens (carry gradients).
        old_logprobs: (B, T) log-probs under the rollout policy (no gradient).
        advantages: (B,) per-sequence or (B, T) per-token advantages.
        clip_low, clip_high: epsilon below / above 1; ``clip_high=None`` means symmetric.
        dual_clip: c > 1 or None.

    Returns:
        (B, T) per-token loss.
    """
    check_probability("clip_low", clip_low, open_high=True)  # 1 - clip_low must stay > 0
    check_non_negative("clip_high", clip_high, allow_none=True)
    check_number("dual_clip", dual_clip, low=1, low_open=True, allow_none=True)
    if clip_high is None:
        clip_high = clip_low
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1) broadcast over tokens
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)  # (B, T)
    if dual_clip is not None:
        capped = torch.minimum(loss, -advantages * dual_clip)
        loss = torch.where(advantages < 0, capped, loss)
    return loss


def aggregate_tokens(values: Tensor, mask: Tensor, mode: str = "token-mean") -> Tensor:
    """Reduce a (B, T) per-token quantity to a scalar.

    ``"token-mean"``: sum over all valid tokens / number of valid tokens (DAPO, ARES);
    ``"seq-mean-token-mean"``: mean over each sequence's tokens, then over sequences (original GRPO);
    ``"seq-mean-token-sum"``: sum over each sequence's tokens, then mean over sequences (Dr. GRPO style).
    """
    mask = mask.to(values.dtype)  # (B, T)
    if mode == "token-mean":
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    per_seq = (values * mask).sum(dim=1)  # (B,)
    if mode == "seq-mean-token-mean":
        return (per_seq / mask.sum(dim=1).clamp(min=1.0)).mean()
    if mode == "seq-mean-token-sum":
        return per_seq.mean()
    raise ConfigError(
        f"mode must be 'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum', got {mode!r}", argument="mode"
    )
