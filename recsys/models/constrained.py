"""Constrained decoding over semantic IDs: a vectorised trie as a transformers ``LogitsProcessor``,
the authors' style of dict-trie processor (the benchmark's baseline), beam-search recommendation with
an explicit ``GenerationConfig``, and exact scoring of every item's ID."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from recsys.functional.trie import allowed_codes, build_prefix_tables, pack_prefix
from vlkit.errors import ConfigError, check_int
from vlkit.functional.policy import position_ids_from_mask  # the policy core's (re-exported here)

__all__ = [
    "SIDTrie",
    "TrieLogitsProcessor",
    "DictTrieLogitsProcessor",
    "beam_generation_config",
    "recommend_with_beams",
    "score_all_items",
    "position_ids_from_mask",
]


class SIDTrie:
    """The catalogue's semantic IDs as token tables.

    Args:
        codes: (N, L) long, item n's code at level l.
        level_token_ids: L tensors, level_token_ids[l] (K_l,) the vocabulary id of each code of level l.
        vocab_size: V, the model's vocabulary size (logit width).
        eos_token_id: the only token allowed after a complete ID.
    """

    def __init__(self, codes: Tensor, level_token_ids: list[Tensor], vocab_size: int, eos_token_id: int) -> None:
        if codes.dim() != 2 or codes.shape[0] == 0 or codes.shape[1] != len(level_token_ids):
            raise ConfigError(
                f"codes must be a non-empty (N, L) tensor with L = len(level_token_ids) = {len(level_token_ids)}, "
                f"got {tuple(codes.shape)}", argument="codes"
            )
        check_int("vocab_size", vocab_size, low=1)
        check_int("eos_token_id", eos_token_id, low=0, high=vocab_size - 1)
        for level, ids in enumerate(level_token_ids):
            if int(codes[:, level].max()) >= ids.numel():
                raise ConfigError(f"level {level}: code {int(codes[:, level].max())} has no token (only {ids.numel()})",
                                  argument="level_token_ids")
            if int(ids.max()) >= vocab_size:
                raise ConfigError(
                    f"ID vocabulary does not match the model: token id {int(ids.max())} >= vocab_size {vocab_size}",
                    argument="vocab_size",
                )
        self.codes = codes.long()
        self.num_levels = codes.shape[1]
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.level_token_ids = [ids.long() for ids in level_token_ids]
        self.item_token_ids = torch.stack(
            [self.level_token_ids[l][self.codes[:, l]] for l in range(self.num_levels)], dim=1
        )  # (N, L)
        self.keys, self.allowed, self.radix = build_prefix_tables(self.codes)
        full_keys = pack_prefix(self.codes, self.radix)  # (N,)
        self.item_keys, self.item_order = torch.sort(full_keys)  # sorted full keys, item index for each
        if torch.unique(full_keys).numel() != full_keys.numel():
            raise ConfigError("semantic IDs must be unique per item (resolve collisions first, e.g. SemanticIDs.load(dedup=True))",
                              argument="codes")
        token_to_code = torch.full((self.num_levels, vocab_size), -1, dtype=torch.long)  # (L, V)
        for l, ids in enumerate(self.level_token_ids):
            token_to_code[l, ids] = torch.arange(ids.numel())
        self.token_to_code = token_to_code
        self._device_cache: dict[torch.device, SIDTrie] = {}

    def to(self, device: torch.device | str) -> "SIDTrie":
        """The trie with its tensors on ``device`` (itself if already there; copies are cached per device)."""
        device = torch.device(device)
        if self.codes.device == device:
            return self
        if device not in self._device_cache:
            moved = object.__new__(SIDTrie)
            moved.__dict__.update(self.__dict__)
            for name in ("codes", "item_token_ids", "item_keys", "item_order", "token_to_code"):
                setattr(moved, name, getattr(self, name).to(device))
            moved.level_token_ids = [t.to(device) for t in self.level_token_ids]
            moved.keys = [t.to(device) for t in self.keys]
            moved.allowed = [t.to(device) for t in self.allowed]
            moved._device_cache = {}
            self._device_cache[device] = moved
        return self._device_cache[device]

    def token_codes(self, generated: Tensor) -> Tensor:
        """(R, t) generated token ids (t <= L) -> (R, t) codes, -1 where a token is not a code of its level."""
        t = generated.shape[1]
        levels = torch.arange(t, device=generated.device).unsqueeze(0).expand_as(generated)  # (R, t)
        return self.token_to_code[levels, generated]  # (R, t)

    def allowed_token_mask(self, generated: Tensor) -> Tensor:
        """(R, t) tokens generated after the prompt -> (R, V) bool of allowed next tokens (fail closed)."""
        R, t = generated.shape
        mask = torch.zeros(R, self.vocab_size, dtype=torch.bool, device=generated.device)  # (R, V)
        if t < self.num_levels:
            codes = self.token_codes(generated)  # (R, t)
            ok = allowed_codes(codes, self.keys[t], self.allowed[t], self.radix)  # (R, radix)
            level_ids = self.level_token_ids[t]  # (K_t,) token of code c at position c
            # radix = largest code used anywhere + 1 may be smaller than K_t (a level's vocabulary larger
            # than the catalogue uses, e.g. random-KxL IDs on a few items): codes >= radix are used by no
            # item and stay closed; codes < radix take the trie's answer
            width = min(level_ids.numel(), ok.shape[1])
            mask[:, level_ids[:width]] = ok[:, :width]  # (R, width) into the (R, V) mask
        else:
            complete = self.items_from_tokens(generated[:, : self.num_levels]) >= 0  # (R,)
            mask[:, self.eos_token_id] = complete
        return mask

    def items_from_tokens(self, generated: Tensor) -> Tensor:
        """(R, L) token ids -> (R,) item index, -1 if the tokens are not a valid item's ID."""
        codes = self.token_codes(generated[:, : self.num_levels])  # (R, L)
        # a code >= radix belongs to no item, and packing it would alias another item's key
        valid = ((codes >= 0) & (codes < self.radix)).all(dim=1)  # (R,)
        key = pack_prefix(codes.clamp(min=0), self.radix)  # (R,)
        pos = torch.searchsorted(self.item_keys, key).clamp(max=self.item_keys.numel() - 1)  # (R,)
        found = valid & (self.item_keys[pos] == key)
        return torch.where(found, self.item_order[pos], torch.full_like(pos, -1))


