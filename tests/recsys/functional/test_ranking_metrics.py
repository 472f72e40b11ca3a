import math

import pytest
import torch

from recsys.functional.metrics import (
    first_hit_rank,
    hit_at_k,
    mean_with_ci,
    ndcg_at_k,
    ranking_metrics,
    target_rank_from_scores,
)


def test_hand_computed_rankings():
    # three users; the target sits at beam 0, beam 2 and nowhere
    recommended = torch.tensor([[7, 1, 2], [4, 5, 9], [1, 2, 3]])
    target = torch.tensor([7, 9, 8])
    rank = first_hit_rank(recommended, target)
    assert rank.tolist() == [0, 2, -1]
    # HR@1 = 1/3, HR@3 = 2/3
    assert hit_at_k(rank, 1).mean().item() == pytest.approx(1 / 3)
    assert hit_at_k(rank, 3).mean().item() == pytest.approx(2 / 3)
    # NDCG@3 = (1/log2(2) + 1/log2(4) + 0) / 3 = (1 + 0.5) / 3 = 0.5
    assert ndcg_at_k(rank, 3).mean().item() == pytest.approx(0.5)
    # NDCG@2: only the first user counts -> 1/3
    assert ndcg_at_k(rank, 2).mean().item() == pytest.approx(1 / 3)


def test_rank_from_scores_ties_are_pessimistic():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [3.0, 2.0, 1.0, 0.0]])
    # user 0 target item 2 (0.5): item 1 beats it and item 3 ties -> rank 2; user 1 target item 0 -> rank 0
    assert target_rank_from_scores(scores, torch.tensor([2, 0])).tolist() == [2, 0]


def test_against_torchmetrics_retrieval():
    # independent reference: torchmetrics' retrieval HR and NDCG on full score rows (no ties)
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalNormalizedDCG

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 30, generator=g)
    target = torch.randint(0, 30, (20,), generator=g)
    rank = target_rank_from_scores(scores, target)
    relevance = torch.zeros_like(scores, dtype=torch.bool)
    relevance[torch.arange(20), target] = True
    indexes = torch.arange(20).unsqueeze(1).expand_as(scores)
    for k in (1, 5, 10):
        hr = RetrievalHitRate(top_k=k)(scores.flatten(), relevance.flatten(), indexes.flatten())
        ndcg = RetrievalNormalizedDCG(top_k=k)(scores.flatten(), relevance.flatten(), indexes.flatten())
        assert hit_at_k(rank, k).mean().item() == pytest.approx(hr.item(), abs=1e-6)
        assert ndcg_at_k(rank, k).mean().item() == pytest.approx(ndcg.item(), abs=1e-6)


def test_confidence_interval():
    # values 0,1,0,1: mean 0.5, sample std sqrt(1/3), half-width 1.96 * sqrt(1/3) / 2
    mean, ci = mean_with_ci(torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)
    out = ranking_metrics(torch.tensor([0, -1]), ks=(1,))
    assert out["hr@1"][0] == pytest.approx(0.5) and out["ndcg@1"][0] == pytest.approx(0.5)


def test_ranking_log_dict_names_and_values():
    from recsys.functional.metrics import ranking_log_dict

    ranks = [torch.tensor([0, 2]), torch.tensor([-1, 5])]  # two batches
    out = ranking_log_dict("test", ranks, ks=(1, 3), prefix="exact_")
    # hr@1: only rank 0 -> 1/4; hr@3: ranks 0, 2 -> 2/4; ndcg@3: (1/log2(2) + 1/log2(4)) / 4 = 1.5 / 4
    assert out["test/exact_hr@1"] == pytest.approx(0.25)
    assert out["test/exact_hr@3"] == pytest.approx(0.5)
    assert out["test/exact_ndcg@3"] == pytest.approx(0.375)
    assert out["test/exact_rows"] == 4.0
    # the CI half-width of hr@3: 1.96 * std([1, 1, 0, 0], unbiased) / sqrt(4) = 1.96 * sqrt(1/3) / 2
    assert out["test/exact_hr@3_ci"] == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)
    assert sorted(out) == sorted(f"test/exact_{m}@{k}{s}" for m in ("hr", "ndcg") for k in (1, 3) for s in ("", "_ci")) + ["test/exact_rows"]
    assert ranking_log_dict("val", torch.cat(ranks), ks=(1, 3)) == {k.replace("test/exact_", "val/"): v for k, v in out.items()}
    assert ranking_log_dict("val", []) == {}


def test_chance_metrics_of_a_random_ranking():
    from recsys.functional.metrics import chance_metrics

    # 48 items, K = 10: the target is in the top 10 for 10 of the 48 equally likely ranks -> 10/48;
    # NDCG@10 = (1/log2(2) + 1/log2(3) + ... + 1/log2(11)) / 48 = 4.5436 / 48 (the ten terms summed by hand:
    # 1 + .6309 + .5 + .4307 + .3869 + .3562 + .3333 + .3155 + .3010 + .2891)
    chance = chance_metrics(48, 10)
    assert chance["hr@10"] == pytest.approx(10 / 48)
    assert chance["ndcg@10"] == pytest.approx(4.5436 / 48, abs=1e-5)
    # fewer items than K: every rank is a hit
    assert chance_metrics(3, 10)["hr@10"] == pytest.approx(1.0)
    # the mean over many uniformly random rankings agrees (an independent check of the formula)
    gen = torch.Generator().manual_seed(0)
    ranks = torch.randint(0, 48, (200_000,), generator=gen)
    assert ndcg_at_k(ranks, 10).mean().item() == pytest.approx(chance["ndcg@10"], abs=2e-3)
