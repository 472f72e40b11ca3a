import math

import pytest
import torch
import torch.nn.functional as F

from vlkit.functional.tfup import (
    cache_logits,
    marginal_entropy,
    multi_level_similarity,
    select_confident_prototypes,
    semantic_kl,
    tfup_cache_shots,
    tfup_logits,
)


def test_cache_shots_follow_the_authors_bounds():
    # K = min(16, max(9, floor(0.3 N / C)))
    assert tfup_cache_shots(1000, 10) == 16  # floor(30) capped at 16
    assert tfup_cache_shots(200, 10) == 9  # floor(6) raised to 9
    assert tfup_cache_shots(400, 10) == 12  # floor(12) within bounds
    assert tfup_cache_shots(2000, 10, proportion=0.75, high=None) == 150  # TFUP-T training subset


def test_selection_on_a_hand_worked_case():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    # class 0 candidates (top-2 of column 0): samples 0, 1. KL(p0||p1) = 0.0367 < KL(p1||p0) = 0.0444 -> 0
    # class 1 candidates: samples 2, 3. KL(p2||p3) = 0.1838 < KL(p3||p2) = 0.1920 -> 2
    assert select_confident_prototypes(probs, shots=1).tolist() == [[0], [2]]


def _reference_selection(probs, shots):
    out = []
    for c in range(probs.shape[1]):
        cand = sorted(range(probs.shape[0]), key=lambda i: -probs[i, c].item())[: 2 * shots]
        scores = []
        for j in cand:
            s = sum(float((probs[j] * (probs[j].log() - probs[k].log())).sum()) for k in cand)
            scores.append((s, j))
        out.append([j for _, j in sorted(scores)[:shots]])
    return out


def test_selection_matches_a_loop_reference():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(50, 4) * 2, dim=-1)
    ours = select_confident_prototypes(probs, shots=3).tolist()
    ref = _reference_selection(probs, 3)
    assert [sorted(r) for r in ours] == [sorted(r) for r in ref]


def test_selection_rejects_too_few_samples():
    with pytest.raises(ValueError, match="shots=5"):
        select_confident_prototypes(torch.full((3, 2), 0.5), shots=5)


def test_semantic_kl_matches_pairwise_definition():
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(5, 3), -1)
    q = torch.softmax(torch.randn(4, 3), -1)
    ref = torch.tensor([[float((pi * (pi.log() - qj.log())).sum()) for qj in q] for pi in p])
    assert torch.allclose(semantic_kl(p, q), ref, atol=1e-6)


def test_msm_hand_case_and_constant_rows():
    w = torch.eye(2)
    f = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # key 0 has the same class distribution as f (D = 0 -> minmax 0 -> S = 2), key 1 the farthest
    # (minmax 1 -> S = 0); cosines are 1 and 0, so A = [2 * 1, 0 * 0]
    assert torch.allclose(multi_level_similarity(f, keys, w), torch.tensor([[2.0, 0.0]]), atol=1e-6)
    # identical keys: the KL row is constant, semantic weight 1, A = cosine (the authors' code gives NaN)
    same = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    a = multi_level_similarity(f, same, w)
    assert torch.isfinite(a).all() and torch.allclose(a, torch.tensor([[0.6, 0.6]]), atol=1e-6)


def test_msm_equals_zscore_then_minmax_of_the_authors():
    torch.manual_seed(2)
    f, keys, w = torch.randn(6, 8), torch.randn(10, 8), torch.randn(3, 8)
    fn, kn, wn = F.normalize(f, dim=-1), F.normalize(keys, dim=-1), F.normalize(w, dim=-1)
    d = semantic_kl(torch.softmax(10 * fn @ wn.T, -1), torch.softmax(10 * kn @ wn.T, -1))
    z = (d - d.mean(1, keepdim=True)) / d.std(1, keepdim=True)
    mm = (z - z.amin(1, keepdim=True)) / (z.amax(1, keepdim=True) - z.amin(1, keepdim=True))
    ref = (fn @ kn.T) * 2 * (1 - mm)
    assert torch.allclose(multi_level_similarity(f, keys, w), ref, atol=1e-5)


def test_cache_kernel_hand_values():
    # exp(-1 * (1 - 2)) = e for class 0, exp(-1 * (1 - 0)) = 1/e for class 1
    out = cache_logits(torch.tensor([[2.0, 0.0]]), torch.eye(2), beta=1.0)
    assert torch.allclose(out, torch.tensor([[math.e, 1 / math.e]]))


def test_tfup_logits_residual_form_and_chunking():
    torch.manual_seed(3)
    f, w, keys = torch.randn(7, 5), torch.randn(3, 5), torch.randn(6, 5)
    values = F.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 3).float()
    zs = 100 * F.normalize(f, dim=-1) @ F.normalize(w, dim=-1).T
    assert torch.allclose(tfup_logits(f, w, keys, values, alpha=0.0), zs, atol=1e-4)
    full = tfup_logits(f, w, keys, values, alpha=0.3)
    a = multi_level_similarity(f, keys, w)
    assert torch.allclose(full, zs + 0.3 * torch.exp(-(1 - a)) @ values, atol=1e-4)
    assert torch.allclose(tfup_logits(f, w, keys, values, chunk_size=3), full, atol=1e-5)
    with pytest.raises(ValueError, match="cache_values"):
        tfup_logits(f, w, keys, values[:, :2])


def test_marginal_entropy_is_log_c_for_a_uniform_batch():
    assert torch.isclose(marginal_entropy(torch.zeros(4, 5)), torch.tensor(math.log(5)))
    # a batch that always predicts one class has zero marginal entropy
    assert marginal_entropy(torch.tensor([[50.0, 0.0], [50.0, 0.0]])) < 1e-6
