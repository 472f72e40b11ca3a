"""Constrained decoding over semantic IDs: a sparse vectorised trie as a transformers ``LogitsProcessor``,
a naive dict-trie processor (the tests' reference), beam-search recommendation with
an explicit ``GenerationConfig``, and exact scoring of every item's ID."""

from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor

from recsys.functional.trie import allowed_children, build_prefix_tables, pack_prefix, prefix_table_bytes
from vlkit.errors import ConfigError, check_int
from vlkit.functional.policy import position_ids_from_mask  # the policy core's (re-exported here)

__all__ = [
    "SIDTrie",
    "TrieLogitsProcessor",
    "DictTrieLogitsProcessor",
    "beam_generation_config",
    "recommend_with_beams",
    "score_all_items",
    "prefill_prompt_cache",
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
        self.keys, self.children, self.radix = build_prefix_tables(self.codes)  # sparse: O(number of prefixes)
        full_keys = pack_prefix(self.codes, self.radix)  # (N,)
        self.item_keys, self.item_order = torch.sort(full_keys)  # sorted full keys, item index for each
        if (self.item_keys[1:] == self.item_keys[:-1]).any():  # sorted: a repeated ID sits next to its twin
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
            moved.children = [type(c)(*(t.to(device) for t in c)) for c in self.children]
            moved._device_cache = {}
            self._device_cache[device] = moved
        return self._device_cache[device]

    def token_codes(self, generated: Tensor) -> Tensor:
        """(R, t) generated token ids (t <= L) -> (R, t) codes, -1 where a token is not a code of its level."""
        t = generated.shape[1]
        levels = torch.arange(t, device=generated.device).unsqueeze(0).expand_as(generated)  # (R, t)
        return self.token_to_code[levels, generated]  # (R, t)

    def allowed_tokens(self, generated: Tensor) -> tuple[Tensor, Tensor]:
        """The next tokens the trie allows, as flat (row, token) pairs (fail closed).

        Args:
            generated: (R, t) tokens generated after the prompt, t <= L (t >= L: only EOS after a complete ID).

        Returns:
            rows (A,) long and tokens (A,) long: token ``tokens[a]`` may follow row ``rows[a]``; a row whose
            tokens are no prefix of an ID gets no pair. Cost O(R log P_t + A), whatever the catalogue size.
        """
        t = generated.shape[1]
        if t < self.num_levels:
            codes = self.token_codes(generated)  # (R, t)
            rows, child = allowed_children(codes, self.keys[t], self.children[t], self.radix)  # (A,), (A,)
            # a child code is some item's code at level t, so it always has a token there (checked in __init__);
            # codes of the level's vocabulary that no item uses are never children: they stay closed
            return rows, self.level_token_ids[t].index_select(0, child)  # (A,), (A,)
        complete = self.items_from_tokens(generated[:, : self.num_levels]) >= 0  # (R,)
        rows = complete.nonzero().flatten()  # (A,)
        return rows, torch.full_like(rows, self.eos_token_id)

    def allowed_token_mask(self, generated: Tensor) -> Tensor:
        """(R, t) tokens generated after the prompt -> (R, V) bool of allowed next tokens (fail closed)."""
        rows, tokens = self.allowed_tokens(generated)  # (A,), (A,)
        mask = torch.zeros(generated.shape[0], self.vocab_size, dtype=torch.bool, device=generated.device)  # (R, V)
        mask[rows, tokens] = True
        return mask

    def table_bytes(self) -> int:
        """Bytes held by the trie's prefix tables (keys, offsets, child codes): O(number of prefixes)."""
        return prefix_table_bytes(self.keys, self.children)

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

    The allowed scores are gathered first, the whole (R, V) output is filled with -inf in one pass, and
    the gathered scores are written back: one write over the logits plus O(allowed tokens), with no
    (R, V) mask built. With ``inplace=True`` that pass goes into ``scores`` itself (no allocation).

    Args:
        trie: the catalogue's IDs.
        prompt_length: the (left-padded) prompt length; tokens after it are the generated ID.
        inplace: write into the ``scores`` passed in and return them. Safe in beam search (transformers
            passes a fresh ``log_softmax`` it does not keep); leave False when the caller keeps ``scores``
            (greedy or sampling with ``output_logits=True`` stores the very tensor it passes in). On CPU at
            V=50k, a fresh (R, V) output costs several times the fill itself (page faults).
    """

    def __init__(self, trie: SIDTrie, prompt_length: int, inplace: bool = False) -> None:
        check_int("prompt_length", prompt_length, low=0)
        self.trie = trie
        self.prompt_length = prompt_length
        self.inplace = bool(inplace)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        trie = self.trie.to(scores.device)
        R, V = scores.shape
        if V != trie.vocab_size:
            raise ConfigError(f"ID vocabulary does not match the model: trie V={trie.vocab_size}, logits V={V}",
                              argument="vocab_size")
        rows, tokens = trie.allowed_tokens(input_ids[:, self.prompt_length :])  # (A,), (A,); R = batch * beams
        out = scores if self.inplace else torch.empty_like(scores, memory_format=torch.contiguous_format)
        if out.is_contiguous() and scores.is_contiguous():
            flat = rows.mul_(V).add_(tokens)  # (A,) positions in the (R * V,) flattened scores
            kept = scores.view(-1).index_select(0, flat)  # (A,) gathered before the fill overwrites them
            out.fill_(float("-inf"))
            out.view(-1).index_copy_(0, flat, kept)
        else:  # a strided view (rare): the same three steps with 2-D indices
            kept = scores[rows, tokens]  # (A,)
            out.fill_(float("-inf"))
            out[rows, tokens] = kept
        return out


class DictTrieLogitsProcessor(_logits_processor_base()):
    """A naive reference: a Python dict from the tuple of generated tokens to the allowed next tokens,
    looked up row by row at every step. The tests check the vectorised processor against it; it masks
    to -inf too (fail closed) so that both processors give identical beams. (The benchmark's baseline is
    the authors' processor, restated in ``bench/constrained_decoding.py``.)

    Args:
        trie: the catalogue's IDs.
        prompt_length: the (left-padded) prompt length; tokens after it are the generated ID.
    """

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
def prefill_prompt_cache(model, input_ids: Tensor, attention_mask: Tensor):
    """Encode left-padded prompts once: (B, T) ids and mask -> (the model output, its key/value cache).

    Position ids are counted from each row's first real token (``position_ids_from_mask``), as
    ``generate()`` numbers them; only the last position's logits are computed.

    Args:
        model: a causal LM (``transformers`` or peft-wrapped).
        input_ids: (B, T) left-padded token ids.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                use_cache=True, logits_to_keep=1)
    return out, _cache_of(out)


@torch.no_grad()
def recommend_with_beams(
    model, prompts: list[list[int]], trie: SIDTrie, num_beams: int, pad_token_id: int,
    processor_class: type = TrieLogitsProcessor,
) -> tuple[Tensor, Tensor]:
    """Constrained beam search: (B, num_beams) recommended item indices in beam order and their scores.

    Each prompt is encoded once: all its tokens but the last are prefilled for the B prompts together, and
    that key/value cache is repeated to the B * num_beams rows beam search runs on and handed to
    ``generate`` (which then feeds only the last prompt token, through transformers' own beam search and
    ``processor_class``). Plain ``generate`` would instead expand every prompt to num_beams copies before
    its prefill; the recommendations and scores are the same (to float round-off).

    Beams that could not be completed with a valid ID (score -inf, e.g. when num_beams exceeds what the
    trie allows) are returned as item -1; every other returned item is a valid, distinct catalogue item.

    Args:
        model: a causal LM (``transformers`` or peft-wrapped) whose cache can be repeated per row.
        prompts: B lists of token ids.
        trie: the catalogue's IDs.
        num_beams: beams per prompt (1 = greedy search; its scores are returned as 0).
        pad_token_id: the id left padding uses.
        processor_class: built as ``processor_class(trie, prompt_length)`` (the trie processor by default).
    """
    check_int("num_beams", num_beams, low=1)
    _check_prompts(prompts)
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_token_id, device)  # (B, T)
    # beam search hands the processor a fresh log_softmax it does not keep, so ours may write into it
    processor = TrieLogitsProcessor(trie, input_ids.shape[1], inplace=True) if processor_class is TrieLogitsProcessor \
        else processor_class(trie, input_ids.shape[1])
    config = beam_generation_config(num_beams, trie.num_levels, pad_token_id, trie.eos_token_id)
    from transformers import LogitsProcessorList

    shared = {}
    if input_ids.shape[1] > 1:  # a one-token prompt has nothing to share: generate's prefill is that token
        _, cache = prefill_prompt_cache(model, input_ids[:, :-1], attention_mask[:, :-1])  # B rows of T - 1 tokens
        cache.batch_repeat_interleave(num_beams)  # (B * beams) rows, beam j of prompt b at row b * beams + j
        shared = {_cache_kwarg(): cache}
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
        logits_processor=LogitsProcessorList([processor]), **shared,
    )
    generated = out.sequences[:, input_ids.shape[1] :]  # (B * beams, <= L + 1)
    scores = getattr(out, "sequences_scores", None)  # num_beams=1 is greedy search, which returns no sequence scores
    scores = scores if scores is not None else torch.zeros(generated.shape[0], device=device)
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
    """transformers >= 5.2x renamed ``past_key_values`` to ``cache`` (in ``forward`` and ``generate``)."""
    import inspect

    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def score_all_items(model, prompts: list[list[int]], trie: SIDTrie, pad_token_id: int, max_tokens: int = 2048) -> Tensor:
    """Exact full ranking: log p(ID of item n | prompt) for every item, (B, N) (the L ID tokens, no EOS).

    The B prompts are encoded once, together, and their key/value cache is shared by every item. The items
    are taken in chunks whose IDs sort together (so they share prefixes); a chunk's distinct ID prefixes of
    lengths 1..L-1 form a prefix tree, fed after each prompt as one sequence in one forward with a 4-D
    attention mask (tree attention: each prefix's last token sees its prompt, its ancestors and itself,
    at the position it has in its own ID). The logits at a prefix give the next level's log-probs, so the
    cost is one token per distinct prefix per prompt, with no copy of the prompt cache per prefix.

    Written by hand: neither transformers nor peft scores a fixed candidate set through a shared prompt.
    Needs an attention implementation that takes a 4-D mask (transformers' default ``sdpa``, or ``eager``).

    Args:
        model: a causal LM (``transformers`` or peft-wrapped).
        prompts: B lists of token ids.
        trie: the catalogue's IDs.
        pad_token_id: the id left padding uses.
        max_tokens: prompt x prefix-token positions per forward (memory bound: the logits of one forward
            are max_tokens x V floats); a chunk holds ``max(1, max_tokens // (B * (L - 1)))`` items.
    """
    _check_prompts(prompts)
    check_int("max_tokens", max_tokens, low=1)
    device = next(model.parameters()).device
    trie = trie.to(device)
    input_ids, attention_mask = left_pad(prompts, pad_token_id, device)  # (B, T)
    B, N, L = input_ids.shape[0], trie.item_token_ids.shape[0], trie.num_levels
    out, prompt_cache = prefill_prompt_cache(model, input_ids, attention_mask)
    total = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[:, trie.item_token_ids[:, 0]]  # (B, N) level 0
    if L == 1:
        return total
    tokens = trie.item_token_ids  # (N, L)
    order = torch.arange(N, device=device)
    for level in reversed(range(L)):  # stable sorts, last level first: lexicographic order of the ID tokens
        order = order[torch.sort(tokens[order, level], stable=True).indices]
    dtype = next(model.parameters()).dtype  # the additive mask's, as the attention scores'
    blocked = torch.finfo(dtype).min
    prompt_part = torch.zeros(B, 1, 1, input_ids.shape[1], dtype=dtype, device=device)  # (B, 1, 1, T) additive
    prompt_part.masked_fill_(attention_mask[:, None, None, :] == 0, blocked)
    first_position = attention_mask.sum(dim=1, keepdim=True)  # (B, 1) position of the ID's first token
    chunk = max(1, max_tokens // (B * (L - 1)))
    for start in range(0, N, chunk):
        items = order[start : start + chunk]  # (C,) items of this chunk
        chunk_tokens = tokens[items]  # (C, L)
        # the tree: distinct prefixes of lengths 1..L-1, level by level; node[c, t-1] = the node of item c's
        # prefix of length t
        nodes, depth, node, offset = [], [], [], 0
        for t in range(1, L):
            prefixes, inverse = torch.unique(chunk_tokens[:, :t], dim=0, return_inverse=True)  # (P_t, t), (C,)
            nodes.append(prefixes[:, -1])  # (P_t,) the token each node feeds
            depth.append(torch.full((prefixes.shape[0],), t - 1, dtype=torch.long, device=device))
            node.append(inverse + offset)
            offset += prefixes.shape[0]
        node = torch.stack(node, dim=1)  # (C, L-1)
        S = offset
        sees = torch.eye(S, dtype=torch.bool, device=device)  # (S, S) a node sees itself and its ancestors
        for a in range(1, L - 1):
            for b in range(a):
                sees[node[:, a], node[:, b]] = True
        tree_part = torch.zeros(S, S, dtype=dtype, device=device).masked_fill_(~sees, blocked)  # (S, S)
        mask = torch.cat([prompt_part.expand(B, 1, S, -1), tree_part.expand(B, 1, S, S)], dim=3)  # (B, 1, S, T+S)
        position_ids = first_position + torch.cat(depth).unsqueeze(0)  # (B, S)
        step = model(input_ids=torch.cat(nodes).unsqueeze(0).expand(B, S), attention_mask=mask, position_ids=position_ids,
                     use_cache=True, **{_cache_kwarg(): copy.deepcopy(prompt_cache)})
        logp = torch.log_softmax(step.logits.float(), dim=-1)  # (B, S, V)
        for t in range(1, L):
            total[:, items] += logp[:, node[:, t - 1], chunk_tokens[:, t]]  # (B, C) level t given the prefix
    return total
