"""AEPO (ARES' Adaptive Entropy Policy Optimisation) loss and reward shaping, over the shared policy core.

Paper: ARES (arXiv 2510.08457). The policy loss is EasyR1's: PPO clip with eps_low 0.2 / eps_high 0.3
(clip-higher, DAPO arXiv 2503.14476 eq. 10), dual clip C = 3 for negative advantages (arXiv 1912.09729
eq. 5), token-mean aggregation, plus a k3 KL loss whose coefficient is kl_coef * beta_d per sequence
(the per-bucket controller of ``vlkit.functional.entropy.update_kl_controller``).

Optional token selections over the same reward, for comparison:
- ``"top_entropy"``: policy gradient only on the top rho = 20% highest-entropy tokens of the batch
  ("Beyond the 80/20 rule", Wang et al., arXiv 2506.01939).
- ``"clip_cov"`` / ``"kl_cov"``: Cui et al., "The Entropy Mechanism of RL for reasoning LMs"
  (arXiv 2505.22617), eqs. 11-12: per-token covariance Cov_t = (A_t - mean A)(log pi_t - mean log pi);
  Clip-Cov detaches the gradient of a random ``clip_ratio`` fraction of the tokens whose Cov is in
  [lb, ub]; KL-Cov adds coef * |log pi - log pi_old| on the top ``k_ratio`` fraction by Cov.

Shapes: B sequences (groups contiguous, B = n_groups * G), G group size, T completion tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_choice, check_int, check_number, check_probability
from vlkit.functional.entropy import hierarchical_entropy_reward
from vlkit.functional.policy import aggregate_tokens, clip_fractions, clipped_surrogate, kl_penalty

__all__ = [
    "TOKEN_SELECTIONS",
    "shaped_rewards",
    "accuracy_group_mask",
    "top_entropy_mask",
    "token_covariance",
    "clip_cov_mask",
    "kl_cov_indices",
    "aepo_loss",
]

TOKEN_SELECTIONS = ("all", "top_entropy", "clip_cov", "kl_cov")


def shaped_rewards(
    correct: Tensor, hwe_counts: Tensor, targets: Tensor, buckets: Tensor, alpha: Tensor
) -> Tensor:
    """Total AEPO reward R = acc + r_H, computed **after** difficulty, targets and alpha are known.

    (The authors' online-filtering path scored every sample before difficulty was injected, so every
    sample was shaped as "easy" with target 0 and alpha 0.5; here the caller must pass the buckets.)

    Args:
        correct: (B,) accuracy reward in [0, 1]. hwe_counts: (B,) >= 0. targets: (3,) >= 0. alpha: (3,) in
            [0, 2]. buckets: (B,) long in {0, 1, 2}.

    Returns:
        (B,) shaped reward.
    """
    if correct.dim() != 1 or hwe_counts.shape != correct.shape or buckets.shape != correct.shape:
        raise ConfigError(
            f"correct, hwe_counts and buckets must all be (B,), got {tuple(correct.shape)}, "
            f"{tuple(hwe_counts.shape)}, {tuple(buckets.shape)}",
            argument="correct",
        )
    if correct.numel() and not bool(((correct >= 0) & (correct <= 1)).all()):  # NaN fails too
        raise ConfigError(
            f"correct (accuracy rewards) must lie in [0, 1], got range [{correct.min().item()}, {correct.max().item()}]",
            argument="correct",
        )
    if hwe_counts.numel() and not bool((hwe_counts >= 0).all()):
        raise ConfigError(f"hwe_counts must be counts >= 0, got {hwe_counts.tolist()[:8]}", argument="hwe_counts")
    if buckets.numel() and (buckets.min() < 0 or buckets.max() > 2):
        raise ConfigError(
            f"buckets must be 0 (easy), 1 (medium) or 2 (hard), got values {buckets.unique().tolist()}", argument="buckets"
        )
    return correct.float() + hierarchical_entropy_reward(hwe_counts, targets, buckets, correct, alpha)


def accuracy_group_mask(correct: Tensor, group_size: int) -> Tensor:
    """DAPO dynamic-sampling filter on **accuracy**: keep groups whose pass rate is strictly in (0, 1).

    (The authors filtered on the shaped reward, which kept almost every group.)

    Args:
        correct: (B,) in [0, 1], groups contiguous.

    Returns:
        (B,) bool, the group's keep flag repeated G times.
    """
    check_int("group_size", group_size, low=2)  # a group of 1 is always all-right or all-wrong
    if correct.dim() != 1 or correct.numel() % group_size:
        raise ConfigError(
            f"correct must be 1-D with a length divisible by group_size={group_size}, got {tuple(correct.shape)}",
            argument="correct",
        )
    acc = correct.float().view(-1, group_size).mean(dim=1)  # (B/G,)
    keep = (acc > 0.0) & (acc < 1.0)
    return keep.repeat_interleave(group_size)  # (B,)


def top_entropy_mask(entropy: Tensor, mask: Tensor, rho: float = 0.2) -> Tensor:
    """Mask of the top ``rho`` fraction of valid tokens by entropy, over the whole batch (80/20 rule).

    A token is kept when its entropy is >= the (1 - rho) quantile of the valid tokens' entropies
    (torch.quantile, linear interpolation, like TRL's ``get_high_entropy_mask``).

    Args:
        entropy: (B, T); mask: (B, T).

    Returns:
        (B, T) bool.
    """
    check_probability("rho", rho, open_low=True)
    valid = mask.bool()
    values = entropy[valid].float()  # (N,)
    if values.numel() == 0:
        return valid
    threshold = torch.quantile(values, 1.0 - rho)
    return (entropy >= threshold) & valid


def token_covariance(logprobs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Cov_t = (A_t - mean A)(log pi_t - mean log pi), means over the batch's valid tokens; (B, T), no grad."""
    valid = mask.bool()
    lp = logprobs.detach().float()
    adv = advantages.float()
    if adv.dim() == 1:
        adv = adv.unsqueeze(1).expand_as(lp)  # (B, T)
    n = valid.sum().clamp(min=1)
    centred_lp = lp - (lp * valid).sum() / n  # (B, T)
    centred_adv = adv - (adv * valid).sum() / n
    return centred_lp * centred_adv * valid


def _count(ratio: float, n_tokens: int) -> int:
    # at least one token once any is eligible: ratios like 2e-4 round to 0 on small batches
    return max(1, int(ratio * n_tokens)) if n_tokens else 0


def clip_cov_mask(
    covariance: Tensor,
    mask: Tensor,
    clip_ratio: float = 2e-4,
    lower: float = 1.0,
    upper: float = 5.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Clip-Cov: a random ``clip_ratio`` fraction of the valid tokens (at least 1), drawn among those with
    Cov in [lower, upper], whose gradient is removed. Returns (B, T) bool, True = detach this token.
    ``clip_ratio`` in [0, 1]; ``lower`` <= ``upper``."""
    check_probability("clip_ratio", clip_ratio)
    check_number("lower", lower)
    check_number("upper", upper, low=lower)
    valid = mask.bool()
    eligible = ((covariance >= lower) & (covariance <= upper) & valid).flatten()  # (B*T,)
    idx = eligible.nonzero().squeeze(1)  # (E,)
    chosen = torch.zeros_like(eligible)
    k = min(_count(clip_ratio, int(valid.sum())), idx.numel())
    if k:
        perm = torch.randperm(idx.numel(), generator=generator, device="cpu")[:k].to(idx.device)
        chosen[idx[perm]] = True
    return chosen.view_as(covariance)


def kl_cov_indices(covariance: Tensor, mask: Tensor, k_ratio: float = 2e-4) -> Tensor:
    """KL-Cov: (B, T) bool mask of the top ``k_ratio`` fraction (at least 1) of valid tokens by Cov; k_ratio in [0, 1]."""
    check_probability("k_ratio", k_ratio)
    valid = mask.bool()
    flat = covariance.masked_fill(~valid, float("-inf")).flatten()  # (B*T,)
    k = _count(k_ratio, int(valid.sum()))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if k:
        chosen[flat.topk(k).indices] = True
    return chosen.view_as(covariance)


def aepo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logprobs: Tensor | None = None,
    kl_coef: Tensor | float = 0.0,
    clip_low: float = 0.2,
    clip_high: float | None = 0.3,
    dual_clip: float | None = 3.0,
    kl_estimator: str = "k3",
    token_selection: str = "all",
    entropy: Tensor | None = None,
    top_entropy_rho: float = 0.2,
    cov_clip_ratio: float = 2e-4,
    cov_bounds: tuple[float, float] = (1.0, 5.0),
    kl_cov_ratio: float = 2e-4,
    kl_cov_coef: float = 1.0,
    aggregation: str = "token-mean",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The AEPO policy loss (to minimise) and its diagnostics.

    loss = agg_t[ sel_t * clipped_surrogate_t + kl_coef_i * KL_t ]  (+ KL-Cov term on its tokens),
    aggregated by ``aggregation`` (authors: token-mean) over ``mask``.

    Args:
        logprobs: (B, T) log pi of the sampled tokens (with gradient). old_logprobs: (B, T) rollout policy.
        advantages: (B,) or (B, T). mask: (B, T) completion tokens that count.
        ref_logprobs: (B, T) reference policy, or None for no KL term.
        kl_coef: scalar or (B,) per-sequence coefficient (kl_coef * beta_bucket for AEPO).
        clip_low, clip_high, dual_clip: PPO clip range and dual clip (authors: 0.2, 0.3, 3.0); clip_low in
            [0, 1), clip_high >= 0 or None, dual_clip > 1 or None.
        token_selection: one of ``TOKEN_SELECTIONS``.
        entropy: (B, T) token entropy, required for ``"top_entropy"``; only compared, never differentiated
            (no AEPO term has a gradient through the entropy), so the detached entropy of
            :func:`vlkit.functional.policy.sampled_token_logprobs_and_entropy` serves.
        top_entropy_rho: in (0, 1]; cov_clip_ratio, kl_cov_ratio: in [0, 1]; kl_cov_coef: >= 0.
        aggregation: ``"token-mean"``, ``"seq-mean-token-mean"`` or ``"seq-mean-token-sum"``.

    Returns:
        scalar loss, and a dict of detached scalars: ``pg_loss``, ``kl``, ``clip_frac`` (= ``clip_frac_low`` +
        ``clip_frac_high``, :func:`vlkit.functional.policy.clip_fractions`), ``selected_frac``.
    """
    check_choice("token_selection", token_selection, TOKEN_SELECTIONS)
    check_choice("kl_estimator", kl_estimator, ("k1", "k2", "k3"))
    check_choice("aggregation", aggregation, ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"))
    check_probability("top_entropy_rho", top_entropy_rho, open_low=True)
    check_probability("cov_clip_ratio", cov_clip_ratio)
    check_probability("kl_cov_ratio", kl_cov_ratio)
    check_number("kl_cov_coef", kl_cov_coef, low=0)
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ConfigError(
            f"logprobs, old_logprobs and mask must share a (B, T) shape, got {tuple(logprobs.shape)}, "
            f"{tuple(old_logprobs.shape)}, {tuple(mask.shape)}",
            argument="logprobs",
        )
    if ref_logprobs is not None and ref_logprobs.shape != logprobs.shape:
        raise ConfigError(
            f"ref_logprobs must be (B, T) = {tuple(logprobs.shape)}, got {tuple(ref_logprobs.shape)}", argument="ref_logprobs"
        )
    valid = mask.bool()
    pg = clipped_surrogate(logprobs, old_logprobs, advantages, clip_low, clip_high, dual_clip)  # (B, T)
    selected = valid
    if token_selection == "top_entropy":
        if entropy is None:
            raise ConfigError("token_selection='top_entropy' needs the (B, T) token entropy, got entropy=None",
                              argument="entropy")
        selected = top_entropy_mask(entropy, mask, top_entropy_rho)
        pg = pg * selected
    elif token_selection == "clip_cov":
        cov = token_covariance(logprobs, advantages, mask)
        detach = clip_cov_mask(cov, mask, cov_clip_ratio, cov_bounds[0], cov_bounds[1], generator)  # (B, T)
        pg_detached = clipped_surrogate(logprobs.detach(), old_logprobs, advantages, clip_low, clip_high, dual_clip)
        pg = torch.where(detach, pg_detached, pg)
        selected = valid & ~detach
    elif token_selection == "kl_cov":
        cov = token_covariance(logprobs, advantages, mask)
        chosen = kl_cov_indices(cov, mask, kl_cov_ratio)  # (B, T)
        adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
        ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
        kl_cov_term = -adv * ratio + kl_cov_coef * (logprobs - old_logprobs).abs()
        pg = torch.where(chosen, kl_cov_term, pg)
    total = pg
    kl_mean = torch.zeros((), device=logprobs.device)
    if ref_logprobs is not None:
        kl = kl_penalty(logprobs, ref_logprobs, kl_estimator)  # (B, T)
        coef = torch.as_tensor(kl_coef, dtype=kl.dtype, device=kl.device)
        if coef.dim() == 1:
            coef = coef.unsqueeze(1)  # (B, 1)
        total = total + coef * kl
        kl_mean = aggregate_tokens(kl.detach(), mask, aggregation)
    loss = aggregate_tokens(total, mask, aggregation)
    clipped_low, clipped_high = clip_fractions(logprobs, old_logprobs, mask, clip_low, clip_high)
    with torch.no_grad():
        n = valid.sum().clamp(min=1)
        stats = {
            "pg_loss": aggregate_tokens(pg.detach(), mask, aggregation),
            "kl": kl_mean,
            "clip_frac": clipped_low + clipped_high,
            "clip_frac_low": clipped_low,
            "clip_frac_high": clipped_high,
            "selected_frac": (selected & valid).sum() / n,
        }
    return loss, stats