def _logits_processor_base():
    from transformers import LogitsProcessor

    return LogitsProcessor


class TrieLogitsProcessor(_logits_processor_base()):
    """Masks every token the trie does not allow; stateless (the step is read off the input length).

    Args:
        trie: the catalogue's IDs.
        prompt_length: the (left-padded) prompt length; tokens after it are the generated ID.
    """

    def __init__(self, trie: SIDTrie, prompt_length: int) -> None:
        self.trie = trie
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        trie = self.trie.to(scores.device)
        generated = input_ids[:, self.prompt_length :]  # (R, t), R = batch * beams
        mask = trie.allowed_token_mask(generated)  # (R, V)
        if mask.shape[1] != scores.shape[1]:
            raise ConfigError(f"ID vocabulary does not match the model: trie V={mask.shape[1]}, logits V={scores.shape[1]}",
                              argument="vocab_size")
        return scores.masked_fill(~mask, float("-inf"))


class DictTrieLogitsProcessor(_logits_processor_base()):
    """The authors' style (``LogitProcessor.py``): a Python dict from the tuple of generated tokens to the
    allowed next tokens, looked up row by row at every step. Kept only as the benchmark's baseline; it
    masks to -inf too (fail closed) so that both processors give identical beams."""

    def __init__(self, trie: SIDTrie, prompt_length: int) -> None:
        self.prompt_length = prompt_length
        table: dict[tuple[int, ...], set[int]] = {}
        for row in trie.item_token_ids.tolist():
            for t in range(len(row)):
                table.setdefault(tuple(row[:t]), set()).add(row[t])
            table.setdefault(tuple(row), set()).add(trie.eos_token_id)
        self.table = {k: sorted(v) for k, v in table.items()}

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        out = torch.full_like(scores, float("-inf"))
        for row, tokens in enumerate(input_ids[:, self.prompt_length :].tolist()):
            allowed = self.table.get(tuple(tokens))
            if allowed:
                out[row, allowed] = scores[row, allowed]
        return out


def beam_generation_config(num_beams: int, num_levels: int, pad_token_id: int, eos_token_id: int):
    """Explicit beam search: no sampling and no top-k/top-p filters (a model's own defaults must not leak
    in: MiniOneRec issue #49 / PR #57)."""
    from transformers import GenerationConfig

    check_int("num_beams", num_beams, low=1)
    check_int("num_levels", num_levels, low=1)

    return GenerationConfig(
        max_new_tokens=num_levels + 1,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        length_penalty=0.0,
        early_stopping=False,  # True would stop once num_beams hypotheses end, even -inf ones (masked EOS)
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
    )


