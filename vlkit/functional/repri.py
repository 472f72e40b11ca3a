"""RePRI: transductive few-shot segmentation on frozen features, batched over episodes.

Boudiaf, Kervadec, Masud, Piantanida, Ben Ayed, Dolz. "Few-Shot Segmentation Without Meta-Learning:
A Good Transductive Inference Is All You Need?" CVPR 2021 (arXiv 2012.06166). Equations restated
from the paper (sec. 3, eq. 1-4) and the authors' ``src/classifier.py`` (commit aa54b19); no code copied.

Every function works on B episodes at once. Shapes: B episodes, K shots, D feature channels, h w the
feature grid. Masks use 0 = background, 1 = foreground, 255 = ignored (padding or void).

Per episode the classifier has one prototype ``w`` (D,) and one bias ``b``:

    logit(x)  = tau * cos(f(x), w)                                   (tau = 20)
    p_fg(x)   = sigmoid(logit(x) - b),  p_bg = 1 - p_fg               (eq. 1)
    L = ce_weight * CE_support + kl_weight * KL(mean_Q p || pi) + entropy_weight * H_Q   (eq. 4)

with CE and H averaged over valid pixels, ``pi = (pi_bg, pi_fg)`` the foreground-proportion estimate
(the model's own soft proportion at initialisation, re-estimated once during the optimisation) and the
weights 1, 1/K, 1/K. Episodes share no parameter and the loss is summed over episodes, so plain SGD on the
batch is exactly B independent optimisations (what the authors do for 200 tasks at a time, issue #18).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vlkit.errors import ConfigError, check_finite_tensor, check_int, check_non_negative, check_number, check_positive

__all__ = [
    "IGNORE_INDEX",
    "RePRIResult",
    "downsample_mask",
    "masked_prototypes",
    "cosine_logits",
    "foreground_probability",
    "soft_foreground_proportion",
    "oracle_foreground_proportion",
    "support_cross_entropy",
    "query_entropy",
    "proportion_kl",
    "repri_loss",
    "kl_weight_schedule",
    "check_repri_settings",
    "repri_fit",
    "prototype_baseline",
    "upsample_logits",
]

IGNORE_INDEX = 255
_EPS = 1e-10  # the authors' epsilon inside logs and divisions


def _check_size(size) -> tuple[int, int]:
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ConfigError(f"size must be (h, w), two ints >= 1, got {size!r}", argument="size")
    return tuple(check_int("size", int(v) if isinstance(v, Tensor) else v, low=1) for v in size)


def downsample_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of integer or boolean masks (..., H, W) -> (..., h, w), as the authors do."""
    size = _check_size(size)
    if mask.dim() < 2:
        raise ConfigError(f"mask must be (..., H, W), got shape {tuple(mask.shape)}", argument="mask")
    lead = mask.shape[:-2]
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()  # (N, 1, H, W)
    out = F.interpolate(flat, size=size, mode="nearest")  # (N, 1, h, w)
    return out.reshape(*lead, *size).to(mask.dtype)


def masked_prototypes(support_features: Tensor, support_masks: Tensor, label: int = 1) -> Tensor:
    """Masked average of support features over all shots: the classifier's initial prototype.

    Args:
        support_features: (B, K, D, h, w).
        support_masks: (B, K, h, w) with values in {0, 1, 255}.
        label: which label to average (1 = foreground, 0 = background).

    Returns:
        (B, D) mean feature of the pixels with ``mask == label`` (zeros where an episode has none).
    """
    weight = (support_masks == label).to(support_features.dtype).unsqueeze(2)  # (B, K, 1, h, w)
    total = (support_features * weight).sum(dim=(1, 3, 4))  # (B, D)
    count = weight.sum(dim=(1, 3, 4))  # (B, 1)
    return total / (count + _EPS)


def cosine_logits(features: Tensor, prototypes: Tensor, temperature: float) -> Tensor:
    """``tau * cos(f(x), w)`` for every pixel of every image of an episode.

    Args:
        features: (B, N, D, h, w) with N images per episode (K supports or 1 query).
        prototypes: (B, D).
        temperature: tau > 0.

    Returns:
        (B, N, h, w).
    """
    check_positive("temperature", temperature)
    dot = torch.einsum("bndhw,bd->bnhw", features, prototypes)  # (B, N, h, w)
    norms = features.norm(dim=2) * prototypes.norm(dim=1)[:, None, None, None]  # (B, N, h, w)
    return temperature * dot / (norms + _EPS)


