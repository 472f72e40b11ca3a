"""Policy-optimisation core shared by ARES (vlkit) and MiniOneRec RL (recsys).

Pure tensor math, no Lightning. Shapes: B sequences (= groups x G), G group size, T tokens, V vocabulary.
The pieces with weights (the reference policy, the K-updates-per-rollout loop, sampling) live one layer
up, in ``vlkit.models.policy``.

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
from vlkit.functional.entropy import DEFAULT_CHUNK_TOKENS, logsumexp_and_entropy, token_chunks

__all__ = [
    "group_advantages",
    "clipped_surrogate",
    "kl_penalty",
    "aggregate_tokens",
    "sampled_token_logprobs",
    "sampled_token_logprobs_and_entropy",
    "position_ids_from_mask",
    "completion_mask_after_eos",
    "masked_token_nll",
    "clip_fractions",
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


class _SampledTokenLogProbs(torch.autograd.Function):
    """log p(o_t) = z[o_t] - logsumexp(z) with a chunked forward and backward (and the entropy, on request).

    Hand-written because autograd's ``gather - logsumexp`` holds several (B, T, V) float32 tensors in the
    backward (exp(z - lse), the gather's scattered zeros, their sum, and an upcast copy of bf16 logits):
    here the backward writes d log p_t / d z_j = [j = o_t] - p_j chunk by chunk into the one gradient
    tensor autograd needs anyway, recomputing p from the saved logsumexp. The values are those of
    ``gather - logsumexp``; nothing but the input logits (no copy) and (B, T) vectors is saved.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, chunk_size: int, with_entropy: bool):
        """(B, T) log-probs of ``tokens`` and (B, T) entropy (an empty tensor unless ``with_entropy``)."""
        lse, entropy = logsumexp_and_entropy(logits, chunk_size, with_entropy)  # (B, T) each, no grad
        picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).float()  # (B, T)
        ctx.save_for_backward(logits, tokens, lse)
        ctx.chunk_size = chunk_size
        if entropy is None:
            entropy = lse.new_empty(0)
        ctx.mark_non_differentiable(entropy)
        return picked - lse, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs: Tensor, grad_entropy: Tensor):
        """(B, T, V) gradient of the logits, g_t ([j = o_t] - p_tj), written chunk by chunk."""
        logits, tokens, lse = ctx.saved_tensors
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)  # (B, T, V) contiguous
        g = grad_logprobs.float()  # (B, T)
        for rows, positions in token_chunks(logits.shape[0], logits.shape[1], ctx.chunk_size):
            g_chunk = g[rows, positions].unsqueeze(-1)  # (b, t, 1)
            p = torch.sub(logits[rows, positions].float(), lse[rows, positions].unsqueeze(-1)).exp_()  # (b, t, V)
            p.mul_(-g_chunk).scatter_add_(-1, tokens[rows, positions].unsqueeze(-1), g_chunk)  # g ([j = o_t] - p_j)
            grad[rows, positions] = p
            del p  # one chunk buffer alive at a time
        return grad, None, None, None


def _check_logits_tokens(logits: Tensor, tokens: Tensor, chunk_size: int | None) -> int:
    """The chunk size to use, after checking (B, T, V) logits against (B, T) tokens."""
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ConfigError(
            f"logits must be (B, T, V) and tokens (B, T), got {tuple(logits.shape)} and {tuple(tokens.shape)}",
            argument="tokens",
        )
    check_int("chunk_size", chunk_size, low=1, allow_none=True)
    return DEFAULT_CHUNK_TOKENS if chunk_size is None else chunk_size


def sampled_token_logprobs(logits: Tensor, tokens: Tensor, chunk_size: int | None = None) -> Tensor:
    """log pi(o_t): the log-probability of each sampled token under ``logits``, in float32.

    Computed as ``logits[o_t] - logsumexp(logits)`` over chunks of ``chunk_size`` tokens, forward and
    backward (a hand-written backward, ``_SampledTokenLogProbs``), so that no (B, T, V) tensor of
    log-probs or probabilities is ever built: the extra memory is one float32 (chunk_size, V) buffer, and
    the values do not depend on ``chunk_size``.

    Args:
        logits: (B, T, V) next-token logits aligned with ``tokens`` (position t predicts ``tokens[:, t]``).
        tokens: (B, T) long, the sampled (or target) token ids.
        chunk_size: tokens per chunk, an int >= 1, or None for
            :data:`vlkit.functional.entropy.DEFAULT_CHUNK_TOKENS`.

    Returns:
        (B, T) float32 log-probs (with gradient when ``logits`` has one).
    """
    chunk_size = _check_logits_tokens(logits, tokens, chunk_size)
    return _SampledTokenLogProbs.apply(logits, tokens, chunk_size, False)[0]


