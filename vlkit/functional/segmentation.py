"""Few-shot segmentation metrics as pure tensor math: per-episode intersections and unions, class-wise
mIoU and FB-IoU.

- Class-wise mIoU (PFENet, Tian et al. TPAMI 2020; RePRI, Boudiaf et al. CVPR 2021): for each novel class,
  sum the foreground intersection and union over all episodes of that class, take the ratio, then average
  over the classes. Background is not counted.
- FB-IoU (Rakelly et al. 2018; CANet, PANet): foreground and background IoU from intersections and unions
  summed over all episodes, averaged over the two.

Labels: 0 background, 1 foreground, 255 ignored. Shapes: B episodes, H W pixels.
The Lightning module accumulates the same quantities with torchmetrics' ``MulticlassJaccardIndex``; these
functions are the reference the tests hold it to, and what the benchmark script uses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError

__all__ = ["episode_intersection_union", "classwise_miou", "fb_iou"]


def episode_intersection_union(pred: Tensor, target: Tensor, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Intersections and unions of background (column 0) and foreground (column 1) per episode.

    Args:
        pred: (B, H, W) bool or {0, 1} predicted foreground.
        target: (B, H, W) in {0, 1, ignore_index}.

    Returns:
        ``(intersection, union)``, each (B, 2) float64 pixel counts over the non-ignored pixels.
    """
    if pred.shape != target.shape or pred.dim() < 2:
        raise ConfigError(
            f"pred and target must have the same shape (B, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}",
            argument="target",
        )
    valid = target != ignore_index  # (B, H, W)
    pred_fg = pred.bool() & valid
    true_fg = (target == 1) & valid
    pred_bg = ~pred.bool() & valid
    true_bg = (target == 0) & valid
    dims = tuple(range(1, pred.dim()))
    inter = torch.stack([(pred_bg & true_bg).sum(dims), (pred_fg & true_fg).sum(dims)], dim=1)  # (B, 2)
    union = torch.stack([(pred_bg | true_bg).sum(dims), (pred_fg | true_fg).sum(dims)], dim=1)  # (B, 2)
    return inter.double(), union.double()


def classwise_miou(intersection: Tensor, union: Tensor, class_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Class-wise mIoU from foreground counts.

    Args:
        intersection, union: (B,) foreground counts per episode (column 1 of
            :func:`episode_intersection_union`).
        class_ids: (B,) the class each episode segments.

    Returns:
        ``(miou, classes, ious)``: the mean over the classes seen, the sorted class ids (C,) and their IoUs (C,).
    """
    if not intersection.shape == union.shape == class_ids.shape or intersection.dim() != 1:
        raise ConfigError(
            f"intersection, union and class_ids must all be (B,), got {tuple(intersection.shape)}, "
            f"{tuple(union.shape)}, {tuple(class_ids.shape)}",
            argument="class_ids",
        )
    classes, inverse = torch.unique(class_ids, return_inverse=True)  # (C,), (B,)
    inter = torch.zeros(len(classes), dtype=torch.float64, device=intersection.device).index_add_(
        0, inverse, intersection.double()
    )  # (C,)
    uni = torch.zeros(len(classes), dtype=torch.float64, device=union.device).index_add_(0, inverse, union.double())
    ious = inter / uni.clamp_min(1)  # a class never predicted nor present cannot occur (each episode has fg)
    return ious.mean(), classes, ious


def fb_iou(intersection: Tensor, union: Tensor) -> Tensor:
    """FB-IoU: mean of background and foreground IoU from counts summed over episodes; inputs (B, 2)."""
    if intersection.shape != union.shape or intersection.dim() != 2 or intersection.shape[1] != 2:
        raise ConfigError(
            f"intersection and union must both be (B, 2), got {tuple(intersection.shape)} and {tuple(union.shape)}",
            argument="union",
        )
    totals = intersection.double().sum(0) / union.double().sum(0).clamp_min(1)  # (2,)
    return totals.mean()
