import torch

from prompts_evo.functional.grouping import group_classes, group_limits, kmeans, silhouette_score


def _two_blobs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=g) * 0.01 + torch.tensor([5.0, 0.0, 0.0])
    b = torch.randn(6, 3, generator=g) * 0.01 - torch.tensor([5.0, 0.0, 0.0])
    return torch.cat([a, b])


def test_kmeans_recovers_separated_blobs():
    labels = kmeans(_two_blobs(), 2, generator=torch.Generator().manual_seed(1))
    assert len(set(labels[:6].tolist())) == 1 and len(set(labels[6:].tolist())) == 1
    assert labels[0] != labels[6]


def test_silhouette_near_one_for_separated_and_low_for_mixed():
    pts = _two_blobs()
    good = torch.tensor([0] * 6 + [1] * 6)
    mixed = torch.tensor([0, 1] * 6)
    # tight blobs 10 apart: a ~ 0.02, b ~ 10 -> (b - a) / b ~ 1
    assert silhouette_score(pts, good) > 0.99
    assert silhouette_score(pts, mixed) < 0.1


def test_group_limits_follow_log_c():
    # C = 10: int(2.5 ln 10) = int(5.76) = 5; int(10 ln 10) = int(23.03) = 23
    assert group_limits(10) == (5, 23)
    assert group_limits(100) == (11, 46)


def test_small_c_is_one_group_and_large_c_splits():
    assert group_classes(torch.randn(10, 4)) == [list(range(10))]
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 10
    pts = centres.repeat_interleave(8, 0) + 0.01 * torch.randn(40, 8, generator=g)  # 40 classes, 5 clusters
    groups = group_classes(pts, torch.Generator().manual_seed(0))  # k in {5, 7}
    assert sorted(c for grp in groups for c in grp) == list(range(40))
    assert len(groups) == 5 and all(len(grp) == 8 for grp in groups)
