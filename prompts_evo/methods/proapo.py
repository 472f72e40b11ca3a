"""``LitProAPO``: ProAPO's search driven by Lightning, one generation per epoch.

Paper: Qu et al., "ProAPO: Progressively Automatic Prompt Optimization for Visual Classification",
CVPR 2025 (arXiv 2502.19844). The search itself is :class:`prompts_evo.models.search.ProAPOSearch`
(settings: :class:`~prompts_evo.models.search.SearchSettings`, the ``search`` group of the YAML); the image
features come from :class:`prompts_evo.data.features.ProAPODataModule`. This module orchestrates: it builds
the backbone, connects the DataModule, builds the template library and the description pool, runs one
generation per training epoch on the DataModule's shot batch (no optimiser, no gradients), logs
``train/best_fitness``, ``train/mean_fitness``, ``train/best_shot_acc`` and the held-out accuracy ``val/acc``
(training images never used for selection), checkpoints the population so a stopped search resumes, and at
the end of ``fit`` writes the best prompts as a CuPL JSON file with a provenance sidecar. ``vlkit test``
reports ``test/acc`` of the found prompts beside ``test/acc_single_template``. Accuracies are in percent.

The fitness curve is drawn by the generic ``vlkit.callbacks.MetricHistory`` callback (listed in the configs)
from the logged ``train/*`` metrics, not here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from prompts_evo.data.prompts import (
    TEMPLATE_LIBRARIES,
    JsonDescriptions,
    TemplateDescriptions,
    expand_type_words,
    template_library,
    write_class_prompts,
)
from prompts_evo.models.descriptions import DescriptionSource, LLMDescriptions
from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache
from prompts_evo.models.search import BASELINE_TEMPLATE, ProAPOSearch, SearchSettings
from vlkit.cache import cache_root
from vlkit.checkpoints import load_checkpoint, record_class, unknown_hyperparameters
from vlkit.errors import ConfigError, check_choice, check_file, check_int

__all__ = ["LitProAPO", "DESCRIPTION_SOURCES", "check_description_settings", "make_description_source"]

DESCRIPTION_SOURCES = ("llm", "json", "templates", "none")


def check_description_settings(
    description_source: str = "llm",
    description_file: str | None = None,
    description_samples: int = 3,
    description_seed: int = 0,
) -> None:
    """Check where stage-2 descriptions come from, without loading anything (the file must exist for "json")."""
    check_choice("description_source", description_source, DESCRIPTION_SOURCES)
    if description_source == "json":
        if not description_file:
            raise ConfigError("description_source='json' needs description_file (a CuPL/DCLIP JSON path), got none",
                              argument="description_file")
        check_file("description_file", description_file)
    check_int("description_samples", description_samples, low=1)
    check_int("description_seed", description_seed)


def make_description_source(
    kind: str,
    path: str | None = None,
    templates: list[str] | None = None,
    seed: int = 0,
    samples_per_question: int = 3,
    max_new_tokens: int = 32,
) -> DescriptionSource | None:
    """Build a source by name: "json" (needs ``path``), "llm" (``path``: a model directory or None),
    "templates" (needs ``templates``), "none" (returns None: the search stops after stage 1)."""
    check_choice("description source", kind, DESCRIPTION_SOURCES)
    if kind == "json":
        if not path:
            raise ConfigError("description source 'json' needs description_file (a CuPL/DCLIP JSON path), got none",
                              argument="description_file")
        return JsonDescriptions(path)
    if kind == "llm":
        return LLMDescriptions(model_dir=path, seed=seed, samples_per_question=samples_per_question, max_new_tokens=max_new_tokens)
    if kind == "templates":
        if not templates:
            raise ConfigError(f"description source 'templates' needs a non-empty list of templates, got {templates!r}",
                              argument="templates")
        return TemplateDescriptions(templates)
    return None


class LitProAPO(L.LightningModule):
    """ProAPO prompt search as a LightningModule (one generation per epoch; nothing is trained).

    Pair it with ``prompts_evo.data.features.ProAPODataModule``: dataset, shots, held-out and test sizes,
    the run's cache root (image features and prompt text embeddings) and the run's ``seed``, which seeds
    the shots, the held-out slice and every choice of the search (one seed per run, as before the split).

    Args:
        backbone: ``vlkit.create_backbone`` name ("offline-lite0-minilm", "tiny-random", an open_clip tag...).
        template_library: "imagenet80" (CLIP's templates) or "simple".
        type_words: dataset-type words for template variants; None uses the dataset's default.
        description_source: "llm" (local causal LM, cached), "json" (``description_file``), "templates", "none".
        description_file: CuPL/DCLIP JSON for "json"; a model directory for "llm" (None: SmolLM2).
        description_samples: LLM completions per question.
        description_seed: sampling seed of the LLM query (the description library is built once and
            shared by all search seeds, like the authors' one-time query).
        search: the search settings (top_k, generations, operators, fitness weights; see
            :class:`~prompts_evo.models.search.SearchSettings` for each and the authors' defaults).
        prompt_file: where the best prompts go (CuPL JSON); None writes ``<log_dir>/proapo_prompts.json``.
    """

    def __init__(
        self,
        backbone: str = "offline-lite0-minilm",
        template_library: str = "imagenet80",
        type_words: list[str] | None = None,
        description_source: str = "llm",
        description_file: str | None = None,
        description_samples: int = 3,
        description_seed: int = 0,
        search: SearchSettings = SearchSettings(),
        prompt_file: str | None = None,
    ) -> None:
        super().__init__()
        check_choice("template_library", template_library, TEMPLATE_LIBRARIES)
        if not isinstance(backbone, str) or not backbone.strip():
            raise ConfigError(f"backbone must be a vlkit.create_backbone name, got {backbone!r}", argument="backbone")
        if type_words is not None and (isinstance(type_words, str) or not isinstance(type_words, (list, tuple))):
            raise ConfigError(f"type_words must be a list of words or None, got {type_words!r}", argument="type_words")
        check_description_settings(description_source, description_file, description_samples, description_seed)
        if prompt_file is not None and (not isinstance(prompt_file, str) or not prompt_file.strip()):
            raise ConfigError(f"prompt_file must be a file path or None, got {prompt_file!r}", argument="prompt_file")
        self.settings = SearchSettings.build(search)  # also takes the dict a checkpoint's hyperparameters hold
        search = dataclasses.asdict(self.settings)  # noqa: F841  (saved as a plain dict: loads with weights_only=True)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.engine: ProAPOSearch | None = None  # built from the first shot batch (or the DataModule's shots)
        self._pending_state: dict | None = None
        self.val_acc = MeanMetric()
        self.test_acc = MeanMetric()
        self.test_acc_single_template = MeanMetric()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``, after a safe look at the file: a checkpoint of the flat,
        pre-DataModule LitProAPO (data and search settings among its arguments) fails with one ConfigError."""
        unknown = unknown_hyperparameters(load_checkpoint(checkpoint_path, cls, argument="checkpoint_path"), cls)
        if unknown:
            raise ConfigError(
                f"checkpoint_path must be a checkpoint of the current LitProAPO, got one written by an older version: its "
                f"hyperparameters {unknown[:6]} are no longer arguments (data settings belong to ProAPODataModule, search "
                "settings to the `search` group); re-run the search", argument="checkpoint_path",
            )
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ------------------------------------------------------------------ preparation
    def prepare(self, datamodule, device=None, backbone=None) -> LitProAPO:
        """Backbone, connected DataModule, template library, descriptions and text cache (idempotent).

        ``setup`` calls it with the trainer's DataModule and device; a notebook calls it directly
        (``prompts_evo.fewshot.prepare_search``). ``backbone``: an already built dual encoder instead of
        ``create_backbone(self.hparams.backbone)``. Cheap checks (the library holds ``top_k`` templates)
        run before any weights or images are loaded."""
        if getattr(self, "_prepared", False):
            return self
        hp = self.hparams
        if datamodule is None or not hasattr(datamodule, "connect") or not hasattr(datamodule, "shot_batch"):
            raise ConfigError(f"LitProAPO needs a ProAPODataModule (data.class_path: prompts_evo.data.features."
                              f"ProAPODataModule), got {type(datamodule).__name__}", argument="datamodule")
        words = datamodule.type_words if hp.type_words is None else list(hp.type_words)
        base = template_library(hp.template_library)
        self.library = expand_type_words(base, words)
        self.type_words = words
        self.seed = int(datamodule.hparams.seed)
        if len(self.library) < self.settings.top_k:
            raise ConfigError(f"top_k must be <= the {len(self.library)} templates of the library, got {self.settings.top_k}",
                              argument="top_k")
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if backbone is None:
            from vlkit.models.backbones import create_backbone

            backbone = create_backbone(hp.backbone)
        # kept outside the module tree: the frozen towers must not bloat every checkpoint
        self.__dict__["backbone"] = backbone.to(device)
        self.datamodule = datamodule.connect(self.backbone, device=device)
        self.classnames = list(datamodule.classnames)
        source = make_description_source(hp.description_source, hp.description_file, base[:8], seed=hp.description_seed,
                                         samples_per_question=hp.description_samples)
        self.descriptions = source.describe(self.classnames) if source is not None else None

        @torch.no_grad()
        def encode(texts: list[str]) -> Tensor:
            return self.backbone.encode_text(texts)

        cache_dir = datamodule.hparams.cache_dir
        cache_dir = cache_dir if cache_dir is not None else cache_root()  # the run's one cache root
        self.text_cache = PromptEmbeddingCache(encode, self.backbone.fingerprint, cache_dir=cache_dir)
        self._prepared = True
        return self

    def build_engine(self, features: Tensor, labels: Tensor) -> ProAPOSearch:
        """The search over the labelled shots ``features`` (N, D) / ``labels`` (N,) (a resumed state applied)."""
        if self.engine is None:
            self.engine = ProAPOSearch(
                self.classnames, features, labels, self.text_cache, self.library, self.descriptions,
                logit_scale=self.backbone.logit_scale, seed=self.seed, settings=self.settings,
            )
            if self._pending_state is not None:
                self.engine.load_state_dict(self._pending_state)
                self._pending_state = None
        return self.engine

    def _engine_from_datamodule(self) -> ProAPOSearch:
        shots = self.datamodule.shot_batch()
        return self.build_engine(shots["features"].to(self.device), shots["label"].to(self.device))

    def setup(self, stage: str) -> None:
        """Prepare on the trainer's DataModule and device (before the loaders are asked for)."""
        self.prepare(self.trainer.datamodule, device=self.trainer.strategy.root_device)

    def configure_optimizers(self):
        """None: a discrete search has nothing to optimise by gradient."""
        return None

    # ------------------------------------------------------------------ class embeddings and scores
    def single_template_embeddings(self, template: str = BASELINE_TEMPLATE) -> Tensor:
        """(C, D) class embeddings of one template (the "a photo of a {}." baseline by default)."""
        emb = self.text_cache.embed([template.format(c) for c in self.classnames])
        return F.normalize(emb, dim=-1)

    def run_settings(self) -> dict:
        """Everything that defined this search (data, library, descriptions, search settings), JSON-able."""
        data = self.datamodule.hparams
        return dict(
            dataset=data.dataset, shots=data.shots, seed=data.seed,
            template_library=self.hparams.template_library, type_words=self.type_words,
            description_source=self.hparams.description_source, description_file=self.hparams.description_file,
            description_seed=self.hparams.description_seed, **dataclasses.asdict(self.settings),
        )

    def write_prompt_file(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Best prompts as CuPL JSON + ``<path>.provenance.json`` (backbone, shots, seed, settings, history)."""
        engine, task = self.engine, self.datamodule.task
        provenance = {
            "method": "ProAPO (prompts_evo)",
            "backbone_fingerprint": self.backbone.fingerprint,
            "shot_indices": task.shot_indices.tolist(),
            "selection_data": "labelled shots only (no test or held-out labels)",
            "templates": engine.best_templates(),
            "best_fitness": float(engine.elite_fitness[0]),
            "stage": engine.stage,
            "settings": self.run_settings(),
            "history": engine.history,
            **(extra or {}),
        }
        provenance = json.loads(json.dumps(provenance, default=str))
        return write_class_prompts(path, engine.best_class_prompts(), provenance)

    @staticmethod
    def _correct(features: Tensor, class_embeddings: Tensor, labels: Tensor) -> Tensor:
        """(B,) 1.0 where the nearest class embedding of a (B, D) feature is its label."""
        preds = (features @ class_embeddings.T).argmax(-1)  # (B,)
        return (preds == labels).float()

    # ------------------------------------------------------------------ loops
    def on_train_epoch_start(self) -> None:
        """Stop once the search has run every generation."""
        if self.engine is not None and self.engine.done:
            self.trainer.should_stop = True

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One generation, scored on the batch of labelled shots (``features`` (N, D), ``label`` (N,))."""
        engine = self.build_engine(batch["features"], batch["label"])
        if engine.done:
            return None
        record = engine.step()
        self.log_dict(
            {
                "train/best_fitness": record["best_fitness"],
                "train/mean_fitness": record["mean_fitness"],
                "train/best_shot_acc": record["best_top1"],
                "train/fitness_evaluations": float(record["fitness_evaluations"]),
                "train/stage": 1.0 if record["stage"] == "templates" else 2.0,
            },
            on_step=False,
            on_epoch=True,
            batch_size=1,
        )
        self.text_cache.save()
        return None

    def on_validation_epoch_start(self) -> None:
        """The current best's (C, D) class embeddings, once per validation (None before the first generation)."""
        ready = self.engine is not None and self.engine.elites is not None
        self._val_embeddings = self.engine.class_embeddings().to(self.device) if ready else None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate the held-out accuracy of the current best prompts."""
        if self._val_embeddings is not None:
            self.val_acc.update(self._correct(batch["features"], self._val_embeddings, batch["label"]))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/acc`` (percent)."""
        if self._val_embeddings is not None and self.val_acc.update_count:
            self.log("val/acc", 100.0 * self.val_acc.compute())
        self.val_acc.reset()

    def on_test_epoch_start(self) -> None:
        """The found prompts' and the single template's class embeddings (tested without a search: the
        first generation's best)."""
        engine = self.engine if self.engine is not None else self._engine_from_datamodule()
        if engine.elites is None:
            engine.step()
        self._test_embeddings = engine.class_embeddings().to(self.device)  # (C, D)
        self._baseline_embeddings = self.single_template_embeddings().to(self.device)  # (C, D)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate the test accuracy of the found prompts and of the single template."""
        self.test_acc.update(self._correct(batch["features"], self._test_embeddings, batch["label"]))
        self.test_acc_single_template.update(self._correct(batch["features"], self._baseline_embeddings, batch["label"]))

    def on_test_epoch_end(self) -> None:
        """Log ``test/acc`` and ``test/acc_single_template`` (percent)."""
        self.log_dict({"test/acc": 100.0 * self.test_acc.compute(),
                       "test/acc_single_template": 100.0 * self.test_acc_single_template.compute()})
        self.test_acc.reset()
        self.test_acc_single_template.reset()

    # ------------------------------------------------------------------ outputs and resuming
    def on_fit_end(self) -> None:
        """Write the best prompts (and the text cache)."""
        if self.engine is None or self.engine.elites is None:
            return
        log_dir = self.trainer.log_dir if self.trainer is not None else None
        path = Path(self.hparams.prompt_file) if self.hparams.prompt_file else Path(log_dir or ".") / "proapo_prompts.json"
        self.write_prompt_file(path, {"hyperparameters": dict(self.hparams)})
        self.text_cache.save()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the class and the search state (population, seen candidates, RNG, history)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it
        if self.engine is not None:
            state = self.engine.state_dict()
            state["seen"] = [key.hex() for key in state["seen"]]  # plain strings in the checkpoint
            checkpoint["proapo_search"] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the search state (applied when the search is built, if it is not yet)."""
        state = checkpoint.get("proapo_search")
        if state is None:
            return
        state = dict(state)
        state["seen"] = [bytes.fromhex(key) for key in state["seen"]]
        if self.engine is not None:
            self.engine.load_state_dict(state)
        else:
            self._pending_state = state
