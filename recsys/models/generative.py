"""The generative recommender's pieces: semantic-ID tables, the one prompt template, tokenizers and
causal-LM builders (a small decoder from scratch, or any Hugging Face causal LM with LoRA)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_choice, check_file, check_int, check_number, check_positive

__all__ = [
    "SemanticIDs",
    "sid_token",
    "PROMPT_TEMPLATE",
    "TASKS",
    "build_example",
    "WordTokenizer",
    "HFTokenizer",
    "build_scratch_decoder",
    "load_hf_causal_lm",
    "atomic_write_text",
]

LEVEL_LETTERS = "abcdefgh"
_SID_PATTERN = re.compile(r"<([a-h])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """The token of code ``code`` at level ``level``: ``<a_12>``, ``<b_3>``, ... (MiniOneRec's format)."""
    if not 0 <= level < len(LEVEL_LETTERS) or code < 0:
        raise ConfigError(f"level must be in [0, {len(LEVEL_LETTERS)}) and code >= 0, got level {level}, code {code}",
                          argument="level")
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class SemanticIDs:
    """Item ids (catalogue order) and their codes (N, L); codebook_sizes[l] = number of codes of level l."""

    item_ids: list[str]
    codes: Tensor
    codebook_sizes: list[int]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if n == 0:
            raise ConfigError("item_ids must be a non-empty list of item ids, got []", argument="item_ids")
        if not isinstance(self.codes, Tensor) or self.codes.dim() != 2 or self.codes.shape[0] != n:
            raise ConfigError(f"codes must be an (N={n}, L) tensor, got {tuple(getattr(self.codes, 'shape', ()))}",
                              argument="codes")
        if not 1 <= self.codes.shape[1] <= len(LEVEL_LETTERS):
            raise ConfigError(f"semantic IDs must have 1 to {len(LEVEL_LETTERS)} levels, got {self.codes.shape[1]}",
                              argument="codes")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise ConfigError(f"codebook_sizes must have one size per level ({self.codes.shape[1]}), got {list(self.codebook_sizes)}",
                              argument="codebook_sizes")
        for level, size in enumerate(self.codebook_sizes):
            column = self.codes[:, level]  # (N,)
            if int(column.min()) < 0 or int(column.max()) >= size:
                raise ConfigError(f"codes of level {level} must lie in [0, {size}), got [{int(column.min())}, {int(column.max())}]",
                                  argument="codes")

    @property
    def num_levels(self) -> int:
        return self.codes.shape[1]

    def tokens(self, index: int) -> list[str]:
        return [sid_token(l, int(c)) for l, c in enumerate(self.codes[index].tolist())]

    def sid_string(self, index: int) -> str:
        return "".join(self.tokens(index))

    def all_tokens(self) -> list[str]:
        """Every level's tokens, level by level (so that each level's ids are contiguous once added)."""
        return [sid_token(l, c) for l, size in enumerate(self.codebook_sizes) for c in range(size)]

    def save(self, path: str | Path) -> None:
        """Write ``{item: [tokens]}`` (the authors' index format), atomically."""
        payload = {item: self.tokens(i) for i, item in enumerate(self.item_ids)}
        atomic_write_text(path, json.dumps(payload))

    @classmethod
    def load(cls, path: str | Path, item_ids: list[str], dedup: bool = True, allow_collisions: bool = False) -> "SemanticIDs":
        """Read an index JSON for the given catalogue; collisions get a dedup level when ``dedup``.

        Without ``dedup``, items sharing an ID are an error (constrained decoding needs unique IDs) unless
        ``allow_collisions`` (collision statistics of a reference index).
        """
        from recsys.functional.quantize import append_dedup_level, collision_groups

        check_file("sid_path", path)
        if isinstance(item_ids, str) or not item_ids:
            raise ConfigError(f"item_ids must be a non-empty list of item ids, got {item_ids!r}", argument="item_ids")
        try:
            raw = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"sid index {path} must be JSON {{item: [tokens]}}, got invalid JSON ({err})", argument="sid_path") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"sid index {path} must be a JSON object {{item: [tokens]}}, got {type(raw).__name__}", argument="sid_path")
        missing = [i for i in item_ids if i not in raw]
        if missing:
            raise ConfigError(f"sid index {path} lacks {len(missing)} of the {len(item_ids)} items, e.g. {missing[:3]}",
                              argument="sid_path")
        rows = []
        for item in item_ids:
            tokens = raw[item]
            if isinstance(tokens, str) or not isinstance(tokens, list) or not tokens:
                raise ConfigError(f"sid index {path}: item {item!r} must map to a non-empty list of tokens, got {tokens!r}",
                                  argument="sid_path")
            parsed = [_SID_PATTERN.fullmatch(t) if isinstance(t, str) else None for t in tokens]
            if not all(parsed) or [LEVEL_LETTERS.index(m.group(1)) for m in parsed] != list(range(len(tokens))):
                raise ConfigError(f"sid index {path}: item {item!r} has malformed tokens {tokens}", argument="sid_path")
            rows.append([int(m.group(2)) for m in parsed])
        if len({len(r) for r in rows}) != 1:
            raise ConfigError(f"sid index {path}: IDs must all have the same depth, got depths {sorted({len(r) for r in rows})}",
                              argument="sid_path")
        codes = torch.tensor(rows, dtype=torch.long)  # (N, L)
        if dedup:
            codes = append_dedup_level(codes)
        elif not allow_collisions:
            _, counts = collision_groups(codes)  # (N,) size of each item's ID group
            if int(counts.max()) > 1:
                shared = [item_ids[i] for i in torch.nonzero(counts > 1).flatten()[:3].tolist()]
                raise ConfigError(
                    f"sid index {path} with dedup=False must give every item a unique ID, got "
                    f"{int((counts > 1).sum())} items sharing IDs (e.g. {shared}); load with dedup=True to add a dedup level",
                    argument="dedup",
                )
        sizes = [int(codes[:, l].max()) + 1 for l in range(codes.shape[1])]
        return cls(list(item_ids), codes, sizes)


