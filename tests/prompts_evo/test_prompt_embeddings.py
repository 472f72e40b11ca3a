import torch

from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache


def test_cache_encodes_missing_strings_only_and_persists(tmp_path, hash_encoder):
    cache = PromptEmbeddingCache(hash_encoder, "fp", cache_dir=tmp_path, batch_size=2)
    a = cache.embed(["x", "y", "x"])
    assert hash_encoder.calls == ["x", "y"]
    assert torch.allclose(a.norm(dim=-1), torch.ones(3))
    cache.embed(["y", "z"])
    assert hash_encoder.calls == ["x", "y", "z"]
    cache.save()
    again = PromptEmbeddingCache(hash_encoder, "fp", cache_dir=tmp_path)
    b = again.embed(["x", "y", "x"])
    assert torch.allclose(a, b) and again.num_encoded == 0  # read from disk, not re-encoded
    other = PromptEmbeddingCache(hash_encoder, "another-backbone", cache_dir=tmp_path)
    assert len(other) == 0  # keyed by fingerprint
    assert not list(tmp_path.glob("*.tmp"))