def left_pad(prompts: list[list[int]], pad_token_id: int, device) -> tuple[Tensor, Tensor]:
    """list of token lists -> input_ids (B, T), attention_mask (B, T), left-padded."""
    _check_prompts(prompts)
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, T - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _check_prompts(prompts) -> None:
    if isinstance(prompts, (str, Tensor)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise ConfigError(f"prompts must be a non-empty list of token-id lists, got {type(prompts).__name__}"
                          f"{'' if not isinstance(prompts, (list, tuple)) else ' of length 0'}", argument="prompts")
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise ConfigError(f"prompts must each hold at least one token, got empty prompts at rows {empty[:5]}", argument="prompts")


@torch.no_grad()
def recommend_with_beams(
    model, prompts: list[list[int]], trie: SIDTrie, num_beams: int, pad_token_id: int,
    processor_class: type = TrieLogitsProcessor,
) -> tuple[Tensor, Tensor]:
    """Constrained beam search: (B, num_beams) recommended item indices in beam order and their scores.

    Beams that could not be completed with a valid ID (score -inf, e.g. when num_beams exceeds what the
    trie allows) are returned as item -1; every other returned item is a valid, distinct catalogue item.
    """
    check_int("num_beams", num_beams, low=1)
    _check_prompts(prompts)
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_token_id, device)
    processor = processor_class(trie, input_ids.shape[1])
    config = beam_generation_config(num_beams, trie.num_levels, pad_token_id, trie.eos_token_id)
    from transformers import LogitsProcessorList

    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
        logits_processor=LogitsProcessorList([processor]),
    )
    generated = out.sequences[:, input_ids.shape[1] :]  # (B * beams, <= L + 1)
    scores = out.sequences_scores if out.sequences_scores is not None else torch.zeros(generated.shape[0], device=device)
    items = trie.to(device).items_from_tokens(generated[:, : trie.num_levels]) if generated.shape[1] >= trie.num_levels \
        else torch.full((generated.shape[0],), -1, device=device, dtype=torch.long)
    # HF starts all beams but the first at -1e9 (not -inf): when fewer valid IDs than beams exist, those
    # beams finish as copies of real ones with scores near -1e9; they are not recommendations
    real = torch.isfinite(scores) & (scores > -1e8)
    items = torch.where(real, items, torch.full_like(items, -1)).view(len(prompts), num_beams)  # (B, beams)
    duplicate = (items.unsqueeze(2) == items.unsqueeze(1)).tril(diagonal=-1).any(dim=2)  # (B, beams) seen before
    items = torch.where(duplicate, torch.full_like(items, -1), items)
    return items, scores.view(len(prompts), num_beams)


@functools.lru_cache(maxsize=1)
def _cache_kwarg() -> str:
    """transformers >= 5.2x renamed ``past_key_values`` to ``cache``."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def score_all_items(model, prompts: list[list[int]], trie: SIDTrie, pad_token_id: int) -> Tensor:
    """Exact full ranking: log p(ID of item n | prompt) for every item, (B, N).

    The prompt is encoded once; then, level by level, every distinct ID prefix of the catalogue is fed as
    one row of a batch that reuses the prompt's key/value cache (reordered by prefix parent), so the cost
    is (number of distinct prefixes) single-token steps per prompt rather than N full sequences.
    """
    _check_prompts(prompts)
    device = next(model.parameters()).device
    trie = trie.to(device)
    input_ids, attention_mask = left_pad(prompts, pad_token_id, device)
    B = input_ids.shape[0]
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=True, logits_to_keep=1)
    cache = _cache_of(out)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
    total = logp[:, trie.item_token_ids[:, 0]]  # (B, N)
    parent_count = 1  # rows per prompt in the cache
    parent_of_item = torch.zeros(trie.codes.shape[0], dtype=torch.long, device=device)  # (N,) row of each item's prefix
    mask = attention_mask
    for t in range(1, trie.num_levels):
        prefix_key = pack_prefix(trie.codes[:, :t], trie.radix)  # (N,)
        unique_keys, inverse = torch.unique(prefix_key, sorted=True, return_inverse=True)  # (P,), (N,)
        P = unique_keys.numel()
        first_item = torch.full((P,), trie.codes.shape[0], dtype=torch.long, device=device)
        first_item = first_item.scatter_reduce(0, inverse, torch.arange(trie.codes.shape[0], device=device), "amin")  # (P,)
        parent_row = parent_of_item[first_item]  # (P,) row at level t-1 holding this prefix's parent
        last_token = trie.item_token_ids[first_item, t - 1]  # (P,)
        rows = (torch.arange(B, device=device).unsqueeze(1) * parent_count + parent_row.unsqueeze(0)).reshape(-1)  # (B*P,)
        cache.reorder_cache(rows)
        mask = torch.cat([mask.index_select(0, rows), torch.ones(B * P, 1, dtype=mask.dtype, device=device)], dim=1)
        step = model(
            input_ids=last_token.repeat(B).unsqueeze(1), attention_mask=mask,
            position_ids=position_ids_from_mask(mask)[:, -1:], use_cache=True, **{_cache_kwarg(): cache},
        )
        cache = _cache_of(step)
        logp = torch.log_softmax(step.logits[:, -1].float(), dim=-1).view(B, P * trie.vocab_size)  # (B, P*V)
        flat = inverse * trie.vocab_size + trie.item_token_ids[:, t]  # (N,)
        total = total + logp.gather(1, flat.unsqueeze(0).expand(B, -1))  # (B, N)
        parent_of_item, parent_count = inverse, P
    return total
