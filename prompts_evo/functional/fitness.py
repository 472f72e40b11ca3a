"""ProAPO's fitness score, computed for a whole population at once.

Paper: Qu et al., "ProAPO: Progressively Automatic Prompt Optimization for Visual Classification",
CVPR 2025 (arXiv 2502.19844). Restated from the authors' ``get_fitness_score`` / ``get_acc_scores``:

    F(P) = a1 * Acc@1 + a5 * Acc@5 - r * S(T) - lambda * CE(s * f T^T, y)
    S(T) = || triu(T T^T - I) ||_F      (inter-class text similarity, upper triangle, Frobenius norm)

T (C, D) are the class text embeddings of the candidate P (normalised mean of normalised prompt
embeddings), f (N, D) the normalised features of the labelled shots, s the logit scale (100 for CLIP).
Accuracies are in percent, as in the authors' code (their pruning margin 200/C + 0.1 is in points).

Sign of the similarity term (the issue asks us to check it): the authors' code *adds* r * S, which
rewards classes whose text embeddings are similar to each other. The stated aim of the term (prompts
that separate the classes) calls for a penalty, so here the term is *subtracted*: a positive
``similarity_weight`` pushes class embeddings apart; ``similarity_weight = -r`` reproduces the authors'
code exactly. The paper's own equation could not be read offline (only its abstract was available), so
this choice is ours and is recorded in docs/papers.md (ProAPO section). The default weight is 0, as in most of
the authors' per-dataset configs.

Pure tensor functions: no I/O, no state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vlkit.errors import ConfigError, check_int, check_number, check_positive

__all__ = [
    "FitnessTerms",
    "class_embeddings_from_masks",
    "selected_entry_sums",
    "population_logits",
    "topk_accuracy",
    "interclass_similarity",
    "per_candidate_cross_entropy",
    "fitness_scores",
]


class FitnessTerms(NamedTuple):
    """All per-candidate quantities, each of shape (P,)."""

    fitness: Tensor
    top1: Tensor  # percent
    top5: Tensor  # percent (top-min(5, C))
    similarity: Tensor
    cross_entropy: Tensor


def class_embeddings_from_masks(pool: Tensor, masks: Tensor) -> Tensor:
    """Class text embeddings of a population of prompt selections.

    Args:
        pool: (C, M, D) per class, the (sum over templates of) normalised embeddings of its M candidate
            prompt entries. For template search, ``pool[c, m]`` is the embedding of template m filled
            with class c; for description search, entry m of class c is description m rendered with
            every chosen template, summed.
        masks: (P, C, M) or (P, 1, M) bool/float, which entries each candidate selects for each class
            (a (P, 1, M) mask selects the same entries for every class: a task-level template set).

    Returns:
        (P, C, D) L2-normalised: normalise(sum of selected entries) = normalised mean of the selected
        normalised prompt embeddings (CLIP's prompt ensembling). A class with nothing selected gets
        the zero vector.
    """
    if pool.dim() != 3:
        raise ConfigError(f"pool must be (C, M, D), got shape {tuple(pool.shape)}", argument="pool")
    if masks.dim() != 3 or masks.shape[-1] != pool.shape[1] or masks.shape[1] not in (1, pool.shape[0]):
        raise ConfigError(f"masks must be (P, C, M) or (P, 1, M) with M={pool.shape[1]}, C={pool.shape[0]}; got {tuple(masks.shape)}",
                          argument="masks")
    weights = masks.to(pool.dtype).expand(-1, pool.shape[0], -1)  # (P, C, M)
    sums = torch.einsum("pcm,cmd->pcd", weights, pool)  # (P, C, D)
    return F.normalize(sums, dim=-1)


def selected_entry_sums(
    entries: Tensor, masks: Tensor, parent_masks: Tensor | None = None, parent_sums: Tensor | None = None
) -> Tensor:
    """Per-class sums of the selected entries' embeddings, read from per-entry cached embeddings.

    The template stage's class embeddings are ``normalise(sum of the selected templates' embeddings)``
    (:func:`class_embeddings_from_masks`); this computes the sums by gathering only the selected entries
    (cost: selected entries x C x D, not the whole library's M x C x D per candidate). A candidate close to
    a parent (fewer edits than selected entries: the add / remove / replace children of an elite) starts
    from the parent's sum and adds the entries it gained and subtracts the ones it lost, instead of summing
    its entries again.

    Entries are accumulated one at a time in ascending index order (a candidate from scratch: ``0 + e_a +
    e_b + ...``), in rounds over candidates, so the result does not depend on the device (no atomic adds).
    A single selected entry gives exactly its embedding. The sums equal the dense product up to float
    rounding (a few ulp); normalise them with ``F.normalize(sums, dim=-1)`` as
    :func:`class_embeddings_from_masks` does.

    Args:
        entries: (M, C, D) per-entry embeddings, entry-major: ``entries[m, c]`` is template m filled with
            class c (normalised).
        masks: (P, M) bool, the entries each candidate selects (one task-level template set per row).
        parent_masks: (K, M) bool, candidates whose sums are known (the elites the children were made
            from), or None to sum every candidate from scratch.
        parent_sums: (K, C, D), the sums of ``parent_masks`` (as this function returns them).

    Returns:
        (P, C, D) sums of the selected entries (zero for a candidate selecting nothing).
    """
    if entries.dim() != 3:
        raise ConfigError(f"entries must be (M, C, D), got shape {tuple(entries.shape)}", argument="entries")
    if masks.dim() != 2 or masks.shape[1] != entries.shape[0]:
        raise ConfigError(f"masks must be (P, M) with M={entries.shape[0]}, got {tuple(masks.shape)}", argument="masks")
    masks = masks.to(entries.device, torch.bool)
    num, (_, classes, dim) = masks.shape[0], entries.shape
    sums = entries.new_zeros(num, classes, dim)  # (P, C, D)
    plus, minus = masks, None
    if parent_masks is not None:
        if parent_sums is None or parent_masks.dim() != 2 or parent_masks.shape[1] != entries.shape[0] \
                or parent_sums.shape != (parent_masks.shape[0], classes, dim):
            raise ConfigError(f"parent_masks must be (K, M={entries.shape[0]}) with parent_sums (K, C={classes}, D={dim}); got "
                              f"{tuple(parent_masks.shape)} and {None if parent_sums is None else tuple(parent_sums.shape)}",
                              argument="parent_masks")
        parent_masks = parent_masks.to(entries.device, torch.bool)
        edits = (masks.unsqueeze(1) != parent_masks.unsqueeze(0)).sum(-1)  # (P, K) entries that differ
        distance, nearest = edits.min(1)  # (P,), (P,) nearest parent (the first one on ties)
        incremental = distance < masks.sum(-1)  # (P,) fewer edits than entries: start from the parent
        parents = parent_masks[nearest] & incremental.unsqueeze(1)  # (P, M), empty for rows summed from scratch
        sums[incremental] = parent_sums[nearest[incremental]].to(sums.dtype)
        plus, minus = masks & ~parents, parents & ~masks  # (P, M) entries gained / lost
    _accumulate(sums, entries, plus, 1.0)
    if minus is not None:
        _accumulate(sums, entries, minus, -1.0)
    return sums


def _accumulate(sums: Tensor, entries: Tensor, selected: Tensor, sign: float) -> None:
    """sums[p] += sign * entries[m] for every True (p, m), in ascending m per row; round j handles each
    row's j-th entry, so the rows of one round are distinct (a plain indexed add, no atomics)."""
    rows, cols = selected.nonzero(as_tuple=True)  # row-major: ascending m within each row
    if rows.numel() == 0:
        return
    counts = selected.sum(-1)  # (P,)
    starts = torch.cumsum(counts, 0) - counts  # (P,) position of each row's first entry
    rank = torch.arange(rows.numel(), device=rows.device) - starts[rows]  # (nnz,) j of each entry in its row
    for j in range(int(counts.max())):
        pick = rank == j  # (nnz,)
        r, c = rows[pick], cols[pick]  # distinct rows
        sums[r] = sums[r] + entries[c] if sign > 0 else sums[r] - entries[c]  # (R, C, D)


def population_logits(features: Tensor, class_embeddings: Tensor, logit_scale: float = 100.0) -> Tensor:
    """(N, D) normalised image features x (P, C, D) class embeddings -> (P, N, C) scaled cosine logits."""
    return logit_scale * torch.einsum("nd,pcd->pnc", features, class_embeddings)  # (P, N, C)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> Tensor:
    """(P, N, C) logits, (N,) labels -> (P,) top-k accuracy in percent (k clipped to C).

    A sample counts as correct when its label is among the k highest logits (ties broken by
    ``torch.topk``'s order, as in the authors' code).
    """
    check_int("k", k, low=1)
    k = max(1, min(int(k), logits.shape[-1]))
    top = logits.topk(k, dim=-1).indices  # (P, N, k)
    hit = (top == labels.view(1, -1, 1)).any(-1)  # (P, N)
    return 100.0 * hit.float().mean(-1)  # (P,)


def interclass_similarity(class_embeddings: Tensor) -> Tensor:
    """S(T) = ||triu(T T^T - I)||_F per candidate: (P, C, D) normalised -> (P,).

    The diagonal of T T^T is 1 for unit rows, so this is the Frobenius norm of the strictly upper
    triangular cosine similarities between classes.
    """
    gram = class_embeddings @ class_embeddings.transpose(1, 2)  # (P, C, C)
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    upper = torch.triu(gram - eye)  # (P, C, C)
    return upper.flatten(1).norm(dim=-1)  # (P,)


def per_candidate_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of each candidate: (P, N, C), (N,) -> (P,) (the "entropy constraint")."""
    log_probs = logits.log_softmax(-1)  # (P, N, C)
    picked = log_probs.gather(-1, labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1)  # (P, N)
    return -picked.mean(-1)  # (P,)


def fitness_scores(
    features: Tensor,
    labels: Tensor,
    class_embeddings: Tensor,
    logit_scale: float = 100.0,
    top1_weight: float = 1.0,
    top5_weight: float = 0.0,
    similarity_weight: float = 0.0,
    entropy_weight: float = 10.0,
) -> FitnessTerms:
    """ProAPO fitness for a population in one batched product.

    Args:
        features: (N, D) L2-normalised image features of the labelled shots.
        labels: (N,) int64 class indices.
        class_embeddings: (P, C, D) normalised class text embeddings of P candidates.
        logit_scale: s, the model's logit scale.
        top1_weight, top5_weight: a1, a5 (accuracies in percent).
        similarity_weight: r; the term enters as ``- r * S(T)`` (see the module docstring for the sign).
        entropy_weight: lambda of the cross-entropy constraint (10 in every authors' config).

    Returns:
        :class:`FitnessTerms` with (P,) tensors.
    """
    if features.dim() != 2 or class_embeddings.dim() != 3 or features.shape[-1] != class_embeddings.shape[-1]:
        raise ConfigError(
            f"features (N, D) and class_embeddings (P, C, D) must share D; got {tuple(features.shape)} and "
            f"{tuple(class_embeddings.shape)}", argument="features"
        )
    if labels.shape != (features.shape[0],):
        raise ConfigError(f"labels must be ({features.shape[0]},), got {tuple(labels.shape)}", argument="labels")
    if features.shape[0] == 0:
        raise ConfigError("features must hold at least one labelled shot, got (0, D)", argument="features")
    if labels.dtype.is_floating_point or int(labels.min()) < 0 or int(labels.max()) >= class_embeddings.shape[1]:
        raise ConfigError(f"labels must be integer class indices in [0, {class_embeddings.shape[1]}), got {labels.dtype} "
                          f"in [{labels.min().item()}, {labels.max().item()}]", argument="labels")
    check_positive("logit_scale", float(logit_scale))
    for name, weight in (("top1_weight", top1_weight), ("top5_weight", top5_weight),
                         ("similarity_weight", similarity_weight), ("entropy_weight", entropy_weight)):
        check_number(name, weight)
    logits = population_logits(features, class_embeddings.to(features.dtype), logit_scale)  # (P, N, C)
    top1 = topk_accuracy(logits, labels, 1)
    top5 = topk_accuracy(logits, labels, 5)
    similarity = interclass_similarity(class_embeddings)
    cross_entropy = per_candidate_cross_entropy(logits, labels)
    fitness = top1_weight * top1 + top5_weight * top5 - similarity_weight * similarity - entropy_weight * cross_entropy
    return FitnessTerms(fitness, top1, top5, similarity, cross_entropy)
