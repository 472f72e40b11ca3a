"""AEPO update step vs a plain GRPO update step: same model, same scored rollout batch.

Rollouts (generation) are identical for both algorithms and are left out: each step starts from the same
fixed batch of B = prompts x G sampled sequences with their accuracy rewards.

- baseline, plain GRPO: one policy forward with gradient, one reference forward (LoRA disabled), the
  group advantages, clipped surrogate + constant-coefficient k3 KL, token-mean, backward.
- ours, AEPO (``LitARES.rollout_loss``): the same, plus exact full-vocabulary entropy, window entropy,
  per-response percentile and running threshold, HWE detection, difficulty buckets, per-bucket targets and
  alpha, the hierarchical entropy reward, accuracy filtering, per-bucket KL coefficients and the KL
  controller step, and all the logging.

Model: a random Llama with SmolLM2-135M's shape (30 layers, d 576, vocab 49152) and LoRA r 16; ``--quick``
uses a small one. Prints the median step times and ends with
``RATIO ares_aepo_step_overhead <AEPO time / GRPO time>`` (the goal: a few percent above 1).

    python bench/ares.py            # SmolLM2-135M shape, B = 16 x 128 tokens
    python bench/ares.py --quick    # 4 layers, d 128, vocab 8192, B = 8 x 32 tokens
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlkit.methods.ares import LitARES
    from vlkit.models.language import LanguageModelBundle, LanguageModelSettings, apply_lora, char_tokenizer

    if args.quick:
        cfg = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=8192)
    else:  # SmolLM2-135M's shape
        cfg = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                   num_key_value_heads=3, vocab_size=49152)
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**cfg, max_position_embeddings=2048, tie_word_embeddings=True))
    module = LitARES(LanguageModelSettings(model_name="tiny-random-lm", lora_r=16), algorithm="aepo",
                     group_size=args.group_size, max_new_tokens=args.tokens)
    # swap the tiny preset for the benchmark model (the tokenizer is unused: rollouts are synthetic)
    module.model = apply_lora(base, 16, 32)
    module.bundle = LanguageModelBundle(module.model, char_tokenizer(), None)
    device = torch.device(args.device)
    module.to(device)
    for name, p in module.model.named_parameters():  # adapters away from 0 so that the KL term is non-zero
        if "lora_B" in name:
            with torch.no_grad():
                p.normal_(0, 0.01)
    return module, cfg["vocab_size"], device


def synthetic_rollout(args, vocab: int, device):
    g = torch.Generator().manual_seed(1)
    B, P, T = args.prompts * args.group_size, args.prompt_tokens, args.tokens
    ids = torch.randint(10, vocab, (B, P + T), generator=g)
    attn = torch.ones(B, P + T, dtype=torch.long)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    comp_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T) right-padded completions
    attn[:, P:] = comp_mask
    correct = (torch.rand(B, generator=g) < 0.5).float()  # mixed groups: nothing filtered by chance alone
    roll = {"input_ids": ids.to(device), "attention_mask": attn.to(device), "completion_ids": ids[:, P:].to(device),
            "completion_mask": comp_mask.to(device), "prompt_length": P, "extra": {}}
    return roll, correct.to(device)


def grpo_step(module, roll, correct, kl_coef: float = 1e-2):
    """A plain GRPO update: what a user would write over the same shared policy functions."""
    from vlkit.functional.policy import aggregate_tokens, clipped_surrogate, group_advantages, kl_penalty
    from vlkit.functional.policy import sampled_token_logprobs as _sequence_logprobs

    P, mask = roll["prompt_length"], roll["completion_mask"]
    logits = module._forward_logits(roll["input_ids"], roll["attention_mask"], {})[:, P - 1 : -1]  # (B, T, V)
    logprobs = _sequence_logprobs(logits, roll["completion_ids"])  # (B, T)
    del logits
    with torch.no_grad(), module.model.disable_adapter():
        ref = _sequence_logprobs(module._forward_logits(roll["input_ids"], roll["attention_mask"], {})[:, P - 1 : -1],
                                 roll["completion_ids"])
    adv = group_advantages(correct, module.hparams.group_size)  # (B,)
    per_token = clipped_surrogate(logprobs, logprobs.detach(), adv, 0.2) + kl_coef * kl_penalty(logprobs, ref)
    return aggregate_tokens(per_token, mask)


def timed(fn, device, repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = fn()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.group_size, args.tokens, args.repeats = 2, 4, 32, 5
    import warnings

    warnings.filterwarnings("ignore")
    module, vocab, device = build(args)
    roll, correct = synthetic_rollout(args, vocab, device)
    module.train()
    ours, base = [], []
    for _ in range(2):  # interleave the two so that machine load drifts hit both
        base += timed(lambda: grpo_step(module, roll, correct), device, args.repeats)
        ours += timed(lambda: module.rollout_loss(roll, correct), device, args.repeats)
    module.zero_grad(set_to_none=True)
    t_base, t_ours = statistics.median(base), statistics.median(ours)
    B = args.prompts * args.group_size
    print(f"device {device} | B {B} x {args.tokens} tokens | vocab {vocab}")
    print(f"plain GRPO step  median {t_base * 1e3:8.1f} ms  (n={len(base)})")
    print(f"AEPO step        median {t_ours * 1e3:8.1f} ms  (n={len(ours)})")
    print(f"RATIO ares_aepo_step_overhead {t_ours / t_base:.4f}")


if __name__ == "__main__":
    main()
