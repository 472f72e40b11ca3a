"""Grouping of classes for ProAPO's description search (the authors' K-means category groups).

Paper: Qu et al., CVPR 2025 (arXiv 2502.19844), "group sampling"; the authors run faiss K-means
(150 iterations) on the class text embeddings for k in [5, 0.2 C) in steps of 2 and keep the k with the
best silhouette score. Restated here in torch (no faiss dependency), seeded by the generator passed in.
Pure tensor functions: no I/O, no state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int

__all__ = ["kmeans", "silhouette_score", "group_classes", "group_limits"]


def kmeans(points: Tensor, k: int, iterations: int = 150, generator: torch.Generator | None = None) -> Tensor:
    """Lloyd's K-means on (C, D) points with k-means++ seeding (as faiss' default quality) -> (C,) labels."""
    if points.dim() != 2 or points.shape[0] == 0:
        raise ConfigError(f"points must be a non-empty (C, D) tensor, got shape {tuple(points.shape)}", argument="points")
    check_int("k", k, low=1, high=points.shape[0])
    check_int("iterations", iterations, low=1)
    first = int(torch.randint(points.shape[0], (1,), generator=generator))
    chosen = [first]
    for _ in range(1, k):
        d2 = torch.cdist(points, points[chosen]).min(-1).values.pow(2).cpu()  # (C,)
        if float(d2.sum()) <= 0:
            d2 = torch.ones_like(d2)
        d2[chosen] = 0
        chosen.append(int(torch.multinomial(d2, 1, generator=generator)))
    centres = points[chosen].clone()  # (k, D)
    labels = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    for _ in range(iterations):
        new_labels = torch.cdist(points, centres).argmin(-1)  # (C,)
        if _ > 0 and torch.equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = labels == j
            if members.any():
                centres[j] = points[members].mean(0)
    return labels


def silhouette_score(points: Tensor, labels: Tensor) -> float:
    """Mean silhouette (b - a) / max(a, b) with Euclidean distances; points in singleton clusters score 0."""
    dist = torch.cdist(points, points)  # (C, C)
    clusters = labels.unique()
    if clusters.numel() < 2:
        return 0.0
    scores = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    for i in range(points.shape[0]):
        same = labels == labels[i]
        if same.sum() <= 1:
            continue
        a = dist[i, same].sum() / (same.sum() - 1)  # excludes the zero self-distance
        b = min(dist[i, labels == j].mean() for j in clusters if j != labels[i])
        scores[i] = (b - a) / torch.clamp(torch.maximum(a, b), min=1e-12)
    return float(scores.mean())


def group_limits(num_classes: int) -> tuple[int, int]:
    """(classes per group, classes in total) searched: int(2.5 ln C) and int(10 ln C), at least 1."""
    check_int("num_classes", num_classes, low=1)
    log_c = math.log(max(num_classes, 2))
    return max(1, int(2.5 * log_c)), max(1, int(10 * log_c))


def group_classes(class_embeddings: Tensor, generator: torch.Generator | None = None, iterations: int = 150) -> list[list[int]]:
    """Split C classes into groups of similar (easily confused) classes.

    K-means over (C, D) normalised class text embeddings for k in range(5, ceil(0.2 C), 2), keeping the k
    with the best silhouette score. When that range is empty (C <= 25) all classes form one group.
    Returns groups as lists of class indices, largest group first.
    """
    if class_embeddings.dim() != 2 or class_embeddings.shape[0] == 0:
        raise ConfigError(f"class_embeddings must be a non-empty (C, D) tensor, got shape {tuple(class_embeddings.shape)}",
                          argument="class_embeddings")
    num_classes = class_embeddings.shape[0]
    candidates = list(range(5, math.ceil(0.2 * num_classes), 2))
    if not candidates:
        return [list(range(num_classes))]
    best_labels, best_score = None, -math.inf
    for k in candidates:
        labels = kmeans(class_embeddings, k, iterations, generator)
        score = silhouette_score(class_embeddings, labels)
        if score > best_score:
            best_labels, best_score = labels, score
    groups = [torch.nonzero(best_labels == j).flatten().tolist() for j in best_labels.unique().tolist()]
    return sorted(groups, key=len, reverse=True)
