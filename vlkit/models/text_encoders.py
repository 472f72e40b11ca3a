"""The kit's one sentence encoder: a Hugging Face encoder with masked mean pooling and L2 normalisation.

This is how sentence-transformers runs all-MiniLM-L6-v2 (and how MiniOneRec's authors pool item titles):
the last hidden states of the real tokens are averaged, then normalised to unit length. Both users share
it: the offline preset's text tower (``vlkit.models.backbones.OfflineLite0MiniLM``) and recsys's item
embeddings (``recsys.models.text_encoder.encode_item_texts``).

Device-agnostic: the encoder runs where its parameters are (``.to(device)``, or Lightning moving the
module that holds it); an explicit ``device`` argument moves it there once, at construction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlkit.errors import check_int
from vlkit.models.pretrained import minilm_dir

__all__ = ["MeanPoolTextEncoder", "masked_mean_pool"]


def masked_mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the hidden states of the real (unmasked) tokens.

    Args:
        hidden: (T, L, D) last hidden states of T texts of L tokens.
        attention_mask: (T, L) 1 for real tokens, 0 for padding.

    Returns:
        (T, D) pooled states (not normalised).
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (T, L, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (T, D)


class MeanPoolTextEncoder(nn.Module):
    """A Hugging Face encoder (default: the packaged all-MiniLM-L6-v2) as a sentence encoder.

    ``encoder(texts)`` -> (T, D) float32 unit-norm embeddings, on the device of the encoder's parameters.

    Args:
        path: a Hugging Face directory or hub id of an encoder model (``AutoModel``); None: the packaged
            all-MiniLM-L6-v2 (``vlkit.models.pretrained.minilm_dir()``, offline).
        max_length: tokens per text; longer texts are truncated (an int >= 1).
        device: where to put the encoder (None: leave it on the CPU, for the caller or Lightning to move).
    """

    def __init__(
        self, path: str | os.PathLike | None = None, max_length: int = 128, device: str | torch.device | None = None
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        check_int("max_length", max_length, low=1)
        if path is None:
            path = minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        """The device of the encoder's parameters (where texts are encoded)."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False, sort_by_length: bool = True) -> Tensor:
        """Encode ``texts`` in batches of ``batch_size``: T strings -> (T, D) float32, L2-normalised;
        ``progress`` shows a bar (tqdm) of windows of 32 batches, for long lists such as a catalogue's item titles.

        ``sort_by_length``: tokenize up to 32 batches of texts at once and batch them by token count (as
        sentence-transformers' ``encode`` does), so a batch is padded to a length close to all of its
        rows' and the encoder's work follows the real tokens (ProAPO's 5,720 prompts: 70.7k tokens instead
        of 102k padded ones); the rows come back in the input order. Padding is masked out of attention and
        of the pooling, so both orders give the same embeddings up to float rounding. False: batches in
        the input order, each padded to its longest row.
        """
        texts = list(texts)
        window = batch_size * 32 if sort_by_length else batch_size  # texts tokenized (and sorted) together
        starts = range(0, len(texts), window)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding {len(texts)} texts", leave=False)
        return torch.cat([self._encode_window(texts[start : start + window], batch_size, sort_by_length) for start in starts])

    def _encode_window(self, texts: list[str], batch_size: int, sort_by_length: bool) -> Tensor:
        """T texts -> (T, D), batched by token count when ``sort_by_length``, else in their order."""
        order = list(range(len(texts)))
        if sort_by_length:
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)  # unpadded token lists
            order.sort(key=lambda row: len(encoded["input_ids"][row]))  # rows by token count
        out = []
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            if sort_by_length:
                batch = self.tokenizer.pad({key: [values[row] for row in rows] for key, values in encoded.items()}, return_tensors="pt")
            else:
                batch = self.tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=self.max_length,
                                       return_tensors="pt")
            batch = batch.to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, L, D)
            out.append(F.normalize(masked_mean_pool(hidden, batch["attention_mask"]).float(), dim=-1))  # (B, D)
        embeddings = torch.cat(out)  # (T, D), rows in `order`
        return embeddings[torch.argsort(torch.tensor(order, device=embeddings.device))]  # (T, D), input order