# One prompt template for SFT, RL and evaluation (the authors use three different ones).
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n"

# task -> (instruction, what the input shows, what the response is)
TASKS: dict[str, tuple[str, str, str]] = {
    "sid_seq": ("Predict the ID of the next item.", "history_sids", "target_sid"),
    "sid2title": ("Give the title of this item.", "target_sid", "target_title"),
    "title2sid": ("Give the ID of this item.", "target_title", "target_sid"),
    "sid_seq2title": ("Predict the title of the next item.", "history_sids", "target_title"),
    "title_seq2title": ("Predict the title of the next item.", "history_titles", "target_title"),
    "title_seq2sid": ("Predict the ID of the next item.", "history_titles", "target_sid"),
}


def build_example(task: str, history: list[str], target: str, sid_of, title_of) -> tuple[str, str]:
    """(prompt, response) for one task; ``sid_of``/``title_of`` map an item id to its ID string / title."""
    check_choice("task", task, sorted(TASKS))
    if not history and TASKS[task][1].startswith("history"):
        raise ConfigError(f"history must hold at least one item for task {task!r}, got []", argument="history")
    instruction, shown, answer = TASKS[task]
    fields = {
        "history_sids": lambda: " ".join(sid_of(i) for i in history),
        "history_titles": lambda: "; ".join(title_of(i) for i in history),
        "target_sid": lambda: sid_of(target),
        "target_title": lambda: title_of(target),
    }
    return PROMPT_TEMPLATE.format(instruction=instruction, input=fields[shown]()), fields[answer]()


class WordTokenizer:
    """A small word-level tokenizer for the from-scratch decoder.

    Tokens: ``<pad> <bos> <eos> <unk>``, then the ID tokens (level by level, contiguous), then the
    ``max_words`` most frequent lower-cased words/digits/punctuation of the given texts (count >= min_freq).
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
    PATTERN = re.compile(r"<[a-h]_\d+>|[a-z]+|\d|[^\sa-z\d]")

    def __init__(self, texts: list[str], sid_tokens: list[str], max_words: int = 4000, min_freq: int = 2) -> None:
        check_int("max_words", max_words, low=0)
        check_int("min_freq", min_freq, low=1)
        counts = Counter(w for text in texts for w in self.PATTERN.findall(text.lower()) if not w.startswith("<"))
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq][:max_words]
        self.vocab = [*self.SPECIALS, *sid_tokens, *words]
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id, self.unk_token_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        tokens = self.PATTERN.findall(text.lower())  # ID tokens are lower-case already
        return [self.index.get(t, self.unk_token_id) for t in tokens]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.index.get(t, self.unk_token_id) for t in tokens]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i >= len(self.SPECIALS))


class HFTokenizer:
    """A Hugging Face tokenizer with the ID tokens added (as special tokens, so they are never split)."""

    def __init__(self, path: str, sid_tokens: list[str]) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.add_tokens(sid_tokens, special_tokens=True)
        self.eos_token_id = self.tok.eos_token_id
        self.pad_token_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.bos_token_id = self.tok.bos_token_id

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return self.tok.convert_tokens_to_ids(tokens)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def build_scratch_decoder(
    vocab_size: int, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4, max_positions: int = 1024,
    pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2,
):
    """A small Llama-architecture decoder with random weights (TIGER-sized by default)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                        ("num_heads", num_heads), ("max_positions", max_positions)):
        check_int(name, value, low=1)
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size must be divisible by num_heads={num_heads}, got {hidden_size}", argument="hidden_size")
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
    )
    return LlamaForCausalLM(config)


def load_hf_causal_lm(
    path: str, vocab_size: int, new_token_ids: list[int], lora_r: int = 0, lora_alpha: int = 16,
    lora_dropout: float = 0.05, target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
):
    """A pretrained causal LM with its embeddings resized to ``vocab_size``.

    With ``lora_r > 0`` the backbone is frozen and wrapped by peft LoRA; the rows of the new ID tokens
    stay trainable through peft's ``trainable_token_indices`` (the rest of the embedding stays frozen).
    """
    from transformers import AutoModelForCausalLM

    check_int("vocab_size", vocab_size, low=1)
    check_int("lora_r", lora_r, low=0)
    check_positive("lora_alpha", lora_alpha)
    check_number("lora_dropout", lora_dropout, low=0, high=1, high_open=True)
    if lora_r > 0 and (isinstance(target_modules, str) or not target_modules):
        raise ConfigError(f"target_modules must be a non-empty list of module names, got {target_modules!r}",
                          argument="target_modules")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.resize_token_embeddings(vocab_size)
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules),
            trainable_token_indices={"embed_tokens": list(new_token_ids)}, task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    return model
