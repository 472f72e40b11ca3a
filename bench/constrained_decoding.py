"""Constrained-decoding logits processor: ours (sparse trie) vs the authors' (MiniOneRec), and the trie at 1M items.

    python bench/constrained_decoding.py            # 1M-item trie, 7 paired repetitions
    python bench/constrained_decoding.py --quick    # 200k-item trie, 3 repetitions (V and rows unchanged)
    python bench/constrained_decoding.py --device cuda --vocab 150000   # GPU size: a 150k-token vocabulary

Sizes: V = 49,926 logits (SmolLM2's 49,152 tokens + 774 ID tokens: 3 levels x 256 codes + a dedup
level of 6), 800 rows (16 prompts x 50 beams), every step of one ID (t = 0..4, EOS after the last code),
catalogue 3,686 items (Amazon Industrial) for the ratios and 1M items x 4 levels for the trie lines.

Baseline: the authors' processor, restated by us (MiniOneRec official code: ``LogitProcessor.py``,
``ConstrainedLogitsProcessor``, with the prefix table of ``evaluate.py``). Their hot path, kept as is:
the table is a Python dict from ``"-".join`` of the token ids of a prefix to the list of allowed next
tokens (the first step's key is the prompt's last ``prefix_index`` = 3 tokens, the response header);
each call re-applies ``log_softmax`` to the scores, builds a ``full_like(scores, -inf)`` mask, loops
over batch and beams in Python (key = the last ``count`` tokens, ``count`` a call counter kept on the
processor), sets the allowed ids of the row to 0, and returns ``scores + mask``. Outputs are checked
identical to ours in the same run: theirs on raw logits against ours on ``log_softmax`` of the same
logits (their first line), bit for bit, at every step. Timed inputs are what transformers' beam search
passes: log-probabilities.

Ours: :class:`TrieLogitsProcessor` with ``inplace=True`` (beam search passes a fresh ``log_softmax``):
one ``searchsorted`` per step over the sparse tables, gather the allowed scores, fill the logits with
-inf in place, scatter the gathered scores back. Ours and the floor write into one work buffer across
repetitions; their cost does not depend on the values in it.

Lines:
- ``RATIO trie_processor_vs_authors``: the authors' time / ours over all 5 steps (goal >= 10).
- ``RATIO trie_processor_over_floor``: ours / the floor, one in-place ``masked_fill_(mask, -inf)`` per
  step with a precomputed (rows, V) mask (goal <= 2).
- ``RATIO trie_step_large_over_small_overhead``: our processor's time with the large catalogue / with
  3,686 items (flat per-step cost: goal <= 1.5).
- trie memory and build time at the large size, against the dense (P_t, R) tables the kit used before
  and (without ``--quick``) the authors' dict (build time; its memory by ``sys.getsizeof``).

The end-to-end beam-search ratio (``beam_search_vs_authors``) lives in ``bench/beam_search.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import paired_ratio, pin_threads, print_ratio, timed

pin_threads(1)

import torch  # noqa: E402  (after the threads are pinned)

from recsys.models.constrained import SIDTrie, TrieLogitsProcessor  # noqa: E402

BASE_VOCAB = 49_152  # SmolLM2
LEVEL_SIZES = [256, 256, 256, 6]  # 774 ID tokens -> V = 49,926
HEADER = [1010, 1011, 1012]  # the prompt's last tokens, the authors' response header ("### Response:\n")
BATCH, BEAMS, PROMPT_LENGTH = 16, 50, 64


def catalogue(n_items: int, seed: int = 0, base_vocab: int = BASE_VOCAB) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Random 3-level IDs (256 codes each) plus a dedup level numbering items that share them.

    The ID tokens follow ``base_vocab`` ordinary tokens. Returns the SIDTrie arguments: codes (N', 4), the
    token ids of each level, V.
    """
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(0, 256, (n_items, 3), generator=g)  # (N, 3)
    key = (head[:, 0] * 256 + head[:, 1]) * 256 + head[:, 2]  # (N,)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    first = torch.searchsorted(sorted_key, sorted_key)  # (N,) first position of each item's group
    dedup = torch.empty_like(key)
    dedup[order] = torch.arange(n_items) - first  # ordinal inside the group of equal 3-level IDs
    keep = dedup < LEVEL_SIZES[3]
    codes = torch.cat([head, dedup.unsqueeze(1)], dim=1)[keep]  # (N', 4)
    offsets = [base_vocab + sum(LEVEL_SIZES[:l]) for l in range(4)]
    level_ids = [torch.arange(offsets[l], offsets[l] + LEVEL_SIZES[l]) for l in range(4)]
    return codes, level_ids, base_vocab + sum(LEVEL_SIZES)


