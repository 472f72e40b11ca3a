"""Text embeddings cached per prompt string, so a generation encodes only the prompts it has not seen.

ProAPO's candidates reuse the same prompt strings over and over (a template set differs from its parent
by one template); the authors re-encode every candidate's prompts. Here each distinct string is encoded
once per backbone, kept in memory, and optionally persisted to disk through the kit's keyed cache
(``vlkit.cache.KeyedCache``, namespace ``text-embeddings``, keyed by the backbone fingerprint, written
atomically), so repeated searches (other seeds, the demo) skip the text tower entirely.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vlkit.cache import KeyedCache
from vlkit.errors import ConfigError, check_int

__all__ = ["PromptEmbeddingCache"]

NAMESPACE = "text-embeddings"


class PromptEmbeddingCache:
    """Map prompt strings to L2-normalised text embeddings, encoding each distinct string once.

    Args:
        encode: a function ``list[str] -> (T, D)`` tensor (e.g. ``backbone.encode_text``); called only on
            strings not yet cached, in chunks of ``batch_size``.
        fingerprint: identity of the text encoder (``backbone.fingerprint``); keys the disk file.
        cache_dir: root of the persisted cache (the file goes to ``<cache_dir>/text-embeddings/``; pass
            ``vlkit.cache.cache_root()`` for the kit's cache), or None for memory only.
        batch_size: strings per ``encode`` call (default 2048, the authors' ``batch_size_text``): large
            enough for an encoder that batches by length (``MeanPoolTextEncoder``) to find rows of equal
            length; the encoders batch their own forward passes.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], Tensor],
        fingerprint: str,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 2048,
    ) -> None:
        check_int("batch_size", batch_size, low=1)
        if not callable(encode):
            raise ConfigError(f"encode must be a function list[str] -> (T, D) tensor, got {type(encode).__name__}", argument="encode")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ConfigError(f"fingerprint must be a non-empty str identifying the text encoder, got {fingerprint!r}",
                              argument="fingerprint")
        self.encode = encode
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.table: dict[str, Tensor] = {}
        self.num_encoded = 0  # strings sent to the encoder by this object (benchmarks read it)
        self._dirty = False
        self._key = {"kind": "prompt-embeddings", "fingerprint": fingerprint}
        self.store = KeyedCache(NAMESPACE, directory=cache_dir) if cache_dir is not None else None
        if self.store is not None:
            blob = self.store.get(self._key, check=_well_formed)  # a corrupt or foreign file is a miss
            if blob is not None:
                self.table = dict(zip(blob["texts"], blob["embeddings"].unbind(0)))

    @property
    def path(self):
        """The file of the persisted cache (None for memory only)."""
        return self.store.path(self._key) if self.store is not None else None

    def __len__(self) -> int:
        """Number of distinct strings held."""
        return len(self.table)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> Tensor:
        """(T,) strings -> (T, D) float32 normalised embeddings on CPU (cached strings are not re-encoded)."""
        if isinstance(texts, str):
            raise ConfigError(f"texts must be a list of str, got the string {texts!r}", argument="texts")
        texts = list(texts)
        if not texts:
            raise ConfigError("texts must be non-empty, got []", argument="texts")
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ConfigError(f"texts must all be str, got {type(bad[0]).__name__} {bad[0]!r}", argument="texts")
        missing = list(dict.fromkeys(t for t in texts if t not in self.table))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            emb = F.normalize(self.encode(chunk).float(), dim=-1).cpu()  # (t, D)
            self.table.update(zip(chunk, emb.unbind(0)))
            self.num_encoded += len(chunk)
            self._dirty = True
        return torch.stack([self.table[t] for t in texts])  # (T, D)

    def save(self) -> None:
        """Write the cache to disk atomically (``KeyedCache.put``); a no-op without ``cache_dir`` or news."""
        if self.store is None or not self._dirty:
            return
        texts = list(self.table)
        self.store.put(self._key, {"texts": texts, "embeddings": torch.stack([self.table[t] for t in texts])})  # (T, D)
        self._dirty = False


def _well_formed(payload: dict) -> bool:
    texts, embeddings = payload.get("texts"), payload.get("embeddings")
    return isinstance(texts, list) and isinstance(embeddings, Tensor) and embeddings.dim() == 2 and len(texts) == embeddings.shape[0]