def sampled_token_logprobs_and_entropy(
    logits: Tensor, tokens: Tensor, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """log pi(o_t) and the full-vocabulary token entropy H_t, from one chunked log-softmax pass.

    The entropy H_t = logsumexp(z_t) - sum_j p_tj z_tj reuses the normaliser logsumexp(z_t) that the
    log-prob needs, and each chunk of logits is read once for both
    (:func:`vlkit.functional.entropy.logsumexp_and_entropy`). The entropy carries no gradient (ARES uses
    it as a detached signal: HWE thresholds and counts, top-entropy token selection); the log-probs carry
    the gradient of :func:`sampled_token_logprobs`, with the same values.

    Args:
        logits: (B, T, V) next-token logits aligned with ``tokens``; any strides (a slice of the forward's
            logits is not copied).
        tokens: (B, T) long, the sampled token ids.
        chunk_size: tokens per chunk, an int >= 1, or None for
            :data:`vlkit.functional.entropy.DEFAULT_CHUNK_TOKENS`; the extra memory is one float32
            (chunk_size, V) buffer (two for non-float32 logits).

    Returns:
        (log-probs (B, T) float32 with gradient, entropy (B, T) float32 in nats without gradient).
    """
    chunk_size = _check_logits_tokens(logits, tokens, chunk_size)
    return _SampledTokenLogProbs.apply(logits, tokens, chunk_size, True)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids of a left-padded batch: (B, T) 0/1 mask -> (B, T) positions counted from each row's first
    real token (padding gets 0), as ``generate()`` numbers them; a training forward must use the same."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, T)


def completion_mask_after_eos(completion: Tensor, eos_token_id: int) -> Tensor:
    """(B, T) long mask of a batch of sampled completions: 1 for tokens up to and including the first EOS,
    0 after it (where ``generate()`` pads)."""
    is_eos = (completion == eos_token_id).long()  # (B, T)
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0  # (B, T) strictly after the first EOS
    return (~after_eos).long()


def masked_token_nll(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """The supervised fine-tuning loss: mean negative log-likelihood of the labelled tokens.

    Args:
        logits: (B, T, V) next-token logits aligned with ``labels`` (the caller shifts by one).
        labels: (B, T) long target ids, ``ignore_index`` where no loss is taken (prompt, padding).

    Returns:
        scalar mean cross-entropy (float32) over the tokens whose label is not ``ignore_index``.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ConfigError(
            f"logits must be (B, T, V) and labels (B, T), got {tuple(logits.shape)} and {tuple(labels.shape)}",
            argument="labels",
        )
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=ignore_index  # (B*T, V), (B*T,)
    )


def clip_fractions(
    logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, clip_low: float = 0.2, clip_high: float | None = None
) -> tuple[Tensor, Tensor]:
    """Fractions of the valid tokens whose importance ratio r = pi / pi_old left the clip range.

    Args:
        logprobs, old_logprobs: (B, T) log-probs of the sampled tokens now and under the rollout policy.
        mask: (B, T) tokens that count.
        clip_low, clip_high: epsilon below / above 1 (``clip_high=None``: symmetric), as in
            :func:`clipped_surrogate`.

    Returns:
        (low, high): scalar fractions of the valid tokens with r < 1 - clip_low and with r > 1 + clip_high;
        their sum is PPO's usual ``clip_frac``. Both are 0 at the first update of a rollout (r = 1).
    """
    hi = clip_low if clip_high is None else clip_high
    with torch.no_grad():
        ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
        valid = mask.bool()  # (B, T)
        n = valid.sum().clamp(min=1)
        low = ((ratio < 1.0 - clip_low) & valid).sum() / n
        high = ((ratio > 1.0 + hi) & valid).sum() / n
    return low, high
