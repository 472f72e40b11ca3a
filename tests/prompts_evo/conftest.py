import hashlib

import pytest
import torch
import torch.nn.functional as F


class HashEncoder:
    """Deterministic fake text tower: a string's embedding is a Gaussian seeded by its hash; counts calls."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[str] = []

    def __call__(self, texts):
        self.calls.extend(texts)
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(int(hashlib.md5(t.encode()).hexdigest()[:8], 16))
            rows.append(torch.randn(self.dim, generator=g))
        return torch.stack(rows)


@pytest.fixture
def hash_encoder():
    return HashEncoder()


@pytest.fixture
def toy_task():
    """10 classes, one shot each, features near the hash embedding of "a photo of a c<i>." (so the
    baseline template is informative and the search has something to find)."""
    enc = HashEncoder()
    classes = [f"c{i}" for i in range(10)]
    base = F.normalize(enc([f"a photo of a {c}." for c in classes]), dim=-1)
    g = torch.Generator().manual_seed(0)
    features = F.normalize(base + 0.9 * torch.randn(base.shape, generator=g), dim=-1)
    return classes, features, torch.arange(10)
