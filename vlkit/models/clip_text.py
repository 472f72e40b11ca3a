"""open_clip's CLIP text tower run only up to each batch's last end-of-text token.

``CLIP.encode_text`` runs every row over the whole context (77 positions for the CLIP models), but a
prompt such as "a photo of a t-shirt/top." is 9 tokens long: the rest is padding. In the plain CLIP text
tower the attention is causal (position i sees positions <= i) and every other operation (embeddings,
MLPs, layer norms, the projection) acts on one position at a time, and the row's feature is read at its
end-of-text (EOT) position. So the positions after a row's EOT never reach its feature, and a batch can be
cut at its last EOT position: :func:`encode_text_cut_at_eot` sorts the rows by EOT position, runs the
tower on batches of rows of similar length, each cut to its own longest row, and puts the rows back in
the input order. On ProAPO's 572 templates x 10 class names the rows are 6-30 tokens long, so the
tower's work falls about 5x against 77 positions a row (measured numbers: ``docs/papers.md``, ProAPO).

:func:`encode_text_cut_at_eot` restates ``open_clip.model.CLIP.encode_text`` (open_clip 3.x): token
embedding cast to the transformer's dtype, plus the positional embedding, the transformer (batch first;
it transposes itself when its blocks are sequence first) with the causal mask, ``ln_final``, the feature
at the pooling position (``text_pool_type`` ``"argmax"``: the largest token id, the EOT of CLIP's
vocabulary; ``"eos"``: the first ``text_eos_id``), the text projection (a matrix or an ``nn.Linear``);
the only differences are the positional embedding and the mask sliced to the cut length L (L x L), and
``ln_final`` and the projection applied to the pooled rows only (both act on one position at a time).

:func:`cuts_at_eot` says when that is exact: an open_clip ``CLIP`` whose ``encode_text`` is open_clip's
own, with ``"argmax"``/``"eos"`` pooling, a causal ``attn_mask``, and blocks from open_clip's transformer
module; and the cut reproduces ``model.encode_text`` on probe rows. Everything else
(``CustomTextCLIP``, Hugging Face text towers, ``"first"``/``"last"`` pooling, no causal mask, a subclass
with its own ``encode_text``, an open_clip whose internals changed) keeps ``model.encode_text``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["cuts_at_eot", "encode_text_cut_at_eot", "pooling_positions"]


def pooling_positions(model: nn.Module, tokens: Tensor) -> Tensor:
    """The position whose feature ``model.encode_text`` returns, per row: (T, L) token ids -> (T,).

    ``"argmax"`` pooling: the largest token id (CLIP's EOT, the last id of its vocabulary); ``"eos"``:
    the first ``model.text_eos_id`` (position 0 for a row without one, as open_clip reads it).

    Args:
        model: an open_clip ``CLIP`` with ``text_pool_type`` ``"argmax"`` or ``"eos"``.
        tokens: (T, L) token ids as its tokenizer returns them.
    """
    if model.text_pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1)  # (T,)
    return tokens.argmax(dim=-1)  # (T,)


def encode_text_cut_at_eot(model: nn.Module, tokens: Tensor, batch_size: int = 256) -> Tensor:
    """``model.encode_text(tokens)`` with each batch cut after its last pooling (EOT) position: (T, L) -> (T, D).

    Rows are sorted by pooling position and run ``batch_size`` at a time, so a batch holds rows of
    similar length; the result is in the input order and equals ``model.encode_text`` up to float
    rounding (the matrix products have other shapes). Only for models :func:`cuts_at_eot` accepts.

    Args:
        model: an open_clip ``CLIP`` accepted by :func:`cuts_at_eot`.
        tokens: (T, L) token ids, L the model's context length.
        batch_size: rows per tower pass.
    """
    if tokens.shape[0] == 0:
        return model.encode_text(tokens)  # (0, D)
    positions = pooling_positions(model, tokens)  # (T,)
    order = torch.argsort(positions, stable=True)  # (T,) rows by pooling position
    cast_dtype = model.transformer.get_cast_dtype()
    out = None
    for rows in order.split(batch_size):  # (b,) row indices, similar lengths
        length = int(positions[rows].max()) + 1  # the batch's last pooling position, inclusive
        x = model.token_embedding(tokens[rows, :length]).to(cast_dtype)  # (b, length, W)
        x = x + model.positional_embedding[:length].to(cast_dtype)  # (b, length, W)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])  # (b, length, W), causal
        pooled = x[torch.arange(len(rows), device=x.device), positions[rows]]  # (b, W), each row at its EOT
        pooled = model.ln_final(pooled)  # (b, W): per position, so the same as before pooling
        if model.text_projection is not None:
            projection = model.text_projection
            pooled = projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection  # (b, D)
        if out is None:
            out = pooled.new_empty((tokens.shape[0], pooled.shape[-1]))  # (T, D)
        out[rows] = pooled  # back to the input order
    return out


def _is_causal(mask: Tensor) -> bool:
    """True when ``mask`` (L, L) blocks exactly the positions after the query (additive -inf above the diagonal)."""
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1] or not mask.is_floating_point():
        return False
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)  # (L, L)
    return bool(torch.isneginf(mask[above]).all() and (mask[~above] == 0).all())


def cuts_at_eot(model: nn.Module) -> bool:
    """True when :func:`encode_text_cut_at_eot` gives ``model.encode_text``'s features (see the module docstring).

    Checks the structure (open_clip ``CLIP`` with its own ``encode_text``, ``"argmax"``/``"eos"`` pooling,
    a causal ``attn_mask``, open_clip's transformer blocks), then two probe rows of 2 and 6 tokens cut to
    their own lengths against ``model.encode_text`` on the full context (relative gap at most 1e-3 in
    float32, 5e-2 in half precision).

    Args:
        model: any text-and-image model an ``OpenClipEncoder`` holds.
    """
    try:
        from open_clip import transformer as oc_transformer
        from open_clip.model import CLIP
    except ImportError:
        return False
    blocks = (oc_transformer.ResidualAttentionBlock, oc_transformer.CustomResidualAttentionBlock)
    if (
        not isinstance(model, CLIP)
        or type(model).encode_text is not CLIP.encode_text
        or getattr(model, "text_pool_type", None) not in ("argmax", "eos")
        or (model.text_pool_type == "eos" and getattr(model, "text_eos_id", None) is None)
        or getattr(model, "attn_mask", None) is None
        or not _is_causal(model.attn_mask)
        or type(model.transformer) is not oc_transformer.Transformer
        or not all(type(block) in blocks for block in model.transformer.resblocks)
    ):
        return False
    context = model.positional_embedding.shape[0]
    if context < 8 or model.attn_mask.shape[0] != context:
        return False
    eot = model.text_eos_id if model.text_pool_type == "eos" else model.vocab_size - 1
    probe = torch.zeros((2, context), dtype=torch.long, device=model.positional_embedding.device)  # (2, context)
    probe[0, :2] = torch.tensor([1, eot])
    probe[1, :6] = torch.tensor([1, 2, 3, 4, 5, eot])
    try:
        with torch.no_grad():
            reference = model.encode_text(probe).float()  # (2, D)
            cut = encode_text_cut_at_eot(model, probe, batch_size=1).float()  # (2, D)
    except Exception:  # open_clip's internals changed: model.encode_text still works
        return False
    half = model.transformer.get_cast_dtype() in (torch.float16, torch.bfloat16)
    gap = (reference - cut).abs().max() / reference.abs().max().clamp_min(1e-12)
    return bool(gap <= (5e-2 if half else 1e-3))
