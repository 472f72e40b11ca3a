"""Item text embeddings from any Hugging Face encoder (masked mean pooling, the authors' pooling), cached
on disk keyed by a hash of (encoder, max_length, texts) and written atomically.

The encoder is the kit's one sentence encoder, ``vlkit.models.text_encoders.MeanPoolTextEncoder`` (also the
offline preset's text tower); the cache lives under the kit's cache root (``$VLKIT_CACHE/item_embeddings``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor

from vlkit.cache import atomic_torch_save, cache_root
from vlkit.errors import ConfigError, check_int
from vlkit.models.pretrained import minilm_dir

__all__ = ["encode_item_texts", "cached_item_embeddings", "resolve_encoder", "check_encoder_name"]


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
def encode_item_texts(
    texts: list[str],
    encoder: str = "minilm",
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device | None = None,
) -> Tensor:
    """(N,) item texts -> (N, D) float32 embeddings on the CPU: masked mean pooling of the last hidden state,
    L2-normalised (``vlkit.models.text_encoders.MeanPoolTextEncoder``).

    ``encoder``: ``"minilm"``, ``"hash-<D>"`` (model-free, for tests) or a Hugging Face path/id;
    ``device``: where the encoder runs (None: CUDA when available, else the CPU).
    """
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
    from vlkit.models.text_encoders import MeanPoolTextEncoder  # transformers: imported on first use

    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    model = MeanPoolTextEncoder(resolve_encoder(encoder), max_length=max_length, device=device)
    return model(list(texts), batch_size=batch_size, progress=True).cpu()  # (N, D); a bar: catalogues are long


def cached_item_embeddings(
    texts: list[str],
    encoder: str = "minilm",
    cache_dir: str | Path | None = None,
    max_length: int = 128,
    device: str | torch.device | None = None,
) -> Tensor:
    """:func:`encode_item_texts` with an on-disk cache: ``<cache_dir>/<encoder>-<hash>.pt``, a (N, D) tensor
    written atomically (``cache_dir`` None: ``$VLKIT_CACHE/item_embeddings``)."""
    check_encoder_name(encoder)
    check_int("max_length", max_length, low=1)
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root("item_embeddings")
    digest = hashlib.sha256()
    digest.update(f"{encoder}|{max_length}|{len(texts)}".encode())
    for t in texts:
        digest.update(t.encode() + b"\x00")
    path = cache_dir / f"{encoder.replace('/', '_')}-{digest.hexdigest()[:16]}.pt"
    if path.exists():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(cached, Tensor) and cached.shape[0] == len(texts):
                return cached
        except Exception:  # a corrupt or truncated file is a miss: encoded again and rewritten below
            pass
    embeddings = encode_item_texts(texts, encoder, max_length=max_length, device=device)
    atomic_torch_save(embeddings, path)  # a reader never sees a half-written file
    return embeddings
