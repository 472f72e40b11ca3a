"""ARES: what AEPO's entropy shaping costs on top of a plain GRPO update, in time and in memory.

    python bench/ares.py --size quick      # (alias: --quick) 4 layers, d 128, vocab 8,192, B = 8 x 32 tokens
    python bench/ares.py --size smollm2    # SmolLM2-135M's shape, vocab 49,152, B = 16 x 128 tokens (minutes)

Model: a randomly initialised ``LlamaForCausalLM`` (no download) with LoRA r 16 on the kit's default
modules; ``smollm2`` has SmolLM2-135M's layer shape (30 layers, d 576, MLP 1536, 9 heads / 3 KV heads,
tied embeddings, vocab 49,152), ``quick`` a small one. Rollouts (generation) are the same for both
algorithms and are left out: each step starts from one fixed batch of B = prompts x G sampled sequences
(32 prompt tokens, right-padded completions of T/2..T tokens) with random 0/1 accuracy rewards.

- baseline, plain GRPO: the update a user writes over the kit's shared policy functions: one policy forward
  with gradient, ``sampled_token_logprobs``, one reference forward (LoRA disabled), group advantages,
  clipped surrogate + constant k3 KL, token-mean, backward.
- ours, AEPO (``LitARES.rollout_loss``): the same forwards, with log-probs and the exact full-vocabulary
  entropy from one chunked log-softmax pass (``sampled_token_logprobs_and_entropy``), then window
  entropy, per-response percentile and running threshold, HWE tokens, difficulty buckets, per-bucket
  targets and alpha, the hierarchical entropy reward, accuracy filtering, per-bucket KL coefficients and
  the KL controller step; backward.

Lines (threads pinned to 1 by ``_common.pin_threads``):
- ``RATIO ares_aepo_step_overhead``: AEPO step time / GRPO step time, median of interleaved paired
  repetitions (goal <= 1.05). On CPU the time is the process's CPU time (``--clock cpu``, the default
  there: one pinned thread on a machine shared with other jobs, where wall time also counts the waits for
  a core); on CUDA it is wall time (``--clock wall``).
- ``RATIO ares_entropy_peak_memory_over_logits``: the extra peak memory of the entropy step (the fused
  log-prob + entropy pass, forward under autograd as in training) divided by the bytes of the (B, T, V)
  logits (goal <= 0.25). Measured, not derived: on CUDA, ``torch.cuda.max_memory_allocated`` above the
  memory allocated before the call; on CPU, every allocation and free the CPU allocator reports to
  ``torch.profiler`` (``profile_memory=True``: the raw ``[memory]`` events, internal temporaries of
  kernels included), replayed in time order: the peak of their running sum. The previous implementation
  (full-softmax entropy over ``reshape(-1, V)`` chunks of 1024 rows, restated below) is measured the same
  way for comparison.
- checks, in the same run: the fused pass's log-probs equal ``sampled_token_logprobs`` (which GRPO uses)
  exactly, and its entropy equals the previous implementation's to 1e-4 nats, on the model's logits.
"""

from __future__ import annotations

import argparse
import time
import warnings

from _common import paired_ratio, pin_threads, print_ratio

pin_threads(1)

import torch  # noqa: E402  (after the threads are pinned)

SIZES = {
    # model shape, prompts x group size, prompt tokens, completion tokens, paired repetitions
    "quick": dict(model=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=8192), prompts=2, group_size=4, tokens=32, repeats=15),
    "smollm2": dict(model=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3, vocab_size=49152), prompts=4, group_size=4, tokens=128, repeats=5),
}
PROMPT_TOKENS = 32


