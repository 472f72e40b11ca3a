"""Device check helper (not collected by pytest): batched ProAPO fitness at ImageNet scale on the GPU.

    python tests/prompts_evo/gpu_timing.py [num_classes]
"""

import time

import torch
import torch.nn.functional as F

from prompts_evo.functional.fitness import class_embeddings_from_masks, fitness_scores


def main(device_name: str, C: int = 1000, reps: int = 10) -> None:
    device = torch.device(device_name)
    g = torch.Generator().manual_seed(0)
    M, D, P = 64, 512, 120  # templates, dim, population
    N = C  # one shot per class
    pool = F.normalize(torch.randn(C, M, D, generator=g), dim=-1).to(device)
    feats = F.normalize(torch.randn(N, D, generator=g), dim=-1).to(device)
    labels = torch.arange(N, device=device) % C
    masks = (torch.rand(P, 1, M, generator=g) < 0.1).to(device)
    masks[:, 0, 0] = True
    for _ in range(2):
        emb = class_embeddings_from_masks(pool, masks)
        fitness_scores(feats, labels, emb, 100.0, 0.5, 0.05, 0.0, 10.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        emb = class_embeddings_from_masks(pool, masks)
        out = fitness_scores(feats, labels, emb, 100.0, 0.5, 0.05, 0.0, 10.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per = (time.perf_counter() - start) / reps
    print(f"device={device} population={P} C={C} M={M} D={D} N={N}: {per * 1e3:.2f} ms per generation, "
          f"{P / per:.0f} fitness evaluations/s, finite={bool(torch.isfinite(out.fitness).all())}")


if __name__ == "__main__":
    import sys

    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    if torch.cuda.is_available():
        main("cuda", scale, 10)
    main("cpu", scale, 2)
