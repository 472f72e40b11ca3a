"""ProAPO fitness evaluations per second: cached + batched (ours) vs re-encoding every candidate.

The straightforward loop (the authors' code path) builds each candidate's prompts, encodes them with the
text tower and scores the candidate on its own, every generation. Ours encodes each distinct prompt
string once (``PromptEmbeddingCache``) and scores a whole generation in one batched product. Both score
exactly the same candidates (the ones our search generated), at equal population; the baseline's rate
is measured on the first ``--baseline-candidates`` of them.

    python bench/proapo.py [--quick] [--backbone offline-lite0-minilm]

Ends with ``RATIO proapo_fitness_evals_per_s <ours / baseline>`` (= baseline time / our time per evaluation;
ours pays the one-off encoding of the whole template library) and
``RATIO proapo_fitness_evals_per_s_warm_cache`` (a second seed, cache already filled).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from prompts_evo.data.prompts import expand_type_words, template_library  # noqa: E402
from prompts_evo.functional.fitness import fitness_scores  # noqa: E402
from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache  # noqa: E402
from prompts_evo.models.search import ProAPOSearch  # noqa: E402


class RecordingSearch(ProAPOSearch):
    """Keeps every stage-1 population it scores, as lists of template strings per candidate."""

    recorded: list[list[str]]

    def _score(self, masks):
        if self.kept_templates is not None and masks.shape[1] == 1:
            for mask in masks:
                self.recorded.append([self.library[self.kept_templates[i]] for i in torch.nonzero(mask[0]).flatten().tolist()])
        return super()._score(masks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 generations, small baseline sample")
    parser.add_argument("--backbone", default="offline-lite0-minilm")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--baseline-candidates", type=int, default=60)
    args = parser.parse_args(argv)
    generations = 2 if args.quick else args.generations
    baseline_n = 15 if args.quick else args.baseline_candidates
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES
    from vlkit.models.backbones import create_backbone

    try:
        backbone = create_backbone(args.backbone)
    except Exception as err:  # offline weights missing: fall back to the random tiny preset
        print(f"backbone {args.backbone!r} unavailable ({err}); using tiny-random", file=sys.stderr)
        backbone = create_backbone("tiny-random")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = backbone.to(device)
    classes = list(FASHION_MNIST_CLASSNAMES)
    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(len(classes), backbone.embed_dim, generator=g), dim=-1).to(device)  # (C, D) 1 shot/class
    labels = torch.arange(len(classes), device=device)
    library = expand_type_words(template_library("imagenet80"), ["clothing", "fashion product"])

    @torch.no_grad()
    def encode(texts):
        return backbone.encode_text(list(texts))

    # ours: fresh cache (text encoding counted), batched population fitness
    cache = PromptEmbeddingCache(encode, backbone.fingerprint)
    search = RecordingSearch(classes, features, labels, cache, library, None, logit_scale=backbone.logit_scale,
                             seed=0, template_generations=generations, prune_templates=False, max_templates=0)
    search.recorded = []
    start = time.perf_counter()
    search.run()
    ours_time = time.perf_counter() - start
    ours_evals = search.num_fitness_evaluations
    ours_rate = ours_evals / ours_time
    # a second seed on the now-warm cache (what later seeds, the demo and resumed runs see)
    warm = RecordingSearch(classes, features, labels, cache, library, None, logit_scale=backbone.logit_scale,
                           seed=1, template_generations=generations, prune_templates=False, max_templates=0)
    warm.recorded = []
    start = time.perf_counter()
    warm.run()
    warm_rate = warm.num_fitness_evaluations / (time.perf_counter() - start)

    # baseline: per candidate, encode its prompts and score it alone (excluding the initial library scan)
    candidates = search.recorded[-baseline_n:]
    start = time.perf_counter()
    with torch.no_grad():
        for templates in candidates:
            prompts = [t.format(c) for c in classes for t in templates]
            emb = F.normalize(encode(prompts).float(), dim=-1).view(len(classes), len(templates), -1)  # (C, T, D)
            class_emb = F.normalize(emb.mean(1), dim=-1).unsqueeze(0)  # (1, C, D)
            fitness_scores(features, labels, class_emb, backbone.logit_scale, 0.5, 0.05, 0.0, 10.0)
    base_time = time.perf_counter() - start
    base_rate = len(candidates) / base_time
    print(f"device={device} backbone={backbone.fingerprint} generations={generations} library={len(library)}")
    print(f"ours: {ours_evals} fitness evaluations in {ours_time:.2f} s ({ours_rate:.1f}/s; {cache.num_encoded} strings encoded once)")
    print(f"baseline (re-encode per candidate): {len(candidates)} evaluations in {base_time:.2f} s ({base_rate:.2f}/s)")
    print(f"ours, warm text cache (second seed): {warm.num_fitness_evaluations} evaluations ({warm_rate:.1f}/s)")
    print(f"RATIO proapo_fitness_evals_per_s {ours_rate / base_rate:.2f}")
    print(f"RATIO proapo_fitness_evals_per_s_warm_cache {warm_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
