"""Few-shot segmentation metrics against hand-computed IoUs, and torchmetrics' accumulation (what
LitRePRI logs) against the pure-torch reference."""

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from vlkit.functional.segmentation import classwise_miou, episode_intersection_union, fb_iou


def _two_episodes():
    # episode 0 (class 3): target fg = 2 pixels, pred hits 1 of them and adds 1 false positive
    # episode 1 (class 5): target fg = 1 pixel, pred exact; one pixel ignored
    target = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 255]])
    pred = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    return pred, target, torch.tensor([3, 5])


def test_intersection_union_by_hand():
    pred, target, _ = _two_episodes()
    inter, union = episode_intersection_union(pred, target)
    # ep 0: fg I = 1, U = 3 (pixels 0, 1, 2); bg I = 1 (pixel 3), U = 3 (pixels 1, 2, 3)
    # ep 1: fg I = 1, U = 1; bg I = 2 (pixels 0, 2), U = 2; pixel 3 ignored
    assert inter.tolist() == [[1, 1], [2, 1]]
    assert union.tolist() == [[3, 3], [2, 1]]


def test_classwise_miou_and_fb_iou_by_hand():
    pred, target, classes = _two_episodes()
    inter, union = episode_intersection_union(pred, target)
    miou, ids, ious = classwise_miou(inter[:, 1], union[:, 1], classes)
    assert ids.tolist() == [3, 5] and ious.tolist() == pytest.approx([1 / 3, 1.0])
    assert miou.item() == pytest.approx((1 / 3 + 1) / 2)
    # FB-IoU: bg (1 + 2) / (3 + 2) = 0.6, fg (1 + 1) / (3 + 1) = 0.5 -> 0.55
    assert fb_iou(inter, union).item() == pytest.approx(0.55)


def test_classwise_miou_sums_over_episodes_of_a_class_before_dividing():
    # two episodes of class 0: IoU 1/2 (I 1, U 2) and 3/4 (I 3, U 4): class IoU = 4/6, not the mean 5/8
    miou, _, _ = classwise_miou(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]), torch.tensor([0, 0]))
    assert miou.item() == pytest.approx(4 / 6)


def test_torchmetrics_accumulation_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(6, 9, 7, generator=g) > 0.7).long()
    target[:, 0, :2] = 255
    pred = torch.rand(6, 9, 7, generator=g) > 0.5
    classes = torch.tensor([0, 2, 0, 1, 2, 2])
    class_metric = MulticlassJaccardIndex(4, average="none", ignore_index=255, zero_division=float("nan"))
    fb_metric = MulticlassJaccardIndex(2, average="macro", ignore_index=255)
    for p, t, c in zip(pred, target, classes):  # the mapping LitRePRI uses: fg pixels carry class + 1
        class_metric.update(torch.where(p, c + 1, 0).flatten(), torch.where(t == 1, c + 1, t).flatten())
        fb_metric.update(p.long().flatten(), t.flatten())
    inter, union = episode_intersection_union(pred, target)
    ref_miou, _, ref_ious = classwise_miou(inter[:, 1], union[:, 1], classes)
    assert torch.allclose(class_metric.compute()[1:].double(), ref_ious, atol=1e-6)
    assert class_metric.compute()[1:].nanmean().item() == pytest.approx(ref_miou.item(), abs=1e-6)
    assert fb_metric.compute().item() == pytest.approx(fb_iou(inter, union).item(), abs=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        episode_intersection_union(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 3, 2))
