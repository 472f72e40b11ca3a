"""The notebook-facing ProAPO API: a ready-to-run search for a backbone, dataset, shots and seed.

    from prompts_evo.fewshot import prepare_search
    run = prepare_search("offline-lite0-minilm", "fashion-mnist", shots=1, seed=0, top_k=4)
    result = run.search.run()                     # fitness on the labelled shots only
    run.accuracy(run.search.class_embeddings())   # test accuracy of the found prompts
    run.write_prompt_file("prompts.json")         # CuPL JSON for zero-shot / TFUP (class_prompts_file)

It mirrors ``vlkit.fewshot``: the CLI configs, the demo and this API run the same ``LitProAPO`` and
``ProAPODataModule`` underneath (here without a Trainer, so a notebook can step the search itself). Nothing
in the package imports this module; demos, notebooks and scripts do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from prompts_evo.data.features import ProAPODataModule, TaskFeatures
from prompts_evo.methods.proapo import LitProAPO
from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache
from prompts_evo.models.search import BASELINE_TEMPLATE, ProAPOSearch, SearchSettings
from vlkit.errors import ConfigError, check_choice

__all__ = ["ProAPORun", "prepare_search"]


@dataclass
class ProAPORun:
    """A prepared search and what it was built from (``module``: the ``LitProAPO``, ``datamodule``: its data)."""

    module: LitProAPO
    datamodule: ProAPODataModule

    @property
    def search(self) -> ProAPOSearch:
        """The search engine (step it, or ``run()`` it to the end)."""
        return self.module.engine

    @property
    def task(self) -> TaskFeatures:
        """Shot, held-out and test features and labels."""
        return self.datamodule.task

    @property
    def backbone(self) -> torch.nn.Module:
        """The dual encoder."""
        return self.module.backbone

    @property
    def text_cache(self) -> PromptEmbeddingCache:
        """The prompt-embedding cache (``save()`` persists it)."""
        return self.module.text_cache

    @property
    def settings(self) -> dict:
        """What defined the search (data, library, descriptions, search settings)."""
        return self.module.run_settings()

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
        correct = LitProAPO._correct(features.to(class_embeddings.device), class_embeddings, labels.to(class_embeddings.device))
        return 100.0 * correct.mean().item()

    def single_template_embeddings(self, template: str = BASELINE_TEMPLATE) -> Tensor:
        """(C, D) class embeddings of one template (the "a photo of a {}." baseline by default)."""
        return self.module.single_template_embeddings(template).to(self.search.features.device)

    def embeddings_of(self, class_prompts: dict[str, list[str]]) -> Tensor:
        """(C, D) class embeddings of a class -> prompts dict (normalised mean of normalised embeddings),
        computed through the text cache: what ``build_text_classifier`` gives for the same prompts."""
        classes = self.task.classnames
        missing = [c for c in classes if not class_prompts.get(c)]
        extra = [c for c in class_prompts if c not in classes]
        if missing or extra:
            raise ConfigError(f"class_prompts must give non-empty prompts for exactly the {len(classes)} classes, got "
                              f"{len(missing)} missing {missing[:5]} and {len(extra)} unknown {extra[:5]}", argument="class_prompts")
        rows = [F.normalize(self.text_cache.embed(class_prompts[c]), dim=-1).mean(0) for c in classes]
        return F.normalize(torch.stack(rows), dim=-1).to(self.search.features.device)  # (C, D)

    def write_prompt_file(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Best prompts as CuPL JSON + ``<path>.provenance.json`` (backbone, shots, seed, settings, history)."""
        return self.module.write_prompt_file(path, extra)


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
    cache_dir: str | None = None,
    device=None,
    batch_size: int = 64,
    settings: SearchSettings | dict | None = None,
    **overrides,
) -> ProAPORun:
    """Backbone + cached shot/held-out/test features + description pool -> a :class:`ProAPORun`.

    Args:
        backbone: a ``create_backbone`` name or an already built dual encoder.
        dataset, shots, heldout_size, test_size, batch_size: the data (see ``ProAPODataModule``).
        seed: seeds the shots and every choice of the search.
        template_library_name, type_words, description_source, description_file, description_samples,
            description_seed: the prompts searched over (see ``LitProAPO``).
        cache_dir: cache root of features and text embeddings (None: the kit's cache, ``$VLKIT_CACHE``).
        device: where the backbone and the search run (None: CUDA when available).
        settings: the search settings (a :class:`SearchSettings` or a dict; None: the authors' defaults).
        **overrides: individual search settings by name, applied over ``settings`` (``top_k=2``).

    Every argument is checked before any weights or images are loaded.
    """
    search = SearchSettings.build(settings, **overrides)
    name = backbone if isinstance(backbone, str) else str(getattr(backbone, "fingerprint", type(backbone).__name__))
    datamodule = ProAPODataModule(dataset=dataset, shots=shots, seed=seed, heldout_size=heldout_size, test_size=test_size,
                                  batch_size=batch_size, cache_dir=cache_dir)
    module = LitProAPO(
        backbone=name, template_library=template_library_name, type_words=type_words,
        description_source=description_source, description_file=description_file,
        description_samples=description_samples, description_seed=description_seed, search=search,
    )
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.prepare(datamodule, device=device, backbone=None if isinstance(backbone, str) else backbone)
    shots_batch = datamodule.shot_batch()  # the training batch LitProAPO's fit would see
    module.build_engine(shots_batch["features"].to(device), shots_batch["label"].to(device))
    return ProAPORun(module, datamodule)
