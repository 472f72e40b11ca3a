import math

import pytest
import torch
import torch.nn.functional as F

from prompts_evo.functional.fitness import (
    class_embeddings_from_masks,
    fitness_scores,
    interclass_similarity,
    per_candidate_cross_entropy,
    population_logits,
    topk_accuracy,
)


def test_class_embeddings_mean_of_selected_entries():
    # class 0 pool: e1, e2; class 1 pool: e2, -e1 (D = 2)
    pool = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [-1.0, 0.0]]])  # (C=2, M=2, D=2)
    masks = torch.tensor([[[True, True], [True, False]]])  # (P=1, C=2, M=2)
    emb = class_embeddings_from_masks(pool, masks)
    # class 0: normalise(e1 + e2) = (1/sqrt2, 1/sqrt2); class 1: e2 alone
    r = 1 / math.sqrt(2)
    assert torch.allclose(emb[0], torch.tensor([[r, r], [0.0, 1.0]]))


def test_shared_mask_equals_explicit_per_class_mask():
    pool = F.normalize(torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    shared = torch.tensor([[[True, False, True, False, False]]])  # (1, 1, 5)
    explicit = shared.expand(1, 3, 5)
    assert torch.allclose(class_embeddings_from_masks(pool, shared), class_embeddings_from_masks(pool, explicit))


def test_bad_mask_shape_raises():
    with pytest.raises(ValueError, match="masks"):
        class_embeddings_from_masks(torch.zeros(3, 5, 4), torch.zeros(1, 2, 5, dtype=torch.bool))


def test_topk_accuracy_hand_values():
    # 3 samples, 3 classes; labels 0, 1, 2
    logits = torch.tensor([[[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 3.0, 2.0]]])  # (P=1, N=3, C=3)
    labels = torch.tensor([0, 1, 2])
    # top-1: only sample 0 right -> 33.3%; top-2: sample 0 yes, sample 1 (label 1 is 2nd) yes, sample 2 (label 2 is 2nd) yes
    assert topk_accuracy(logits, labels, 1).item() == pytest.approx(100 / 3)
    assert topk_accuracy(logits, labels, 2).item() == pytest.approx(100.0)
    assert topk_accuracy(logits, labels, 5).item() == pytest.approx(100.0)  # k clipped to C


def test_interclass_similarity_hand_values():
    # classes e1, e2, e1: pairwise cosines (0,1)=0, (0,2)=1, (1,2)=0 -> Frobenius norm 1
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    assert interclass_similarity(t).item() == pytest.approx(1.0)
    # two classes at 60 degrees: one off-diagonal entry cos 60 = 0.5
    t = torch.tensor([[[1.0, 0.0], [0.5, math.sqrt(3) / 2]]])
    assert interclass_similarity(t).item() == pytest.approx(0.5, abs=1e-6)


def test_cross_entropy_uniform_logits_is_log_c():
    logits = torch.zeros(2, 4, 3)  # (P, N, C) all ties
    labels = torch.tensor([0, 1, 2, 0])
    assert torch.allclose(per_candidate_cross_entropy(logits, labels), torch.full((2,), math.log(3)))
    # agrees with torch's cross_entropy on random logits
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1))
    ref = torch.stack([F.cross_entropy(l, labels) for l in logits])
    assert torch.allclose(per_candidate_cross_entropy(logits, labels), ref, atol=1e-6)


def test_fitness_hand_derived():
    # 2 classes in D = 2; features are exactly the class directions, labels 0, 1
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    # candidate: perfect orthogonal classes; logits with s=1 -> [[1,0],[0,1]]
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    terms = fitness_scores(features, labels, emb, logit_scale=1.0, top1_weight=1.0, top5_weight=0.5, similarity_weight=2.0, entropy_weight=10.0)
    ce = -math.log(math.e / (math.e + 1))  # softmax([1, 0])[0]
    assert terms.top1.item() == pytest.approx(100.0)
    assert terms.top5.item() == pytest.approx(100.0)
    assert terms.similarity.item() == pytest.approx(0.0)
    assert terms.cross_entropy.item() == pytest.approx(ce, rel=1e-5)
    # F = 1*100 + 0.5*100 - 2*0 - 10*ce
    assert terms.fitness.item() == pytest.approx(150.0 - 10 * ce, rel=1e-5)


def test_similarity_term_is_a_penalty():
    # classes at 60 degrees: S = 0.5 > 0, so a positive similarity_weight must lower the fitness by r * S
    features = torch.tensor([[1.0, 0.0]])
    labels = torch.tensor([0])
    emb = torch.tensor([[[1.0, 0.0], [0.5, math.sqrt(3) / 2]]])
    base = fitness_scores(features, labels, emb, similarity_weight=0.0).fitness
    pen = fitness_scores(features, labels, emb, similarity_weight=4.0).fitness
    assert (base - pen).item() == pytest.approx(4.0 * 0.5, abs=1e-4)


def test_batched_population_matches_one_by_one():
    g = torch.Generator().manual_seed(3)
    features = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    emb = F.normalize(torch.randn(5, 3, 8, generator=g), dim=-1)
    batched = fitness_scores(features, labels, emb, top5_weight=0.1, similarity_weight=1.0).fitness
    single = torch.cat([fitness_scores(features, labels, emb[i : i + 1], top5_weight=0.1, similarity_weight=1.0).fitness for i in range(5)])
    assert torch.allclose(batched, single)
    # and population_logits is the plain matmul
    assert torch.allclose(population_logits(features, emb, 100.0)[2], 100.0 * features @ emb[2].T)


def test_fitness_shape_errors():
    with pytest.raises(ValueError, match="share D"):
        fitness_scores(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="labels"):
        fitness_scores(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.zeros(1, 2, 3))