def foreground_probability(logits: Tensor, bias: Tensor) -> Tensor:
    """Eq. 1: ``sigmoid(logit - b)``; logits (B, N, h, w), bias (B,) -> (B, N, h, w)."""
    return torch.sigmoid(logits - bias[:, None, None, None])


def _two_class(p_fg: Tensor) -> Tensor:
    return torch.stack([1 - p_fg, p_fg], dim=2)  # (B, N, 2, h, w): index 0 background, 1 foreground


def soft_foreground_proportion(p_fg: Tensor, valid: Tensor) -> Tensor:
    """Mean foreground probability over the valid query pixels: ``pi_fg`` (B,).

    p_fg: (B, N, h, w); valid: (B, N, h, w) bool or {0, 1}.
    """
    valid = valid.to(p_fg.dtype)
    return (p_fg * valid).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp_min(_EPS)


def oracle_foreground_proportion(query_masks: Tensor) -> Tensor:
    """The true foreground proportion of the query among its labelled pixels (the paper's oracle).

    query_masks: (B, N, h, w) in {0, 1, 255} -> (B,).
    """
    valid = (query_masks != IGNORE_INDEX).float()
    fg = (query_masks == 1).float()
    return fg.sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp_min(_EPS)


def support_cross_entropy(p_fg_support: Tensor, support_masks: Tensor) -> Tensor:
    """Binary cross-entropy on the labelled support pixels, averaged per episode (eq. 4, first term).

    p_fg_support: (B, K, h, w); support_masks: (B, K, h, w) in {0, 1, 255} -> (B,).
    """
    valid = (support_masks != IGNORE_INDEX).to(p_fg_support.dtype)  # (B, K, h, w)
    fg = (support_masks == 1).to(p_fg_support.dtype)
    log_p = fg * torch.log(p_fg_support + _EPS) + (1 - fg) * torch.log(1 - p_fg_support + _EPS)  # (B, K, h, w)
    return -(valid * log_p).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp_min(_EPS)


