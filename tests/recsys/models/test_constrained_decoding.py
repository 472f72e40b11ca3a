import pytest
import torch

from recsys.functional.quantize import append_dedup_level
from recsys.models.constrained import (
    DictTrieLogitsProcessor,
    SIDTrie,
    TrieLogitsProcessor,
    beam_generation_config,
    recommend_with_beams,
    score_all_items,
)
from recsys.data.semantic_ids import SemanticIDs, sid_token
from recsys.models.decoder import build_scratch_decoder
from recsys.models.tokenizers import build_word_tokenizer


def _setup(n_items=120, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = append_dedup_level(torch.randint(0, k, (n_items, 3), generator=g))  # random IDs, deduplicated
    sizes = [int(codes[:, l].max()) + 1 for l in range(codes.shape[1])]
    sids = SemanticIDs([str(i) for i in range(n_items)], codes, sizes)
    tok = build_word_tokenizer(["predict the next item"], sids.all_tokens(), min_freq=1)
    torch.manual_seed(seed)
    model = build_scratch_decoder(len(tok), hidden_size=16, num_layers=1, num_heads=2).eval()
    level_ids = [torch.tensor(tok.convert_tokens_to_ids([sid_token(l, c) for c in range(s)])) for l, s in enumerate(sizes)]
    trie = SIDTrie(codes, level_ids, len(tok), tok.eos_token_id)
    prompts = [tok.encode("predict the next item"), tok.encode("next item")]
    return codes, tok, model, trie, prompts


def test_processor_masks_exactly_the_trie():
    codes, tok, model, trie, _ = _setup()
    # after the first code of item 0, exactly the second-level tokens of items sharing that code stay open
    first = trie.item_token_ids[0, :1].unsqueeze(0)  # (1, 1)
    scores = torch.zeros(1, len(tok))
    out = TrieLogitsProcessor(trie, prompt_length=0)(first, scores)
    open_tokens = set(torch.isfinite(out[0]).nonzero().flatten().tolist())
    expected = {int(trie.item_token_ids[n, 1]) for n in range(codes.shape[0]) if codes[n, 0] == codes[0, 0]}
    assert open_tokens == expected
    # after a full ID only EOS; after an impossible prefix (EOS first) nothing at all: fail closed
    full = trie.item_token_ids[:1]  # (1, L)
    assert torch.isfinite(TrieLogitsProcessor(trie, 0)(full, scores)[0]).nonzero().flatten().tolist() == [tok.eos_token_id]
    bad = torch.tensor([[tok.eos_token_id]])
    assert not torch.isfinite(TrieLogitsProcessor(trie, 0)(bad, scores)).any()


def test_every_generated_id_is_valid_and_matches_the_dict_trie():
    codes, tok, model, trie, prompts = _setup()
    items, scores = recommend_with_beams(model, prompts, trie, 20, tok.pad_token_id)
    assert (items >= 0).all(), "an invalid item was produced"
    assert all(len(set(row.tolist())) == 20 for row in items)  # distinct items per user
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-6).all()  # beams in score order
    items_dict, _ = recommend_with_beams(model, prompts, trie, 20, tok.pad_token_id, DictTrieLogitsProcessor)
    assert torch.equal(items, items_dict)
    # more beams than items: the surplus comes back as -1, never as an invalid ID
    few_codes, few_tok, few_model, few_trie, few_prompts = _setup(n_items=5, k=3)
    got, _ = recommend_with_beams(few_model, few_prompts, few_trie, 8, few_tok.pad_token_id)
    for row in got:
        valid = row[row >= 0]
        assert sorted(valid.tolist()) == list(range(5)) and (row[5:] == -1).all()


def test_exact_scores_equal_teacher_forced_log_likelihood_and_agree_with_beams():
    codes, tok, model, trie, prompts = _setup()
    exact = score_all_items(model, prompts, trie, tok.pad_token_id)  # (B, N)
    for b, p in enumerate(prompts):
        seqs = torch.tensor([p + trie.item_token_ids[n].tolist() for n in range(codes.shape[0])])
        logp = torch.log_softmax(model(seqs).logits, -1)
        ref = sum(logp[:, len(p) - 1 + t].gather(1, seqs[:, len(p) + t : len(p) + t + 1]).squeeze(1) for t in range(codes.shape[1]))
        assert torch.allclose(exact[b], ref, atol=1e-4)
    # the top beam is the exact arg-max up to the EOS term; with a random model they agree on the best item
    items, _ = recommend_with_beams(model, prompts, trie, 10, tok.pad_token_id)
    assert set(items[:, 0].tolist()) <= set(exact.topk(3).indices.flatten().tolist())


def test_generation_config_is_explicit():
    cfg = beam_generation_config(50, 3, pad_token_id=0, eos_token_id=2)
    assert cfg.do_sample is False and cfg.top_k is None and cfg.top_p is None and cfg.temperature is None
    assert cfg.num_beams == cfg.num_return_sequences == 50 and cfg.max_new_tokens == 4


