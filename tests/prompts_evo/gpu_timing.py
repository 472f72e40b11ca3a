"""Device check helper (not collected by pytest): batched ProAPO fitness at ImageNet scale on the GPU.

    python tests/prompts_evo/gpu_timing.py
"""

import time

import torch
import torch.nn.functional as F

from prompts_evo.functional.fitness import class_embeddings_from_masks, fitness_scores


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    C, M, D, N, P = 1000, 64, 512, 1000, 120  # classes, templates, dim, shots (1/class), population
    pool = F.normalize(torch.randn(C, M, D, generator=g), dim=-1).to(device)
    feats = F.normalize(torch.randn(N, D, generator=g), dim=-1).to(device)
    labels = torch.arange(N, device=device) % C
    masks = (torch.rand(P, 1, M, generator=g) < 0.1).to(device)
    masks[:, 0, 0] = True
    for _ in range(3):
        emb = class_embeddings_from_masks(pool, masks)
        fitness_scores(feats, labels, emb, 100.0, 0.5, 0.05, 0.0, 10.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    reps = 10
    for _ in range(reps):
        emb = class_embeddings_from_masks(pool, masks)
        out = fitness_scores(feats, labels, emb, 100.0, 0.5, 0.05, 0.0, 10.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per = (time.perf_counter() - start) / reps
    print(f"device={device} population={P} C={C} M={M} D={D} N={N}: {per * 1e3:.2f} ms per generation, "
          f"{P / per:.0f} fitness evaluations/s, finite={bool(torch.isfinite(out.fitness).all())}")


if __name__ == "__main__":
    main()
