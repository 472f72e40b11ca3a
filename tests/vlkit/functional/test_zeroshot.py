import torch

from vlkit.functional.ridge import ridge_fit
from vlkit.functional.zeroshot import class_embeddings_from_prompts, zeroshot_logits


def test_class_embedding_is_mean_of_normalised_prompts():
    # class 0: [1, 0] and [0, 2] -> normalised mean [0.5, 0.5] -> [0.7071, 0.7071]; class 1: [0, -3] -> [0, -1]
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, -3.0]])
    out = class_embeddings_from_prompts(emb, torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(out, torch.tensor([[0.70710678, 0.70710678], [0.0, -1.0]]), atol=1e-6)


def test_zeroshot_logits_scale_cosines():
    f = torch.tensor([[3.0, 4.0]])  # unit vector [0.6, 0.8]
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(zeroshot_logits(f, w, 100.0), torch.tensor([[60.0, 80.0]]))


def test_ridge_closed_form():
    # X = I: (I + lam I)^{-1} Y = Y / (1 + lam)
    y = torch.tensor([[2.0, -1.0], [0.5, 4.0]])
    assert torch.allclose(ridge_fit(torch.eye(2), y, 0.25), y / 1.25, atol=1e-6)