def test_vocabulary_mismatch_is_an_error():
    codes, tok, model, trie, _ = _setup()
    level_ids = list(trie.level_token_ids)
    with pytest.raises(ValueError, match="does not match the model"):
        SIDTrie(codes, level_ids, vocab_size=10, eos_token_id=2)
    with pytest.raises(ValueError, match="unique"):
        SIDTrie(codes[:, :1].repeat(1, 1), level_ids[:1], len(tok), 2)


def _wide_level_trie():
    # Issue 10 (2): 3 items with IDs (0, 0), (0, 1), (1, 0), so the largest code used is 1 (radix 2), but
    # the ID vocabulary has 5 codes at level 0 and 4 at level 1 (as random-KxL gives on a small catalogue).
    # Tokens: level 0 code c -> 10 + c, level 1 code c -> 20 + c, EOS = 1, V = 30.
    codes = torch.tensor([[0, 0], [0, 1], [1, 0]])
    level_ids = [torch.arange(10, 15), torch.arange(20, 24)]
    return SIDTrie(codes, level_ids, vocab_size=30, eos_token_id=1)


def test_allowed_token_mask_has_full_width_when_a_level_has_unused_codes():
    trie = _wide_level_trie()
    generated = [[], [10], [11], [12], [10, 20], [10, 22]]

    def open_tokens(prefix):
        mask = trie.allowed_token_mask(torch.tensor([prefix], dtype=torch.long).view(1, len(prefix)))  # (1, V)
        assert mask.shape == (1, 30)
        return mask[0].nonzero().flatten().tolist()

    # first step: the codes items start with, 0 and 1 -> tokens 10, 11; the unused codes 2..4 stay closed
    assert open_tokens(generated[0]) == [10, 11]
    assert open_tokens(generated[1]) == [20, 21]  # after code 0: items 0 and 1 continue with codes 0, 1
    assert open_tokens(generated[2]) == [20]  # after code 1: only item 2, code 0
    assert open_tokens(generated[3]) == []  # code 2 starts no item: fail closed
    assert open_tokens(generated[4]) == [1]  # a complete ID: EOS only
    # (0, 2) is no item; packed with radix 2 it would read 0 * 2 + 2 = 2, the key of item 2's (1, 0)
    assert open_tokens(generated[5]) == []
    found = trie.items_from_tokens(torch.tensor([[10, 20], [10, 21], [11, 20], [10, 22], [11, 23]]))
    assert found.tolist() == [0, 1, 2, -1, -1]


def test_beam_search_with_unused_codes_returns_every_item():
    # the case end to end: random IDs with K = 8 codes per level on 4 items (the codes used stay
    # well below 8 at some level), beam search over the trie must run and return the 4 items
    codes = torch.tensor([[0, 1], [0, 2], [1, 0], [2, 1]])
    sizes = [8, 8]
    sids = SemanticIDs([str(i) for i in range(4)], codes, sizes)
    tok = build_word_tokenizer(["predict the next item"], sids.all_tokens(), min_freq=1)
    torch.manual_seed(0)
    model = build_scratch_decoder(len(tok), hidden_size=16, num_layers=1, num_heads=2).eval()
    level_ids = [torch.tensor(tok.convert_tokens_to_ids([sid_token(l, c) for c in range(s)])) for l, s in enumerate(sizes)]
    trie = SIDTrie(codes, level_ids, len(tok), tok.eos_token_id)
    items, _ = recommend_with_beams(model, [tok.encode("predict the next item")], trie, 4, tok.pad_token_id)
    assert sorted(items[0].tolist()) == [0, 1, 2, 3]


def test_word_tokenizer_ids_are_hand_derived():
    # pieces of the lower-cased texts: red pen 1 2 | red tape | pen - 3 -> counts red 2, pen 2, the rest 1;
    # order: specials (0-3), ID tokens (4-6), then by count, ties alphabetical: pen red - 1 2 3 tape
    tok = build_word_tokenizer(["Red pen 12", "red tape", "PEN-3"], ["<a_0>", "<a_1>", "<b_0>"], min_freq=1)
    assert tok.convert_ids_to_tokens(list(range(len(tok)))) == [
        "<pad>", "<bos>", "<eos>", "<unk>", "<a_0>", "<a_1>", "<b_0>", "pen", "red", "-", "1", "2", "3", "tape"]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # ID tokens stay whole (upper case is lowered first); unknown words and "!" -> <unk>; digits one by one
    assert tok.encode("Red <A_1><b_0> pens 3!", add_special_tokens=False) == [8, 5, 6, 3, 12, 3]
    # a special token's text in a title is never the special token itself
    assert tok.encode("<eos>", add_special_tokens=False) == [3, 3, 3]
    assert tok.decode([1, 8, 5, 2, 0], skip_special_tokens=True) == "red <a_1>"
    assert tok.convert_tokens_to_ids(["<b_0>", "<c_9>"]) == [6, 3]
    # min_freq=2 keeps pen and red only; max_words=1 keeps pen only
    assert len(build_word_tokenizer(["Red pen 12", "red tape", "PEN-3"], ["<a_0>"], min_freq=2)) == 4 + 1 + 2
    assert build_word_tokenizer(["Red pen 12", "red tape", "PEN-3"], [], max_words=1, min_freq=1).convert_ids_to_tokens(4) == "pen"
