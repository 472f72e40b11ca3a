"""Constrained beam search that prefills each prompt once (its key/value cache shared by the beams), and
exact ranking of every item through the same shared prompt cache, against independent references: plain
``generate`` (the prompt expanded to every beam before its prefill) and teacher-forced full sequences."""

import pytest
import torch

from recsys.models.constrained import SIDTrie, TrieLogitsProcessor, beam_generation_config, left_pad, recommend_with_beams, score_all_items
from recsys.models.decoder import build_scratch_decoder
from vlkit.models.language import apply_lora, create_language_model



def _model(kind: str):
    """A tiny random causal LM: the scratch decoder (Llama, tied, MHA), the kit's tiny-random-lm (Llama
    with grouped-query attention over a character vocabulary), the scratch decoder under peft LoRA (as
    MiniOneRec's Hugging Face backbones run, with its adapters moved off the identity) or a tiny Qwen2."""
    torch.manual_seed(0)
    if kind == "lora":
        model = apply_lora(_model("scratch"), r=2, alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.5)  # fresh adapters are the identity: make them change the outputs
        return model.eval()
    if kind == "scratch":
        return build_scratch_decoder(60, hidden_size=16, num_layers=1, num_heads=2).eval()
    if kind == "tiny-random-lm":
        return create_language_model("tiny-random-lm").model.eval()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, eos_token_id=2)
    return Qwen2ForCausalLM(config).eval()


def _trie(model, n_items: int = 40, levels: int = 3, seed: int = 0) -> SIDTrie:
    """Random unique IDs with 4 codes per level; level l's code c is token 10 + 10 l + c."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randperm(4 ** levels, generator=g)[:n_items]
    codes = torch.stack([(codes // 4 ** (levels - 1 - l)) % 4 for l in range(levels)], dim=1)  # (N, L) base-4 digits
    level_ids = [torch.arange(10 + 10 * l, 14 + 10 * l) for l in range(levels)]
    return SIDTrie(codes, level_ids, model.get_input_embeddings().weight.shape[0], model.config.eos_token_id)


def _prompts(seed: int = 1) -> list[list[int]]:
    # different lengths, so rows are left-padded; the one-token prompt's prefix is padding only
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 50, (n,), generator=g).tolist() for n in (7, 1, 12, 4)]


def _plain_generate(model, prompts, trie, num_beams):
    """Today's path and the authors': ``generate`` expands each prompt to num_beams rows, then prefills."""
    from transformers import LogitsProcessorList

    input_ids, mask = left_pad(prompts, 0, "cpu")
    out = model.generate(input_ids=input_ids, attention_mask=mask,
                         generation_config=beam_generation_config(num_beams, trie.num_levels, 0, trie.eos_token_id),
                         logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, input_ids.shape[1])]))
    items = trie.items_from_tokens(out.sequences[:, input_ids.shape[1] : input_ids.shape[1] + trie.num_levels])
    scores = out.sequences_scores if num_beams > 1 else torch.zeros(len(prompts))  # 1 beam: greedy, no scores
    return items.view(len(prompts), num_beams), scores.view(len(prompts), num_beams)


@pytest.mark.parametrize("kind", ["scratch", "tiny-random-lm", "lora", "qwen2"])
def test_shared_prompt_beams_equal_plain_generate(kind):
    model = _model(kind)
    trie = _trie(model)
    prompts = _prompts()
    for num_beams in (1, 2, 8, 40):  # 1: greedy search; 40 = every item: the search is exhaustive
        items, scores = recommend_with_beams(model, prompts, trie, num_beams, 0)
        ref_items, ref_scores = _plain_generate(model, prompts, trie, num_beams)
        assert torch.equal(items, ref_items), f"{kind}, {num_beams} beams: different recommendations"
        assert torch.allclose(scores, ref_scores, atol=1e-5), f"{kind}, {num_beams} beams: different scores"
    assert sorted(items[0].tolist()) == list(range(40))  # 40 beams over 40 items: each item once


def test_each_prompt_is_prefilled_once():
    # count the tokens the model embeds. B = 4 prompts, T = 12 (left-padded), beams G = 8, L = 3 levels.
    # shared: B x (T - 1) prefill, then generate feeds the last prompt token and the L - 1 ID tokens plus the
    # last ID token (for the EOS step) to B x G rows: 4 * 11 + 4 * 8 * (1 + 3) = 44 + 128 = 172.
    # plain generate: B x G rows of T tokens, then the same 3 steps: 4 * 8 * 12 + 4 * 8 * 3 = 384 + 96 = 480.
    model = _model("scratch")
    trie = _trie(model)
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0].numel()))
    try:
        recommend_with_beams(model, _prompts(), trie, 8, 0)
        shared = sum(seen)
        seen.clear()
        _plain_generate(model, _prompts(), trie, 8)
        plain = sum(seen)
    finally:
        hook.remove()
    assert (shared, plain) == (172, 480)


def _teacher_forced(model, prompts, trie) -> torch.Tensor:
    """(B, N) log p(ID of item n | prompt), each item's whole sequence run on its own (no cache)."""
    out = torch.empty(len(prompts), trie.item_token_ids.shape[0])
    for b, p in enumerate(prompts):
        seqs = torch.tensor([p + row for row in trie.item_token_ids.tolist()])  # (N, T_b + L)
        logp = torch.log_softmax(model(seqs).logits.float(), -1)  # (N, T_b + L, V)
        steps = [logp[:, len(p) - 1 + t].gather(1, seqs[:, len(p) + t : len(p) + t + 1]).squeeze(1)
                 for t in range(trie.num_levels)]
        out[b] = torch.stack(steps).sum(0)
    return out


@pytest.mark.parametrize("kind", ["scratch", "tiny-random-lm", "lora"])
def test_exact_ranking_equals_teacher_forcing_at_any_chunk_size(kind):
    model = _model(kind)
    prompts = _prompts()
    for levels in (1, 3, 4):
        trie = _trie(model, n_items=40, levels=levels)
        ref = _teacher_forced(model, prompts, trie)
        # max_tokens 1: one item per chunk; 20: 20 // (4 * (L - 1)) items per chunk (chunks split prefixes);
        # 10**4: one chunk, the whole tree in one forward
        for max_tokens in (1, 20, 10 ** 4):
            got = score_all_items(model, prompts, trie, 0, max_tokens=max_tokens)  # (B, N)
            assert torch.allclose(got, ref, atol=1e-4), f"{kind}, L={levels}, max_tokens={max_tokens}"


def test_exact_ranking_shares_the_prompt_cache_and_bounds_each_forward():
    # 40 items at L = 3, B = 4 prompts, max_tokens 16 -> 16 // (4 * 2) = 2 items per chunk -> 20 chunks, each
    # a tree of at most 2 level-1 + 2 level-2 prefixes: every forward after the prefill is B = 4 rows (the
    # prompt cache is not copied per prefix) of at most 4 tokens (B * S <= 16)
    model = _model("scratch")
    trie = _trie(model)
    shapes = []
    hook = model.get_input_embeddings().register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    try:
        score_all_items(model, _prompts(), trie, 0, max_tokens=16)
    finally:
        hook.remove()
    assert shapes[0] == (4, 12) and len(shapes) == 1 + 20
    assert all(rows == 4 and 2 <= tokens <= 4 for rows, tokens in shapes[1:])


def test_bad_chunk_size_is_an_error():
    model = _model("scratch")
    with pytest.raises(ValueError, match="max_tokens"):
        score_all_items(model, _prompts(), _trie(model), 0, max_tokens=0)