def step_inputs(trie: SIDTrie, seed: int = 1) -> list[torch.Tensor]:
    """input_ids beam search feeds the processor at the steps t = 0..L: (rows, prompt + t)."""
    g = torch.Generator().manual_seed(seed)
    rows = BATCH * BEAMS
    prompt = torch.randint(3, 1000, (rows, PROMPT_LENGTH), generator=g)  # (rows, T)
    prompt[:, -len(HEADER) :] = torch.tensor(HEADER)
    items = torch.randint(0, trie.codes.shape[0], (rows,), generator=g)
    ids = trie.item_token_ids[items]  # (rows, L) beams on real ID prefixes
    return [torch.cat([prompt, ids[:, :t]], dim=1) for t in range(trie.num_levels + 1)]


def _join(tokens: list[int]) -> str:
    return "-".join(str(x) for x in tokens)


def authors_prefix_table(trie: SIDTrie, header: list[int]) -> dict[str, list[int]]:
    """The authors' ``evaluate.py`` table: ``"-".join`` of a prefix's token ids -> allowed next tokens.

    The first key is the response header; later keys are the ID tokens generated so far; a full ID maps
    to EOS.
    """
    table: dict[str, set[int]] = {}
    h = len(header)
    for item in trie.item_token_ids.tolist():
        tokens = header + item + [trie.eos_token_id]
        for i in range(h, len(tokens)):
            key = _join(tokens[:i]) if i == h else _join(tokens[h:i])
            if key not in table:
                table[key] = set()
            table[key].add(tokens[i])
    return {key: list(allowed) for key, allowed in table.items()}


def dict_bytes(table: dict[str, list[int]]) -> int:
    """Bytes of a prefix dict: the dict, every key string, every list and every int in it (ints counted once each)."""
    return sys.getsizeof(table) + sum(
        sys.getsizeof(key) + sys.getsizeof(allowed) + sum(sys.getsizeof(x) for x in allowed) for key, allowed in table.items()
    )


