"""The notebook-facing ProAPO API: build a ready-to-run search for a backbone, dataset, shots and seed.

    from prompts_evo import prepare_search
    run = prepare_search("offline-lite0-minilm", "fashion-mnist", shots=1, seed=0)
    result = run.search.run()                 # fitness on the labelled shots only
    run.accuracy(run.search.class_embeddings())   # test accuracy of the found prompts
    run.write_prompt_file("prompts.json")     # CuPL JSON for zero-shot / TFUP (class_prompts_file)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from prompts_evo.descriptions import make_description_source, write_class_prompts
from prompts_evo.search import BASELINE_TEMPLATE, ProAPOSearch, check_search_settings, expand_templates
from prompts_evo.text_cache import PromptEmbeddingCache
from vlkit.errors import ConfigError, check_choice, check_file, check_int

__all__ = ["ProAPORun", "prepare_search", "check_task_settings", "template_library", "TEMPLATE_LIBRARIES", "DESCRIPTION_SOURCES"]

TEMPLATE_LIBRARIES = ("imagenet80", "simple")
DESCRIPTION_SOURCES = ("llm", "json", "templates", "none")


def template_library(name: str) -> list[str]:
    """Base templates: "imagenet80" (CLIP's 80 ImageNet templates) or "simple" (the baseline only)."""
    check_choice("template_library", name, TEMPLATE_LIBRARIES)
    if name == "imagenet80":
        from vlkit.data.prompts import imagenet_templates

        return imagenet_templates()
    return [BASELINE_TEMPLATE]


@dataclass
class ProAPORun:
    search: ProAPOSearch
    task: object  # prompts_evo.data.features.TaskFeatures
    backbone: torch.nn.Module
    text_cache: PromptEmbeddingCache
    settings: dict

    def accuracy(self, class_embeddings: Tensor, split: str = "test") -> float:
        """Top-1 accuracy (percent) of (C, D) class embeddings on the "test" or "heldout" features."""
        check_choice("split", split, ("test", "heldout"))
        C, D = len(self.task.classnames), self.task.shot_features.shape[1]
        if class_embeddings.dim() != 2 or tuple(class_embeddings.shape) != (C, D):
            raise ConfigError(f"class_embeddings must be (C={C}, D={D}), got {tuple(class_embeddings.shape)}",
                              argument="class_embeddings")
        features = self.task.test_features if split == "test" else self.task.heldout_features
        labels = self.task.test_labels if split == "test" else self.task.heldout_labels
        if features is None or features.shape[0] == 0:
            return float("nan")
        preds = (features.to(class_embeddings.device) @ class_embeddings.T).argmax(-1)  # (N,)
        return 100.0 * (preds.cpu() == labels.cpu()).float().mean().item()

    def single_template_embeddings(self, template: str = BASELINE_TEMPLATE) -> Tensor:
        """(C, D) class embeddings of one template (the "a photo of a {}." baseline by default)."""
        emb = self.text_cache.embed([template.format(c) for c in self.task.classnames])
        return F.normalize(emb, dim=-1).to(self.search.features.device)

    def embeddings_of(self, class_prompts: dict[str, list[str]]) -> Tensor:
        """(C, D) class embeddings of a class -> prompts dict (normalised mean of normalised embeddings),
        computed through the text cache: what ``build_text_classifier`` gives for the same prompts."""
        classes = self.task.classnames
        missing = [c for c in classes if not class_prompts.get(c)]
        extra = [c for c in class_prompts if c not in classes]
        if missing or extra:
            raise ConfigError(f"class_prompts must give non-empty prompts for exactly the {len(classes)} classes, got "
                              f"{len(missing)} missing {missing[:5]} and {len(extra)} unknown {extra[:5]}", argument="class_prompts")
        rows = [F.normalize(self.text_cache.embed(class_prompts[c]), dim=-1).mean(0) for c in self.task.classnames]
        return F.normalize(torch.stack(rows), dim=-1).to(self.search.features.device)  # (C, D)

    def write_prompt_file(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Best prompts as CuPL JSON + ``<path>.provenance.json`` (backbone, shots, seed, settings, history)."""
        provenance = {
            "method": "ProAPO (prompts_evo)",
            "backbone_fingerprint": self.backbone.fingerprint,
            "shot_indices": self.task.shot_indices.tolist(),
            "selection_data": "labelled shots only (no test or held-out labels)",
            "templates": self.search.best_templates(),
            "best_fitness": float(self.search.elite_fitness[0]),
            "stage": self.search.stage,
            "settings": self.settings,
            "history": self.search.history,
            **(extra or {}),
        }
        provenance = json.loads(json.dumps(provenance, default=str))
        return write_class_prompts(path, self.search.best_class_prompts(), provenance)


def check_task_settings(
    dataset: str = "fashion-mnist",
    shots: int = 1,
    seed: int = 0,
    type_words: list[str] | None = None,
    description_source: str = "llm",
    description_file: str | None = None,
    description_samples: int = 3,
    description_seed: int = 0,
    heldout_size: int = 200,
    test_size: int = 0,
    batch_size: int = 64,
) -> None:
    """Check the data and description settings of :func:`prepare_search` (and ``LitProAPO``) without
    loading anything: ranges, integer-ness, the dataset's form and the description file's existence."""
    from prompts_evo.data.features import check_task_dataset

    check_task_dataset(dataset)
    check_int("shots", shots, low=1)
    check_int("seed", seed)
    if type_words is not None and (isinstance(type_words, str) or not isinstance(type_words, (list, tuple))):
        raise ConfigError(f"type_words must be a list of words or None, got {type_words!r}", argument="type_words")
    check_choice("description_source", description_source, DESCRIPTION_SOURCES)
    if description_source == "json":
        if not description_file:
            raise ConfigError("description_source='json' needs description_file (a CuPL/DCLIP JSON path), got none",
                              argument="description_file")
        check_file("description_file", description_file)
    check_int("description_samples", description_samples, low=1)
    check_int("description_seed", description_seed)
    check_int("heldout_size", heldout_size, low=0)
    check_int("test_size", test_size, low=0)
    check_int("batch_size", batch_size, low=1)


def prepare_search(
    backbone="offline-lite0-minilm",
    dataset: str = "fashion-mnist",
    shots: int = 1,
    seed: int = 0,
    template_library_name: str = "imagenet80",
    type_words: list[str] | None = None,
    description_source: str = "llm",
    description_file: str | None = None,
    description_samples: int = 3,
    description_seed: int = 0,
    heldout_size: int = 200,
    test_size: int = 0,
    cache_dir: str = ".cache/vlkit",
    device=None,
    batch_size: int = 64,
    **search_settings,
) -> ProAPORun:
    """Backbone + cached shot/held-out/test features + description pool -> a :class:`ProAPORun`.

    ``backbone`` is a ``create_backbone`` name or an already built dual encoder; ``search_settings`` go
    to :class:`ProAPOSearch` (top_k, template_generations, fitness weights, ...)."""
    from prompts_evo.data.features import DATASET_TYPE_WORDS, load_task_features

    # cheap checks before any weights or images are loaded
    check_choice("template_library", template_library_name, TEMPLATE_LIBRARIES)
    check_task_settings(dataset, shots, seed, type_words, description_source, description_file, description_samples,
                        description_seed, heldout_size, test_size, batch_size)
    check_search_settings(search_settings)
    words = DATASET_TYPE_WORDS.get(dataset, []) if type_words is None else list(type_words)
    base = template_library(template_library_name)
    library = expand_templates(base, words)
    if len(library) < search_settings.get("top_k", 4):
        raise ConfigError(f"top_k must be <= the {len(library)} templates of the library, got {search_settings.get('top_k', 4)}",
                          argument="top_k")
    if isinstance(backbone, str):
        from vlkit.models.backbones import create_backbone

        backbone = create_backbone(backbone)
    device = torch.device(device) if device is not None else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    backbone = backbone.to(device)
    task = load_task_features(backbone, dataset, shots, seed, heldout_size, test_size, cache_dir=cache_dir, device=device, batch_size=batch_size)
    source = make_description_source(
        description_source, description_file, base[:8], seed=description_seed, samples_per_question=description_samples
    )
    descriptions = source.describe(task.classnames) if source is not None else None

    @torch.no_grad()
    def encode(texts: list[str]) -> Tensor:
        return backbone.encode_text(texts)

    text_cache = PromptEmbeddingCache(encode, backbone.fingerprint, cache_dir=Path(cache_dir) / "text")
    search = ProAPOSearch(
        task.classnames, task.shot_features.to(device), task.shot_labels.to(device), text_cache, library, descriptions,
        logit_scale=backbone.logit_scale, seed=seed, **search_settings,
    )
    settings = dict(
        dataset=dataset, shots=shots, seed=seed, template_library=template_library_name, type_words=words,
        description_source=description_source, description_file=description_file, description_seed=description_seed,
        **search_settings,
    )
    return ProAPORun(search, task, backbone, text_cache, settings)
