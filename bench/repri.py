"""RePRI inference: B episodes optimised as one batched problem vs one episode at a time (the per-task loop).

Both paths call ``vlkit.functional.repri.repri_fit`` with the authors' defaults (tau 20, lr 0.025, 50
iterations, pi update at 10); the loop runs it on batches of one episode. Features are random unit
vectors of the given size with random foreground blobs as support masks. Prints episodes per second for
each, checks that the predicted query masks agree, and ends with ``RATIO repri_batched_vs_loop <loop time /
batched time>``.

    python bench/repri.py            # 200 1-shot episodes, D=256, 32x32 grid (about a minute on 2 CPU cores)
    python bench/repri.py --quick    # 40 episodes, D=64, 16x16
"""

from __future__ import annotations

import argparse
import time

import torch

from vlkit.functional.repri import repri_fit


def make_episodes(b: int, k: int, d: int, side: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.nn.functional.normalize(torch.randn(b, k, d, side, side, generator=g), dim=2)  # (B, K, D, h, w)
    q = torch.nn.functional.normalize(torch.randn(b, 1, d, side, side, generator=g), dim=2)  # (B, 1, D, h, w)
    # a shared "object" direction added inside a square blob of each support and of the query
    obj = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)[:, None, :, None, None]
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    masks = torch.zeros(b, k, side, side, dtype=torch.long)
    for i in range(b):
        for j in range(k + 1):
            cy, cx, r = torch.randint(side // 4, 3 * side // 4, (2,), generator=g).tolist() + [side // 5]
            blob = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
            if j < k:
                masks[i, j][blob] = 1
                s[i, j] += 1.5 * obj[i, 0] * blob
            else:
                q[i, 0] += 1.5 * obj[i, 0] * blob
    valid = torch.ones(b, 1, side, side, dtype=torch.bool)
    return s, masks, q, valid


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--dim", type=int, default=None, help="feature channels D (default 256, quick 64)")
    parser.add_argument("--grid", type=int, default=None, help="feature grid side (default 32, quick 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b = args.episodes or (40 if args.quick else 200)
    d, side = (64, 16) if args.quick else (256, 32)
    d, side = args.dim or d, args.grid or side
    s, m, q, valid = make_episodes(b, args.shots, d, side)

    repri_fit(s[:2], m[:2], q[:2], valid[:2], iterations=3)  # warm-up (allocator, kernels) outside the timings
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s, m, q, valid = (t.to(device) for t in (s, m, q, valid))

    start = time.perf_counter()
    batched = repri_fit(s, m, q, valid)
    _sync()
    t_batched = time.perf_counter() - start
    pred_batched = (batched.query_logits - batched.bias[:, None, None, None]) > 0

    start = time.perf_counter()
    preds = []
    for i in range(b):
        one = repri_fit(s[i : i + 1], m[i : i + 1], q[i : i + 1], valid[i : i + 1])
        preds.append((one.query_logits - one.bias[:, None, None, None]) > 0)
    _sync()
    t_loop = time.perf_counter() - start
    pred_loop = torch.cat(preds)

    differ = (pred_batched != pred_loop).sum().item()
    print(f"episodes={b} shots={args.shots} D={d} grid={side}x{side} device={device} threads={torch.get_num_threads()}")
    print(f"batched: {t_batched:.2f} s  ({b / t_batched:.1f} episodes/s)")
    print(f"loop:    {t_loop:.2f} s  ({b / t_loop:.1f} episodes/s)")
    print(f"predicted pixels that differ: {differ} of {pred_loop.numel()}")
    if differ > 1e-4 * pred_loop.numel():
        raise SystemExit("batched and per-episode predictions disagree")
    print(f"RATIO repri_batched_vs_loop {t_loop / t_batched:.2f}")


if __name__ == "__main__":
    main()
