"""Constrained beam search: our vectorised trie processor vs the authors' style (a Python dict keyed by
the generated prefix, looked up row by row), on the same model, prompts and beam width.

    python bench/constrained_decoding.py [--quick] [--device cpu|cuda]

Prints beams per second for both, checks that both return identical recommendations, and ends with
``RATIO constrained_beam_search <dict time / ours>`` (end-to-end generate) and
``RATIO trie_processor <dict time / ours>`` (the processor calls alone, replayed on recorded inputs).
"""

from __future__ import annotations

import argparse
import time

import torch

from recsys.models.constrained import DictTrieLogitsProcessor, SIDTrie, TrieLogitsProcessor, recommend_with_beams
from recsys.data.semantic_ids import random_semantic_ids, sid_token
from recsys.models.decoder import build_scratch_decoder
from recsys.models.tokenizers import build_word_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    n_items, batch, beams, repeats = (600, 4, 20, 2) if args.quick else (3686, 16, 50, 3)
    torch.manual_seed(0)
    sids = random_semantic_ids([str(i) for i in range(n_items)], 256, 3)
    tok = build_word_tokenizer(["the user has interacted with items"], sids.all_tokens(), min_freq=1)
    model = build_scratch_decoder(len(tok), hidden_size=128, num_layers=2, num_heads=4).to(args.device).eval()
    level_ids = [torch.tensor(tok.convert_tokens_to_ids([sid_token(l, c) for c in range(256)])) for l in range(3)]
    trie = SIDTrie(sids.codes, level_ids, len(tok), tok.eos_token_id)
    g = torch.Generator().manual_seed(1)
    prompts = []
    for _ in range(batch):
        history = torch.randint(0, n_items, (10,), generator=g).tolist()
        prompts.append(tok.encode("the user has interacted with items " + " ".join(sids.sid_string(i) for i in history)))

    def run(processor_class):
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            items, _ = recommend_with_beams(model, prompts, trie, beams, tok.pad_token_id, processor_class)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return items, (time.perf_counter() - start) / repeats

    run(TrieLogitsProcessor)  # warm-up
    ours_items, ours_time = run(TrieLogitsProcessor)
    dict_items, dict_time = run(DictTrieLogitsProcessor)
    assert torch.equal(ours_items, dict_items), "the two processors disagree"
    assert (ours_items >= 0).all(), "an invalid item was returned"

    # processor calls alone, replayed on the inputs beam search feeds them (batch * beams rows per step)
    rows = batch * beams
    recorded = []  # (rows, 5 prompt tokens + t generated ID tokens) for the steps t = 0..L
    for t in range(trie.num_levels + 1):
        generated = trie.item_token_ids[torch.randint(0, n_items, (rows,), generator=g), :t]  # (rows, t)
        recorded.append(torch.cat([torch.zeros(rows, 5, dtype=torch.long), generated], dim=1).to(args.device))
    scores = torch.randn(rows, len(tok), device=args.device)
    ours_proc, dict_proc = TrieLogitsProcessor(trie, 5), DictTrieLogitsProcessor(trie, 5)
    timings = {}
    for name, proc in (("ours", ours_proc), ("dict", dict_proc)):
        proc(recorded[0], scores)
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats * 3):
            outs = [proc(ids, scores) for ids in recorded]
        if args.device == "cuda":
            torch.cuda.synchronize()
        timings[name] = (time.perf_counter() - start) / (repeats * 3)
        timings[name + "_out"] = outs
    for a, b in zip(timings["ours_out"], timings["dict_out"]):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)), "processor masks differ"

    print(f"device={args.device} items={n_items} batch={batch} beams={beams}")
    print(f"ours: {batch * beams / ours_time:.0f} beams/s ({ours_time * 1e3:.1f} ms per batch)")
    print(f"dict: {batch * beams / dict_time:.0f} beams/s ({dict_time * 1e3:.1f} ms per batch)")
    print(f"processor alone ({len(recorded)} steps, {rows} rows): ours {timings['ours'] * 1e3:.2f} ms, dict {timings['dict'] * 1e3:.2f} ms")
    print(f"RATIO constrained_beam_search {dict_time / ours_time:.3f}")
    print(f"RATIO trie_processor {timings['dict'] / timings['ours']:.3f}")


if __name__ == "__main__":
    main()
