"""Tokenizers for the generative recommender, both as Hugging Face tokenizers with the semantic-ID tokens.

- :func:`build_word_tokenizer`: a word-level tokenizer for the from-scratch decoder, built on the
  ``tokenizers`` library (a ``WordLevel`` model, a ``Lowercase`` normaliser and a regex ``Split``
  pre-tokenizer) and wrapped as a ``transformers.PreTrainedTokenizerFast``;
- :func:`load_hf_tokenizer`: a pretrained tokenizer (``AutoTokenizer``) with the ID tokens added.

Both return a transformers tokenizer, so the method calls one interface: ``encode(text,
add_special_tokens=False)``, ``convert_tokens_to_ids``, ``convert_ids_to_tokens``, ``decode``,
``len(tokenizer)``, ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id``. The ID tokens (``<a_12>``) come
in as a list of strings; this module does not know how they are made.
"""

from __future__ import annotations

from collections import Counter

from vlkit.errors import check_int

__all__ = ["WORD_PATTERN", "WORD_SPECIAL_TOKENS", "build_word_tokenizer", "load_hf_tokenizer"]

# One piece per match, after lower-casing: an ID token, a run of letters, one digit, or one other
# non-space character (so "PLA-3mm" -> "pla", "-", "3", "mm").
WORD_PATTERN = r"<[a-h]_\d+>|[a-z]+|\d|[^\sa-z\d]"
# ids 0, 1, 2, 3
WORD_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def build_word_tokenizer(texts: list[str], sid_tokens: list[str], max_words: int = 4000, min_freq: int = 2):
    """A word-level ``PreTrainedTokenizerFast`` for the from-scratch decoder.

    Vocabulary, in id order: ``<pad> <bos> <eos> <unk>`` (ids 0-3), then ``sid_tokens`` in the given order
    (level by level, so each level's ids are contiguous), then the ``max_words`` most frequent pieces of the
    lower-cased ``texts`` (words, digits, punctuation; ``count >= min_freq``; ties in alphabetical order).
    Unknown pieces map to ``<unk>``. Special tokens are never read from text (``split_special_tokens``): a
    title containing ``<eos>`` gives ``<``, ``eos``, ``>`` as any other text. ``decode(ids,
    skip_special_tokens=True)`` joins the pieces with spaces. No BOS/EOS is added by ``encode``.

    The vocabulary is counted here (``Counter``) rather than by ``tokenizers.trainers.WordLevelTrainer``,
    whose tie order and size rule differ: counting by hand keeps the ids of earlier checkpoints.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    check_int("max_words", max_words, low=0)
    check_int("min_freq", min_freq, low=1)
    normalizer = normalizers.Lowercase()
    # invert=True + "removed": the regex matches are the pieces and everything between them (spaces) goes
    pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    counts = Counter(
        piece
        for text in texts
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        if not piece.startswith("<")
    )
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq][:max_words]
    vocab = {token: i for i, token in enumerate([*WORD_SPECIAL_TOKENS, *sid_tokens, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    pad, bos, eos, unk = WORD_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=pad, bos_token=bos, eos_token=eos, unk_token=unk,
        split_special_tokens=True, clean_up_tokenization_spaces=False,
    )


def load_hf_tokenizer(path: str, sid_tokens: list[str]):
    """A pretrained tokenizer (``AutoTokenizer.from_pretrained(path)``) with ``sid_tokens`` added as special
    tokens (never split); a tokenizer without a pad token pads with its EOS token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(list(sid_tokens), special_tokens=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