def build(size: dict, device: torch.device):
    """LitARES (AEPO) around a random Llama of the given shape with LoRA r 16 (adapters moved off 0)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlkit.methods.ares import LitARES
    from vlkit.models.language import LanguageModelBundle, LanguageModelSettings, apply_lora, char_tokenizer

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**size["model"], max_position_embeddings=2048, tie_word_embeddings=True))
    module = LitARES(LanguageModelSettings(model_name="tiny-random-lm", lora_r=16), algorithm="aepo",
                     group_size=size["group_size"], max_new_tokens=size["tokens"])
    # swap the tiny preset for the benchmark model (the tokenizer is unused: rollouts are synthetic)
    module.model = apply_lora(base, 16, 32)
    module.bundle = LanguageModelBundle(module.model, char_tokenizer(), None)
    module.to(device)
    for name, p in module.model.named_parameters():  # adapters away from 0 so that the KL term is non-zero
        if "lora_B" in name:
            with torch.no_grad():
                p.normal_(0, 0.01)
    module.train()
    return module


def synthetic_rollout(size: dict, device: torch.device):
    """A scored rollout batch in ``LitARES.generate``'s format, and (B,) 0/1 accuracy rewards."""
    g = torch.Generator().manual_seed(1)
    B, P, T, V = size["prompts"] * size["group_size"], PROMPT_TOKENS, size["tokens"], size["model"]["vocab_size"]
    ids = torch.randint(10, V, (B, P + T), generator=g)  # (B, P + T)
    attn = torch.ones(B, P + T, dtype=torch.long)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    comp_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T) right-padded completions
    attn[:, P:] = comp_mask
    correct = (torch.rand(B, generator=g) < 0.5).float()  # mixed groups: nothing filtered by chance alone
    roll = {"input_ids": ids.to(device), "attention_mask": attn.to(device), "completion_ids": ids[:, P:].to(device),
            "completion_mask": comp_mask.to(device), "prompt_length": P, "extra": {}}
    return roll, correct.to(device)


def grpo_loss(module, roll: dict, correct: torch.Tensor, kl_coef: float = 1e-2) -> torch.Tensor:
    """A plain GRPO update's loss over the kit's shared policy functions (no entropy anywhere)."""
    from vlkit.functional.policy import aggregate_tokens, clipped_surrogate, group_advantages, kl_penalty
    from vlkit.functional.policy import sampled_token_logprobs

    P, mask, ids = roll["prompt_length"], roll["completion_mask"], roll["completion_ids"]
    logits = module._forward_logits(roll["input_ids"], roll["attention_mask"], {})[:, P - 1 : -1]  # (B, T, V)
    logprobs = sampled_token_logprobs(logits, ids)  # (B, T)
    del logits
    with torch.no_grad(), module.model.disable_adapter():
        ref = sampled_token_logprobs(module._forward_logits(roll["input_ids"], roll["attention_mask"], {})[:, P - 1 : -1], ids)
    adv = group_advantages(correct, module.hparams.group_size)  # (B,)
    per_token = clipped_surrogate(logprobs, logprobs.detach(), adv, 0.2) + kl_coef * kl_penalty(logprobs, ref)
    return aggregate_tokens(per_token, mask)


def previous_token_entropy(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """The kit's entropy before the fused pass (restated): -sum p log p from a full log_softmax over
    ``reshape(-1, V)`` row chunks (the reshape copies a sliced view whole), (B, T) float32."""
    flat = logits.detach().reshape(-1, logits.shape[-1])  # (N, V)
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)  # (N,)
    for start in range(0, flat.shape[0], chunk_size):
        log_p = torch.log_softmax(flat[start : start + chunk_size].float(), dim=-1)  # (n, V)
        out[start : start + chunk_size] = -(log_p.exp() * log_p).sum(dim=-1)
    return out.view(logits.shape[:-1])


