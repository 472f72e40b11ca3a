"""Item text embeddings from any Hugging Face encoder (masked mean pooling, the authors' pooling), cached
on disk keyed by a hash of (encoder, max_length, texts) and written atomically."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int

__all__ = ["encode_texts", "cached_item_embeddings", "resolve_encoder", "check_encoder_name"]


def check_encoder_name(encoder) -> str:
    """``"minilm"``, ``"hash-<D>"`` with an integer D >= 1, or a non-empty path/id (not loaded here)."""
    if not isinstance(encoder, str) or not encoder.strip():
        raise ConfigError(f"text_encoder must be 'minilm', 'hash-<D>' or a Hugging Face path/id, got {encoder!r}",
                          argument="text_encoder")
    if encoder.startswith("hash-"):
        dim = encoder.split("-", 1)[1]
        if not dim.isdigit() or int(dim) < 1:
            raise ConfigError(f"text_encoder 'hash-<D>' needs an integer D >= 1, got {encoder!r}", argument="text_encoder")
    return encoder


def resolve_encoder(encoder: str) -> str:
    """``"minilm"`` -> the packaged all-MiniLM-L6-v2 directory; ``"hash-<D>"`` (tests) stays; else a path/id."""
    if encoder == "minilm":
        from vlkit.models.pretrained import minilm_dir

        return str(minilm_dir())
    return encoder


def _hash_embed(texts: list[str], dim: int) -> Tensor:
    """A model-free embedding for tests: signed feature hashing of lower-cased words, L2-normalised."""
    out = torch.zeros(len(texts), dim)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            h = int(hashlib.md5(word.encode()).hexdigest(), 16)
            out[i, h % dim] += 1.0 if (h >> 64) & 1 else -1.0
    return torch.nn.functional.normalize(out, dim=1)


@torch.no_grad()
def encode_texts(texts: list[str], encoder: str = "minilm", batch_size: int = 64, max_length: int = 128) -> Tensor:
    """(N,) texts -> (N, D) float32 embeddings, masked mean pooling of the last hidden state, L2-normalised."""
    if isinstance(texts, str) or not texts:
        raise ConfigError(f"texts must be a non-empty list of str, got {texts!r}", argument="texts")
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty:
        raise ConfigError(f"texts must all be non-empty: items without text at positions {empty[:5]} (every item needs a title)",
                          argument="texts")
    check_encoder_name(encoder)
    check_int("batch_size", batch_size, low=1)
    check_int("max_length", max_length, low=1)
    if encoder.startswith("hash-"):
        return _hash_embed(texts, int(encoder.split("-", 1)[1]))
    from transformers import AutoModel, AutoTokenizer

    path = resolve_encoder(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        chunks.append(torch.nn.functional.normalize(pooled.float(), dim=1).cpu())
    return torch.cat(chunks)


def cached_item_embeddings(
    texts: list[str], encoder: str = "minilm", cache_dir: str | Path | None = None, max_length: int = 128
) -> Tensor:
    """:func:`encode_texts` with an on-disk cache (``$VLKIT_CACHE/item_embeddings/<hash>.pt``)."""
    check_encoder_name(encoder)
    check_int("max_length", max_length, low=1)
    if cache_dir is None:
        from vlkit.models.pretrained import cache_root

        cache_dir = cache_root() / "item_embeddings"
    cache_dir = Path(cache_dir)
    digest = hashlib.sha256()
    digest.update(f"{encoder}|{max_length}|{len(texts)}".encode())
    for t in texts:
        digest.update(t.encode() + b"\x00")
    path = cache_dir / f"{encoder.replace('/', '_')}-{digest.hexdigest()[:16]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    embeddings = encode_texts(texts, encoder, max_length=max_length)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    os.close(fd)
    torch.save(embeddings, tmp)
    os.replace(tmp, path)  # atomic: a reader never sees a half-written file
    return embeddings
