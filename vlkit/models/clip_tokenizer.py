"""open_clip's CLIP tokenizer with the same token ids, without its per-string cleaning and BPE work.

open_clip's ``SimpleTokenizer`` (the tokenizer of OpenAI CLIP and of every open_clip model with the
default BPE vocabulary) cleans each string with ``ftfy.fix_text`` and a double ``html.unescape``, splits it
with a Unicode regex and maps every piece through its BPE, string by string: encoding ProAPO's
572-template library for 10 classes spends more time there than in a small text tower. Most prompts are
plain ASCII made of a few hundred distinct words, so :class:`FastClipTokenizer` does only what changes
their ids:

- a string of printable ASCII without ``&`` and without a special token's text is left unchanged by
  ftfy (its fixes touch non-ASCII text, control characters and terminal escapes) and by ``html.unescape``
  (entities start with ``&``), so its cleaning is lower-casing plus whitespace splitting (which the
  pre-tokenising split does anyway);
- on lower-case printable ASCII, open_clip's pattern ``'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``
  (``\\p{L}``: ``[a-z]``, ``\\p{N}``: ``[0-9]``, ``\\s``: the space) is the ASCII pattern below;
- each distinct piece is mapped once, by the reference's own byte map, ``bpe`` and vocabulary, and its ids
  are remembered (measured: about 6 us a string here, against 35 us for a ``tokenizers`` BPE rebuilt from
  the same vocabulary and run as one Rust batch, and 200 us for the reference);
- every other string (unicode, HTML entities, control characters, the text of ``<start_of_text>``) goes
  through the reference's ``encode``, so its ids are the reference's by construction;
- ``<start_of_text>``/``<end_of_text>`` are added and rows truncated as open_clip does (a row longer than
  the context keeps its first ``context_length - 1`` tokens, the last replaced by ``<end_of_text>``), and
  zero-padded to the context length, in one numpy fill.

:func:`fast_clip_tokenizer` wraps a tokenizer when it is such a ``SimpleTokenizer`` and the wrapper
reproduces it on a few probe strings; otherwise (another cleaning, a reduction mask, a Hugging Face
tokenizer, an open_clip whose tokenizer internals changed) it returns the tokenizer unchanged.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["FastClipTokenizer", "fast_clip_tokenizer"]

# open_clip's pre-tokenising pattern restricted to lower-case printable ASCII (see the module docstring)
PLAIN_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^ a-z0-9]+")

# strings the wrapper must reproduce before it replaces the reference (plain ones: the fast path)
PROBE_TEXTS = ("a photo of a t-shirt/top.", "It's 2 O'CLOCK!!  itap of   the dog's  3d render...", "", "x" * 100)


class FastClipTokenizer:
    """open_clip's ``SimpleTokenizer`` ('lower' cleaning, truncation) with the same ids, faster.

    ``tokenizer(texts, context_length=None)`` -> (T, L) int64 token ids, as the reference returns them.
    Attributes the reference has and this class does not define (``encoder``, ``decode``, ...) are read
    from the reference.

    Args:
        reference: the open_clip ``SimpleTokenizer`` to reproduce (its byte map, ``bpe`` and vocabulary map
            the plain strings' pieces; its ``encode`` handles the other strings).
    """

    def __init__(self, reference) -> None:
        self.reference = reference
        self.piece_ids: dict[str, list[int]] = {}  # piece -> its BPE ids, filled on first sight
        first_special = 2 * 256 + len(reference.bpe_ranks)  # bytes, bytes + '</w>', merges, then special tokens
        self.special_texts = tuple(token.lower() for token, index in reference.encoder.items() if index >= first_special)
        self.context_length = reference.context_length
        self.sot_token_id = reference.sot_token_id
        self.eot_token_id = reference.eot_token_id

    def __getattr__(self, name: str):
        """Attributes not defined here come from the reference tokenizer."""
        if name == "reference":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.reference, name)

    def is_plain(self, text: str) -> bool:
        """True when open_clip's cleaning of ``text`` is lower-casing and whitespace splitting only."""
        if not (text.isascii() and text.isprintable()) or "&" in text:
            return False
        lowered = text.lower()
        return not any(special in lowered for special in self.special_texts)

    def _piece(self, piece: str) -> list[int]:
        ref = self.reference
        ids = [ref.encoder[token] for token in ref.bpe("".join(ref.byte_encoder[b] for b in piece.encode("utf-8"))).split(" ")]
        self.piece_ids[piece] = ids
        return ids

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The BPE ids of each string, without ``<start_of_text>``/``<end_of_text>`` (``SimpleTokenizer.encode``)."""
        known, piece = self.piece_ids, self._piece
        out = []
        for text in texts:
            if self.is_plain(text):
                out.append([i for p in PLAIN_PIECES.findall(text.lower()) for i in (known.get(p) or piece(p))])
            else:
                out.append(self.reference.encode(text))
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        """T strings -> (T, context_length) int64 ids: ``<start_of_text>``, BPE ids, ``<end_of_text>``, zeros."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        context_length = context_length or self.context_length
        if context_length < 2:  # no room for both special tokens: open_clip's own truncation rule
            return self.reference(texts, context_length=context_length)
        keep = context_length - 2
        rows = [[self.sot_token_id, *ids[:keep], self.eot_token_id] for ids in self.encode_ids(texts)]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))  # (T,)
        out = np.zeros((len(rows), context_length), dtype=np.int64)  # (T, L)
        filled = np.arange(context_length) < lengths[:, None]  # (T, L): the first len(row) slots of each row
        out[filled] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        return torch.from_numpy(out)


def fast_clip_tokenizer(tokenizer):
    """``FastClipTokenizer(tokenizer)`` when ``tokenizer`` is open_clip's ``SimpleTokenizer`` with the default
    'lower' cleaning and plain truncation and the wrapper gives its ids on :data:`PROBE_TEXTS`; otherwise
    ``tokenizer`` itself (with a warning when a ``SimpleTokenizer`` could not be wrapped).

    Args:
        tokenizer: any tokenizer an open_clip model came with (``open_clip.get_tokenizer(arch)``).
    """
    try:
        from open_clip import tokenizer as open_clip_tokenizer
    except ImportError:
        return tokenizer
    if (
        type(tokenizer) is not open_clip_tokenizer.SimpleTokenizer
        or getattr(tokenizer, "clean_fn", None) is not getattr(open_clip_tokenizer, "_clean_lower", object())
        or getattr(tokenizer, "reduction_fn", None) is not None
    ):
        return tokenizer
    try:
        fast = FastClipTokenizer(tokenizer)
        same = torch.equal(fast(list(PROBE_TEXTS)), tokenizer(list(PROBE_TEXTS)))
    except Exception as error:  # open_clip's internals changed: the reference still gives the right ids
        same, reason = False, f"{type(error).__name__}: {error}"
    else:
        reason = "different ids on the probe strings"
    if not same:
        warnings.warn(f"open_clip's tokenizer kept (slower): the fast equivalent could not be built ({reason})", stacklevel=2)
        return tokenizer
    return fast