def query_entropy(p_fg_query: Tensor, valid: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of the per-pixel posterior over valid query pixels (eq. 4, H term).

    p_fg_query: (B, N, h, w); valid: (B, N, h, w) -> (B,).
    """
    probas = _two_class(p_fg_query)  # (B, N, 2, h, w)
    pixel_entropy = -(probas * torch.log(probas + _EPS)).sum(dim=2)  # (B, N, h, w)
    valid = valid.to(p_fg_query.dtype)
    return (pixel_entropy * valid).sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp_min(_EPS)


def proportion_kl(p_fg_query: Tensor, valid: Tensor, foreground_proportion: Tensor) -> Tensor:
    """KL between the predicted query marginal and the proportion estimate (eq. 4, KL term).

    ``KL(p_hat || pi) = sum_{k in {bg, fg}} p_hat_k log(p_hat_k / pi_k)`` with ``p_hat`` the mean posterior
    over valid pixels. p_fg_query: (B, N, h, w); foreground_proportion (pi_fg): (B,) -> (B,).
    The authors write ``log(p_hat / (pi + eps))``; we also guard ``p_hat`` (``log(p_hat + eps)``), which
    changes nothing unless a marginal underflows to exactly 0 (it would give NaN in theirs).
    """
    fg = soft_foreground_proportion(p_fg_query, valid)  # (B,)
    marginal = torch.stack([1 - fg, fg], dim=1)  # (B, 2)
    prior = torch.stack([1 - foreground_proportion, foreground_proportion], dim=1)  # (B, 2)
    return (marginal * (torch.log(marginal + _EPS) - torch.log(prior + _EPS))).sum(dim=1)


def repri_loss(
    query_logits: Tensor,
    support_logits: Tensor,
    bias: Tensor,
    support_masks: Tensor,
    query_valid: Tensor,
    foreground_proportion: Tensor,
    ce_weight: float,
    kl_weight: float,
    entropy_weight: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 4 per episode: (B,) total and its three (B,) terms in a dict (``ce``, ``kl``, ``entropy``)."""
    p_q = foreground_probability(query_logits, bias)  # (B, 1, h, w)
    p_s = foreground_probability(support_logits, bias)  # (B, K, h, w)
    terms = {
        "ce": support_cross_entropy(p_s, support_masks),
        "kl": proportion_kl(p_q, query_valid, foreground_proportion),
        "entropy": query_entropy(p_q, query_valid),
    }
    total = ce_weight * terms["ce"] + kl_weight * terms["kl"] + entropy_weight * terms["entropy"]
    return total, terms


def kl_weight_schedule(
    iterations: int, base_weight: float, update_at: tuple[int, ...] = (10,), boost: float = 1.0
) -> list[float]:
    """The KL weight used at each optimisation step (length ``iterations - 1``).

    The authors loop ``for it in range(1, iterations)``: step, then ``if it + 1 in update_at`` re-estimate
    pi and add 1 to the KL weight. So with ``update_at=(10,)`` and base weight 1/K, steps 1..9 use 1/K and
    steps 10..49 use 1/K + 1. Example (iterations=5, base 0.5, update_at=(3,)): [0.5, 1.5, 1.5, 1.5].
    """
    check_int("iterations", iterations, low=1)
    check_number("base_weight", base_weight)
    check_number("boost", boost)
    weights, weight = [], base_weight
    for it in range(1, iterations):
        weights.append(weight)
        if it + 1 in update_at:
            weight += boost
    return weights


def _autograd_ready(t: Tensor) -> Tensor:
    """Detached, and cloned only if it is an inference tensor (which autograd refuses to save)."""
    t = t.detach()
    return t.clone() if t.is_inference() else t


def _columns_and_norms(features: Tensor) -> tuple[Tensor, Tensor]:
    """(B, N, D, h, w) -> pixel columns (B, D, N*h*w) contiguous and their L2 norms (B, N*h*w).

    The (B, D, P) layout makes the per-step product ``w^T F`` a batched row-times-matrix, the fastest
    layout for this memory-bound product on CPU (measured against (B, P, D) bmm and einsum)."""
    b, n, d, h, w = features.shape
    cols = features.transpose(1, 2).reshape(b, d, n * h * w).contiguous()  # (B, D, P)
    return cols, cols.norm(dim=1)


@dataclass
class RePRIResult:
    """Output of :func:`repri_fit` for B episodes.

    prototype (B, D) and bias (B,): the fitted classifier; query_logits (B, 1, h, w): ``tau * cos`` of the
    query under the fitted prototype (subtract ``bias`` for the foreground logit);
    proportion_init / proportion_final (B,): pi_fg before and after the re-estimation;
    loss_history (steps, B): the per-episode loss at each step.
    """

    prototype: Tensor
    bias: Tensor
    query_logits: Tensor
    proportion_init: Tensor
    proportion_final: Tensor
    loss_history: Tensor

    def foreground_probability(self) -> Tensor:
        """Eq. 1 on the query with the fitted prototype and bias: (B, 1, h, w) in [0, 1]."""
        return foreground_probability(self.query_logits, self.bias)  # (B, 1, h, w)


def _check_episode_shapes(support_features: Tensor, support_masks: Tensor, query_features: Tensor, query_valid: Tensor):
    if support_features.dim() != 5:
        raise ConfigError(
            f"support_features must be (B, K, D, h, w), got shape {tuple(support_features.shape)}", argument="support_features"
        )
    if query_features.dim() != 5 or query_features.shape[1] != 1:
        raise ConfigError(
            f"query_features must be (B, 1, D, h, w), got shape {tuple(query_features.shape)}", argument="query_features"
        )
    b, k, d, h, w = support_features.shape
    if query_features.shape[0] != b or query_features.shape[2] != d:
        raise ConfigError(
            f"query_features {tuple(query_features.shape)} must share B={b} and D={d} with support_features",
            argument="query_features",
        )
    if tuple(support_masks.shape) != (b, k, h, w):
        raise ConfigError(
            f"support_masks must be (B, K, h, w) = {(b, k, h, w)} at the feature resolution, "
            f"got {tuple(support_masks.shape)}",
            argument="support_masks",
        )
    if tuple(query_valid.shape) != (b, 1, *query_features.shape[-2:]):
        raise ConfigError(
            f"query_valid must be (B, 1, h, w) = {(b, 1, *query_features.shape[-2:])}, got {tuple(query_valid.shape)}",
            argument="query_valid",
        )


def check_repri_settings(
    temperature: float, lr: float, iterations: int, ce_weight: float, kl_weight: float | None,
    entropy_weight: float | None, proportion_update_at: tuple[int, ...], kl_boost: float,
) -> None:
    """Check the settings of :func:`repri_fit` (ConfigError naming the argument); ``LitRePRI`` runs the same
    check at construction, before any backbone is built. The ranges are those documented on :func:`repri_fit`:
    temperature, lr > 0; iterations an int >= 1; the weights >= 0 (kl/entropy None allowed); each
    ``proportion_update_at`` step an int >= 1 (the list may be empty); kl_boost >= 0."""
    check_positive("temperature", temperature)
    check_positive("lr", lr)
    check_int("iterations", iterations, low=1)
    check_non_negative("ce_weight", ce_weight)
    check_non_negative("kl_weight", kl_weight, allow_none=True)
    check_non_negative("entropy_weight", entropy_weight, allow_none=True)
    if isinstance(proportion_update_at, (str, int)):
        raise ConfigError(
            f"proportion_update_at must be a list of ints >= 1, got {proportion_update_at!r}",
            argument="proportion_update_at",
        )
    for step in proportion_update_at:
        check_int("proportion_update_at", step, low=1)
    check_non_negative("kl_boost", kl_boost)


def repri_fit(
    support_features: Tensor,
    support_masks: Tensor,
    query_features: Tensor,
    query_valid: Tensor,
    temperature: float = 20.0,
    lr: float = 0.025,
    iterations: int = 50,
    ce_weight: float = 1.0,
    kl_weight: float | None = None,
    entropy_weight: float | None = None,
    proportion_update_at: tuple[int, ...] = (10,),
    kl_boost: float = 1.0,
    oracle_proportion: Tensor | None = None,
) -> RePRIResult:
    """Fit RePRI's classifier on B episodes at once (paper sec. 3, the authors' ``RePRI`` loop).

    Args:
        support_features: (B, K, D, h, w) frozen support features (need not be normalised: logits are cosines).
        support_masks: (B, K, h, w) support labels at the feature resolution, {0, 1, 255}.
        query_features: (B, 1, D, h, w).
        query_valid: (B, 1, h, w) bool: the query pixels the transductive terms see. The honest choice is a
            padding mask from the image geometry; the authors pass ``query_label != 255``.
        temperature: tau > 0 (20).
        lr: plain SGD learning rate on (prototype, bias), > 0 (0.025).
        iterations: the authors' ``adapt_iter`` (50), which gives ``iterations - 1`` = 49 SGD steps; an int >= 1.
        ce_weight, kl_weight, entropy_weight: lambda_CE, lambda_KL, lambda_H, each >= 0; ``None`` means 1/K (the
            authors' ``'auto'``).
        proportion_update_at: the authors' ``FB_param_update`` ([10]); see :func:`kl_weight_schedule`.
            Ignored (no update, no boost) when an oracle proportion is given or ``kl_weight`` is 0 (the
            authors' condition: a zero KL weight stays zero, so the CE + H ablation keeps no KL term).
        kl_boost: added to the KL weight at each re-estimation (the authors' ``l2 += 1``), >= 0.
        oracle_proportion: (B,) a fixed pi_fg in [0, 1] (e.g. the true query proportion) instead of the soft
            estimate.

    Returns:
        :class:`RePRIResult`.
    """
    _check_episode_shapes(support_features, support_masks, query_features, query_valid)
    check_repri_settings(temperature, lr, iterations, ce_weight, kl_weight, entropy_weight, proportion_update_at, kl_boost)
    if oracle_proportion is not None:
        if tuple(oracle_proportion.shape) != (support_features.shape[0],):
            raise ConfigError(
                f"oracle_proportion must be (B,) = ({support_features.shape[0]},), got {tuple(oracle_proportion.shape)}",
                argument="oracle_proportion",
            )
        if not bool(((oracle_proportion >= 0) & (oracle_proportion <= 1)).all()):  # NaN fails too
            raise ConfigError(
                f"oracle_proportion must lie in [0, 1], got {oracle_proportion.tolist()[:8]}", argument="oracle_proportion"
            )
    shots = support_features.shape[1]
    kl_weight = 1.0 / shots if kl_weight is None else float(kl_weight)
    entropy_weight = 1.0 / shots if entropy_weight is None else float(entropy_weight)
    # works under torch.no_grad and torch.inference_mode (Lightning's test loop): inference tensors cannot
    # enter autograd, so those inputs are cloned into normal tensors first
    with torch.inference_mode(False), torch.enable_grad():
        support_features, query_features, support_masks, query_valid = (
            _autograd_ready(t) for t in (support_features, query_features, support_masks, query_valid)
        )
        if oracle_proportion is not None:
            oracle_proportion = _autograd_ready(oracle_proportion)
        # constant work hoisted out of the loop: features laid out once as (B, D, P) columns with their
        # norms, so each step is one batched vector-matrix product per image set (no per-step permute or norm)
        s_cols, s_norm = _columns_and_norms(support_features)  # (B, D, K*h*w), (B, K*h*w)
        q_cols, q_norm = _columns_and_norms(query_features)  # (B, D, h*w), (B, h*w)
        s_shape, q_shape = support_masks.shape, query_valid.shape
        # a NaN feature (a NaN image upstream) would poison every episode of the batch silently: checked before
        # any step, on the norms (a NaN or inf in a pixel makes its norm non-finite; then the exact, counting check)
        for name, norms, features in (("support_features", s_norm, support_features), ("query_features", q_norm, query_features)):
            if not torch.isfinite(norms).all():
                check_finite_tensor(name, features)

        def logits(cols: Tensor, norms: Tensor, shape) -> Tensor:
            """tau cos(f, w) for every column (cosine_logits on the column layout)."""
            dot = torch.bmm(prototype.unsqueeze(1), cols).squeeze(1)  # (B, 1, D) @ (B, D, P) -> (B, P)
            return (temperature * dot / (norms * prototype.norm(dim=1, keepdim=True) + _EPS)).view(shape)  # (B, N, h, w)

        # masked_prototypes on the columns: one batched product with the foreground mask, no (B, K, D, h, w) temporary
        foreground = (support_masks == 1).to(s_cols.dtype).view(s_cols.shape[0], -1, 1)  # (B, K*h*w, 1)
        prototype = torch.bmm(s_cols, foreground).squeeze(2) / (foreground.sum(1) + _EPS)  # (B, D)
        prototype.requires_grad_(True)
        query_logits = logits(q_cols, q_norm, q_shape).detach()  # (B, 1, h, w)
        # bias = mean query logit over all query pixels (authors: logits_q.mean(dim=(1, 2, 3)))
        bias = query_logits.mean(dim=(1, 2, 3)).clone().requires_grad_(True)  # (B,)
        if oracle_proportion is not None:
            proportion = oracle_proportion.to(query_features.dtype)
        else:
            proportion = soft_foreground_proportion(
                foreground_probability(query_logits.detach(), bias.detach()), query_valid
            )
        proportion_init = proportion.clone()
        # the authors re-estimate pi (and add kl_boost to the KL weight) only when the KL weight is non-zero
        # and pi is not the oracle; the entropy weight plays no part in that decision
        updates = () if oracle_proportion is not None or kl_weight == 0 else proportion_update_at
        weights = kl_weight_schedule(iterations, kl_weight, updates, kl_boost)
        history = []
        for step, step_kl_weight in enumerate(weights, start=1):
            total, _ = repri_loss(
                logits(q_cols, q_norm, q_shape),
                logits(s_cols, s_norm, s_shape),
                bias,
                support_masks,
                query_valid,
                proportion,
                ce_weight,
                step_kl_weight,
                entropy_weight,
            )
            grad_w, grad_b = torch.autograd.grad(total.sum(), (prototype, bias))
            with torch.no_grad():
                prototype -= lr * grad_w  # plain SGD (torch.optim.SGD without momentum is this update)
                bias -= lr * grad_b
            history.append(total.detach())
            if step + 1 in updates:
                with torch.no_grad():
                    p_q = foreground_probability(logits(q_cols, q_norm, q_shape), bias)
                    proportion = soft_foreground_proportion(p_q, query_valid)
        with torch.no_grad():
            query_logits = logits(q_cols, q_norm, q_shape)  # (B, 1, h, w) under the fitted prototype
    prototype, bias = prototype.detach(), bias.detach()
    loss_history = torch.stack(history) if history else query_features.new_zeros(0, query_features.shape[0])
    return RePRIResult(prototype, bias, query_logits, proportion_init, proportion, loss_history)


def prototype_baseline(
    support_features: Tensor, support_masks: Tensor, query_features: Tensor, temperature: float = 20.0
) -> Tensor:
    """Inductive baseline: nearest of the foreground and background support prototypes (cosine).

    No query statistics are used. Returns the foreground logit ``tau * (cos(f, w_fg) - cos(f, w_bg))``
    (B, 1, h, w); foreground where it is > 0. Shapes as in :func:`repri_fit`; temperature > 0.
    """
    if support_features.dim() != 5 or query_features.dim() != 5 or support_masks.shape != (
        *support_features.shape[:2],
        *support_features.shape[-2:],
    ):
        raise ConfigError(
            f"support_features (B, K, D, h, w), support_masks (B, K, h, w) and query_features (B, 1, D, h, w) "
            f"must agree, got {tuple(support_features.shape)}, {tuple(support_masks.shape)}, {tuple(query_features.shape)}",
            argument="support_masks",
        )
    fg = masked_prototypes(support_features, support_masks, label=1)  # (B, D)
    bg = masked_prototypes(support_features, support_masks, label=0)  # (B, D)
    return cosine_logits(query_features, fg, temperature) - cosine_logits(query_features, bg, temperature)


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of (B, N, h, w) logits to (B, N, H, W), ``align_corners=True`` like the authors."""
    size = _check_size(size)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
