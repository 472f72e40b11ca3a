"""TFUP inference cost against the floor of its own matrix products, and against a per-sample loop.

- ``tfup_over_floor``: time of ``tfup_logits`` (MSM + cache) / time of the bare matmuls any cache
  model must do (zero-shot f W^T, affinity f K^T, kernel @ L). A ratio near 1 means the multi-level
  similarity adds little on top of Tip-Adapter-style inference.
- ``tfup_vs_loop``: the authors' style (one Python iteration per test sample computing its KL row,
  z-score and min-max) / ours, on the first ``--loop-n`` samples, with identical logits checked.

Default size: N=20,000 test features, C=345 classes (DomainNet), D=512, K=16 shots (M=5,520 entries).
Run: ``python bench/tfup.py`` (``--quick`` for a small size).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vlkit.functional.tfup import tfup_logits


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def floor(f, w, k, v, beta=1.0, chunk=4096):
    out = []
    for s in range(0, f.shape[0], chunk):
        fc = f[s : s + chunk]
        out.append(100 * fc @ w.T + 0.3 * torch.exp(-beta * (1 - fc @ k.T)) @ v)
    return torch.cat(out)


def loop_reference(f, w, k, v, alpha=0.3, beta=1.0, t=10.0):
    """The authors' structure: a Python loop over test samples (their get_sim_based_kl)."""
    q = torch.softmax(t * k @ w.T, -1)  # (M, C)
    rows = []
    for i in range(f.shape[0]):
        p = torch.softmax(t * f[i] @ w.T, -1)  # (C,)
        d = (p * (p.log() - q.log())).sum(-1)  # (M,)
        z = (d - d.mean()) / d.std()
        mm = (z - z.min()) / (z.max() - z.min())
        a = (f[i] @ k.T) * 2 * (1 - mm)
        rows.append(100 * f[i] @ w.T + alpha * torch.exp(-beta * (1 - a)) @ v)
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=345)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--loop-n", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.n, args.classes, args.loop_n, args.repeat = 2000, 65, 200, 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(args.n, args.dim, generator=g), dim=-1).to(device)
    w = F.normalize(torch.randn(args.classes, args.dim, generator=g), dim=-1).to(device)
    m = args.classes * args.shots
    k = F.normalize(torch.randn(m, args.dim, generator=g), dim=-1).to(device)
    v = F.one_hot(torch.arange(args.classes).repeat_interleave(args.shots), args.classes).float().to(device)

    t_ours = best_of(lambda: tfup_logits(f, w, k, v), args.repeat)
    t_floor = best_of(lambda: floor(f, w, k, v), args.repeat)
    sub = f[: args.loop_n]
    ours_sub = tfup_logits(sub, w, k, v)
    ref_sub = loop_reference(sub, w, k, v)
    max_diff = (ours_sub - ref_sub).abs().max().item()
    assert max_diff < 1e-3, f"vectorised TFUP differs from the loop reference by {max_diff}"
    t_loop = best_of(lambda: loop_reference(sub, w, k, v), 1)
    t_ours_sub = best_of(lambda: tfup_logits(sub, w, k, v), args.repeat)
    print(f"device={device} N={args.n} C={args.classes} D={args.dim} M={m}")
    print(f"tfup_logits {t_ours:.3f}s  matmul floor {t_floor:.3f}s  ({args.n / t_ours:.0f} samples/s)")
    print(f"loop reference on {args.loop_n}: {t_loop:.3f}s vs ours {t_ours_sub:.4f}s (max |diff| {max_diff:.2e})")
    print(f"RATIO tfup_over_floor {t_ours / t_floor:.2f}")
    print(f"RATIO tfup_vs_loop {t_loop / t_ours_sub:.1f}")


if __name__ == "__main__":
    main()