def peak_extra_bytes(fn, device: torch.device) -> int:
    """Peak bytes allocated while ``fn()`` runs, above what was allocated when it started (see the module
    docstring: CUDA's peak counter, or the CPU allocator's events recorded by ``torch.profiler``)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # the raw allocator events (signed sizes); the public event list attributes most of them to operators
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="smollm2")
    p.add_argument("--quick", action="store_true", help="the same as --size quick")
    p.add_argument("--repeats", type=int, default=None, help="paired repetitions (default: per size)")
    p.add_argument("--tokens", type=int, default=None, help="completion tokens T (default: per size)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clock", choices=["cpu", "wall"], default=None,
                   help="step time as process CPU time or wall time (default: cpu on CPU, wall on CUDA)")
    args = p.parse_args(argv)
    name = "quick" if args.quick else args.size
    size = dict(SIZES[name])
    if args.tokens is not None:
        size["tokens"] = args.tokens
    repeats = args.repeats or size["repeats"]
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    clock = args.clock or ("wall" if device.type == "cuda" else "cpu")
    if clock == "cpu" and device.type == "cuda":
        p.error("--clock cpu would not count GPU time; use --clock wall on CUDA")

    from vlkit.functional.policy import sampled_token_logprobs, sampled_token_logprobs_and_entropy

    module = build(size, device)
    roll, correct = synthetic_rollout(size, device)
    B, T, V = roll["completion_ids"].shape + (size["model"]["vocab_size"],)
    print(f"size {name} | device {device} | B {B} x {T} tokens | vocab {V} | random Llama "
          f"{size['model']['num_hidden_layers']} layers, d {size['model']['hidden_size']}, LoRA r 16")

    # same-run checks on the model's own logits
    P = roll["prompt_length"]
    with torch.no_grad():
        logits = module._forward_logits(roll["input_ids"], roll["attention_mask"], {})[:, P - 1 : -1]  # (B, T, V)
        logprobs, entropy = sampled_token_logprobs_and_entropy(logits, roll["completion_ids"])
        assert torch.equal(logprobs, sampled_token_logprobs(logits, roll["completion_ids"])), "log-probs differ"
        gap = (entropy - previous_token_entropy(logits)).abs().max().item()
        assert gap < 1e-4, f"entropy differs from the previous implementation by {gap}"
    print(f"check: log-probs identical to GRPO's; entropy within {gap:.1e} nats of the previous implementation")

    # memory of the entropy step: the fused pass as in training (logits with gradient), vs the previous one
    logit_bytes = logits.numel() * logits.element_size()
    leaf = logits.detach().clone().requires_grad_()  # (B, T, V)
    del logits
    fused = peak_extra_bytes(lambda: sampled_token_logprobs_and_entropy(leaf, roll["completion_ids"]), device)
    view = torch.cat([leaf.detach(), leaf.detach()[:, :1]], dim=1)[:, :-1]  # (B, T, V) a slice, as in training
    previous = peak_extra_bytes(lambda: previous_token_entropy(view), device)
    del leaf, view
    print(f"entropy step extra peak: fused pass {fused / 2**20:.1f} MiB, previous entropy pass {previous / 2**20:.1f} MiB "
          f"(logits {logit_bytes / 2**20:.1f} MiB; previous / logits = {previous / logit_bytes:.2f})")

    def aepo_step():
        module.zero_grad(set_to_none=True)
        module.rollout_loss(roll, correct).backward()

    def grpo_step():
        module.zero_grad(set_to_none=True)
        grpo_loss(module, roll, correct).backward()

    # paired_ratio(first, second) is the median of time(first) / time(second): AEPO first, so the ratio is
    # the overhead (a name ending in _overhead: our time / reference time)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    overhead, t_aepo, t_grpo = paired_ratio(aepo_step, grpo_step, repeats=repeats, clock=timer)
    module.zero_grad(set_to_none=True)
    print(f"plain GRPO step median {t_grpo * 1e3:9.1f} ms | AEPO step median {t_aepo * 1e3:9.1f} ms "
          f"({clock} time, {repeats} pairs)")
    print_ratio("ares_aepo_step_overhead", overhead, goal="<= 1.05", detail=name)
    print_ratio("ares_entropy_peak_memory_over_logits", fused / logit_bytes, goal="<= 0.25", detail=name)


if __name__ == "__main__":
    main()