class AuthorsConstrainedLogitsProcessor:
    """Restatement of MiniOneRec's ``ConstrainedLogitsProcessor`` (see the module docstring).

    Args:
        prefix_allowed_tokens_fn: (batch_id, list of token ids) -> allowed next tokens.
        num_beams: beams per prompt (rows are batch * beams).
        prefix_index: header tokens read at the first call.
        renormalise: apply their ``log_softmax`` first (True is their code; False only for an info line).
    """

    def __init__(self, prefix_allowed_tokens_fn, num_beams: int, prefix_index: int = 3, renormalise: bool = True):
        self.prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self.num_beams = num_beams
        self.prefix_index = prefix_index
        self.renormalise = renormalise
        self.count = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.renormalise:
            scores = torch.nn.functional.log_softmax(scores, dim=-1)
        mask = torch.full_like(scores, float("-inf"))  # (rows, V)
        for batch_id, beam_rows in enumerate(input_ids.view(-1, self.num_beams, input_ids.shape[-1])):
            for beam_id, sent in enumerate(beam_rows):
                key = sent[-self.prefix_index :] if self.count == 0 else sent[-self.count :]
                allowed = self.prefix_allowed_tokens_fn(batch_id, key.tolist())
                if len(allowed) == 0:
                    continue
                mask[batch_id * self.num_beams + beam_id, allowed] = 0
        self.count += 1
        return scores + mask


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200k-item trie, 3 repetitions (V, rows unchanged)")
    parser.add_argument("--items", type=int, default=None, help="large catalogue size (default 1M, 200k with --quick)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the trie lines always run on cpu)")
    parser.add_argument("--vocab", type=int, default=BASE_VOCAB + sum(LEVEL_SIZES),
                        help=f"V, the logits' width: ordinary tokens + the {sum(LEVEL_SIZES)} ID tokens (default 49,926)")
    args = parser.parse_args()
    base_vocab = args.vocab - sum(LEVEL_SIZES)
    if base_vocab < max(HEADER) + 1:
        parser.error(f"--vocab: expected at least {max(HEADER) + 1 + sum(LEVEL_SIZES)} (the header's tokens and the "
                     f"{sum(LEVEL_SIZES)} ID tokens), got {args.vocab}")
    large = args.items or (200_000 if args.quick else 1_000_000)
    repeats = 3 if args.quick else 7
    device = torch.device(args.device)

    small_trie = SIDTrie(*catalogue(3686, base_vocab=base_vocab), eos_token_id=2)
    inputs = [ids.to(device) for ids in step_inputs(small_trie)]
    rows, V = inputs[0].shape[0], small_trie.vocab_size
    print(f"V={V} rows={rows} ({BATCH} x {BEAMS}) steps={len(inputs)} items={small_trie.codes.shape[0]} "
          f"device={device} threads={torch.get_num_threads()}")

    table = authors_prefix_table(small_trie, HEADER)

    def prefix_allowed_tokens_fn(batch_id, tokens):
        return table.get(_join(tokens), [])

    # identical outputs at every step: theirs on raw logits, ours on log_softmax of them
    g = torch.Generator().manual_seed(2)
    authors = AuthorsConstrainedLogitsProcessor(prefix_allowed_tokens_fn, BEAMS)
    ours = TrieLogitsProcessor(small_trie, PROMPT_LENGTH, inplace=True)
    for ids in inputs:
        raw = torch.randn(rows, V, generator=g).to(device)
        want = authors(ids, raw)
        got = ours(ids, torch.log_softmax(raw, dim=-1))
        assert torch.equal(got, want), "the processors disagree"
        assert torch.isfinite(got).any(dim=1).all(), "a real beam was closed"
        del raw, want, got

    logp = torch.log_softmax(torch.randn(rows, V, generator=g), dim=-1).to(device)  # what beam search passes
    work = logp.clone()  # ours and the floor write into it in place
    closed = [~small_trie.allowed_token_mask(ids[:, PROMPT_LENGTH:].cpu()).to(device) for ids in inputs]  # (rows, V) each

    def authors_steps(renormalise=True):
        processor = AuthorsConstrainedLogitsProcessor(prefix_allowed_tokens_fn, BEAMS, renormalise=renormalise)
        for ids in inputs:
            processor(ids, logp)

    def ours_steps(processor=ours):
        for ids in inputs:
            processor(ids, work)

    def floor_steps():
        for mask in closed:
            work.masked_fill_(mask, float("-inf"))

    ratio, t_authors, t_ours = paired_ratio(authors_steps, ours_steps, repeats=repeats)
    over, _, t_floor = paired_ratio(ours_steps, floor_steps, repeats=repeats)
    mask_only = timed(lambda: authors_steps(renormalise=False))
    fill_only = timed(lambda: [work.fill_(float("-inf")) for _ in inputs])
    steps = len(inputs)
    print(f"per step: authors {t_authors / steps * 1e3:.1f} ms (without their log_softmax {mask_only / steps * 1e3:.1f} ms), "
          f"ours {t_ours / steps * 1e3:.1f} ms, floor masked_fill_ {t_floor / steps * 1e3:.1f} ms, "
          f"plain fill_ {fill_only / steps * 1e3:.1f} ms")

    # the large catalogue: build time, memory, and the same processor calls
    arguments = catalogue(large, base_vocab=base_vocab)
    start = time.perf_counter()
    big = SIDTrie(*arguments, eos_token_id=2)
    build = time.perf_counter() - start
    P = [k.numel() for k in big.keys]
    dense = sum(p * big.radix for p in P)  # bytes of the dense (P_t, R) bool tables the kit used before
    print(f"trie {big.codes.shape[0]:,} items x {big.num_levels} levels: prefixes per level {P}; "
          f"tables {big.table_bytes() / 2**20:.1f} MiB (dense per-level tables: {dense / 2**20:.1f} MiB); "
          f"SIDTrie build {build:.2f} s")
    if args.quick:
        print("authors' dict at this size: run without --quick")
    else:
        start = time.perf_counter()
        authors_table = authors_prefix_table(big, HEADER)
        authors_build = time.perf_counter() - start
        print(f"authors' dict: {len(authors_table):,} keys, build {authors_build:.2f} s, "
              f"{dict_bytes(authors_table) / 2**20:.0f} MiB (sys.getsizeof of the dict, its keys, lists and ints)")
        del authors_table

    big_inputs = [ids.to(device) for ids in step_inputs(big)]
    ours_big = TrieLogitsProcessor(big, PROMPT_LENGTH, inplace=True)
    for ids in big_inputs:  # identical to the naive answer: exactly the allowed tokens stay finite
        open_tokens = torch.isfinite(ours_big(ids, logp.clone()))
        assert torch.equal(open_tokens, big.allowed_token_mask(ids[:, PROMPT_LENGTH:].cpu()).to(device))

    def ours_big_steps():
        for ids in big_inputs:
            ours_big(ids, work)

    flat, t_big, t_small = paired_ratio(ours_big_steps, ours_steps, repeats=repeats)
    lookup = timed(lambda: [big.allowed_tokens(ids[:, PROMPT_LENGTH:]) for ids in big_inputs]) / steps
    lookup_small = timed(lambda: [small_trie.allowed_tokens(ids[:, PROMPT_LENGTH:]) for ids in inputs]) / steps
    print(f"ours per step: {t_small / steps * 1e3:.1f} ms at {small_trie.codes.shape[0]:,} items, "
          f"{t_big / steps * 1e3:.1f} ms at {big.codes.shape[0]:,}; trie lookup alone {lookup_small * 1e3:.2f} ms vs "
          f"{lookup * 1e3:.2f} ms")

    print_ratio("trie_processor_vs_authors", ratio, goal=">= 10", detail=f"V={V:,}, {rows} rows, {device}")
    print_ratio("trie_processor_over_floor", over, goal="<= 2", detail=f"V={V:,}, {rows} rows, {device}")
    print_ratio("trie_step_large_over_small_overhead", flat, goal="<= 1.5", detail=f"{big.codes.shape[0]:,} vs 3,686 items")


if __name__ == "__main__":
    main()
