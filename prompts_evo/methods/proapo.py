"""``LitProAPO``: ProAPO's search driven by Lightning, one generation per epoch.

Paper: Qu et al., "ProAPO: Progressively Automatic Prompt Optimization for Visual Classification",
CVPR 2025 (arXiv 2502.19844). The search itself lives in :class:`prompts_evo.search.ProAPOSearch`; this
module orchestrates: it builds the backbone, fetches shot / held-out / test features from the shared
cache, runs one generation per training epoch (no optimiser, no gradients), logs ``train/best_fitness``,
``train/mean_fitness``, ``train/best_shot_acc`` and the held-out accuracy ``val/acc`` (a slice of the
training split never used for selection), checkpoints the population so a stopped search resumes, and
at the end writes the best prompts as a CuPL JSON file (with a provenance sidecar) and the fitness curve
as a PNG. ``vlkit test`` reports ``test/acc`` of the found prompts beside ``test/acc_single_template``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from prompts_evo.api import TEMPLATE_LIBRARIES, ProAPORun, check_task_settings, prepare_search
from prompts_evo.search import ProAPOSearch, check_search_settings
from vlkit.checkpoints import record_class
from vlkit.errors import ConfigError, check_choice

__all__ = ["LitProAPO", "plot_fitness_curve"]

def plot_fitness_curve(history: list[dict], path: str | os.PathLike) -> Path:
    """Best and mean fitness per generation (stage 2 shaded), saved atomically as a PNG."""
    if not history:
        raise ConfigError("history must hold at least one generation record (run step() first), got []", argument="history")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    gens = [h["generation"] for h in history]
    ax.plot(gens, [h["best_fitness"] for h in history], marker="o", label="best (elite)")
    ax.plot(gens, [h["mean_fitness"] for h in history], marker=".", alpha=0.6, label="mean of new candidates")
    stage2 = [h["generation"] for h in history if h["stage"] == "descriptions"]
    if stage2:
        ax.axvspan(min(stage2) - 0.5, max(stage2) + 0.5, color="tab:green", alpha=0.08, label="descriptions")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (labelled shots)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


class LitProAPO(L.LightningModule):
    """ProAPO prompt search as a LightningModule (one generation per epoch; nothing is trained).

    Args:
        backbone: ``vlkit.create_backbone`` name ("offline-lite0-minilm", "tiny-random", an open_clip tag...).
        dataset: ``"fashion-mnist"`` or ``"imagefolder:<dir>"`` (see ``prompts_evo.data.features.check_task_dataset``).
        shots: labelled images per class; the fitness sees only these.
        seed: seeds the shots, the held-out slice and every choice of the search.
        template_library: "imagenet80" (CLIP's templates) or "simple".
        type_words: dataset-type words for template variants; None uses the dataset's default.
        description_source: "llm" (local causal LM, cached), "json" (``description_file``), "templates", "none".
        description_file: CuPL/DCLIP JSON for "json"; a model directory for "llm" (None: SmolLM2).
        description_samples: LLM completions per question.
        description_seed: sampling seed of the LLM query (the description library is built once and
            shared by all search seeds, like the authors' one-time query).
        heldout_size: training images (disjoint from the shots) for the logged ``val/acc``.
        test_size: test images evaluated by ``vlkit test`` (0 = the whole test split).
        top_k, template_generations, edits_per_operator, template_mutations, description_mutations,
        crossovers, inner_generations, outer_loops, max_groups, max_templates: search settings (authors'
            defaults: 4, 8, 8, 8, 4, 16, 4, 1-3, 1-4, 0/32/64/256; see ``ProAPOSearch``).
        top1_weight, top5_weight, similarity_weight, entropy_weight: fitness weights (see
            ``prompts_evo.functional.fitness``; the similarity term is a penalty here).
        stage2_top1_weight, stage2_top5_weight: a1, a5 in the description stage (None: as in stage 1).
        prompt_file: where the best prompts go (CuPL JSON); None writes ``<log_dir>/proapo_prompts.json``.
        cache_dir: feature/text cache directory (shared with vlkit.fewshot: ``.cache/vlkit``).
        batch_size: image batch size when encoding features.
    """

    def __init__(
        self,
        backbone: str = "offline-lite0-minilm",
        dataset: str = "fashion-mnist",
        shots: int = 1,
        seed: int = 0,
        template_library: str = "imagenet80",
        type_words: list[str] | None = None,
        description_source: str = "llm",
        description_file: str | None = None,
        description_samples: int = 3,
        description_seed: int = 0,
        heldout_size: int = 200,
        test_size: int = 0,
        top_k: int = 4,
        template_generations: int = 8,
        edits_per_operator: int = 8,
        template_mutations: int = 8,
        description_mutations: int = 4,
        crossovers: int = 16,
        inner_generations: int = 4,
        outer_loops: int = 1,
        max_groups: int = 1,
        max_templates: int = 64,
        top1_weight: float = 0.5,
        top5_weight: float = 0.05,
        similarity_weight: float = 0.0,
        entropy_weight: float = 10.0,
        stage2_top1_weight: float | None = None,
        stage2_top5_weight: float | None = None,
        prompt_file: str | None = None,
        cache_dir: str = ".cache/vlkit",
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        check_choice("template_library", template_library, TEMPLATE_LIBRARIES)
        if not isinstance(backbone, str) or not backbone.strip():
            raise ConfigError(f"backbone must be a vlkit.create_backbone name, got {backbone!r}", argument="backbone")
        check_task_settings(dataset, shots, seed, type_words, description_source, description_file, description_samples,
                            description_seed, heldout_size, test_size, batch_size)
        check_search_settings(dict(
            top_k=top_k, template_generations=template_generations, edits_per_operator=edits_per_operator,
            template_mutations=template_mutations, description_mutations=description_mutations, crossovers=crossovers,
            inner_generations=inner_generations, outer_loops=outer_loops, max_groups=max_groups,
            max_templates=max_templates, top1_weight=top1_weight, top5_weight=top5_weight,
            similarity_weight=similarity_weight, entropy_weight=entropy_weight, stage2_top1_weight=stage2_top1_weight,
            stage2_top5_weight=stage2_top5_weight,
        ))
        if prompt_file is not None and (not isinstance(prompt_file, str) or not prompt_file.strip()):
            raise ConfigError(f"prompt_file must be a file path or None, got {prompt_file!r}", argument="prompt_file")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.search: ProAPOSearch | None = None
        self._pending_state: dict | None = None
        self.run: ProAPORun | None = None  # holds the backbone outside the module tree (no frozen weights in checkpoints)
        self.last_record: dict = {}

    # ------------------------------------------------------------------ preparation
    def _prepare(self) -> None:
        """Backbone, cached features and the search (idempotent; runs on the module's device)."""
        if self.search is not None:
            return
        hp = self.hparams
        self.run = prepare_search(
            hp.backbone, hp.dataset, hp.shots, hp.seed, hp.template_library, hp.type_words, hp.description_source,
            hp.description_file, hp.description_samples, hp.description_seed, hp.heldout_size, hp.test_size, cache_dir=hp.cache_dir,
            device=self.device, batch_size=hp.batch_size, top_k=hp.top_k,
            template_generations=hp.template_generations, edits_per_operator=hp.edits_per_operator,
            template_mutations=hp.template_mutations, description_mutations=hp.description_mutations,
            crossovers=hp.crossovers, inner_generations=hp.inner_generations, outer_loops=hp.outer_loops,
            max_groups=hp.max_groups, max_templates=hp.max_templates, top1_weight=hp.top1_weight,
            top5_weight=hp.top5_weight, similarity_weight=hp.similarity_weight, entropy_weight=hp.entropy_weight,
            stage2_top1_weight=hp.stage2_top1_weight, stage2_top5_weight=hp.stage2_top5_weight,
        )
        self.search = self.run.search
        if self._pending_state is not None:
            self.search.load_state_dict(self._pending_state)
            self._pending_state = None

    # ------------------------------------------------------------------ loops
    def _one_item_loader(self) -> DataLoader:
        return DataLoader([0], batch_size=1)

    def train_dataloader(self) -> DataLoader:
        return self._one_item_loader()

    def val_dataloader(self) -> DataLoader:
        return self._one_item_loader()

    def test_dataloader(self) -> DataLoader:
        return self._one_item_loader()

    def configure_optimizers(self):
        return None  # a discrete search: nothing to optimise by gradient

    def on_fit_start(self) -> None:
        self._prepare()

    def on_validation_start(self) -> None:
        self._prepare()

    def on_test_start(self) -> None:
        self._prepare()

    def on_train_epoch_start(self) -> None:
        if self.search is not None and self.search.done:
            self.trainer.should_stop = True

    def training_step(self, batch, batch_idx):
        if self.search.done:
            return None
        record = self.search.step()
        self.last_record = record
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
        self.run.text_cache.save()
        return None

    def validation_step(self, batch, batch_idx):
        if self.search.elites is None:  # sanity check before the first generation
            return None
        self.log("val/acc", self.run.accuracy(self.search.class_embeddings(), "heldout"), batch_size=1)
        return None

    def test_step(self, batch, batch_idx):
        if self.search.elites is None:  # tested without a search: evaluate the first generation
            self.search.step()
        best = self.run.accuracy(self.search.class_embeddings(), "test")
        base = self.run.accuracy(self.run.single_template_embeddings(), "test")
        self.log_dict({"test/acc": best, "test/acc_single_template": base}, batch_size=1)
        return None

    # ------------------------------------------------------------------ outputs and resuming
    def _output_dir(self) -> Path:
        if self.trainer is not None and self.trainer.log_dir:
            return Path(self.trainer.log_dir)
        return Path(".")

    def on_fit_end(self) -> None:
        if self.search is None or self.search.elites is None:
            return
        path = Path(self.hparams.prompt_file) if self.hparams.prompt_file else self._output_dir() / "proapo_prompts.json"
        self.run.write_prompt_file(path, {"hyperparameters": dict(self.hparams)})
        plot_fitness_curve(self.search.history, self._output_dir() / "fitness_curve.png")
        self.run.text_cache.save()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it
        if self.search is not None:
            state = self.search.state_dict()
            state["seen"] = [key.hex() for key in state["seen"]]  # plain strings in the checkpoint
            checkpoint["proapo_search"] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("proapo_search")
        if state is None:
            return
        state = dict(state)
        state["seen"] = [bytes.fromhex(key) for key in state["seen"]]
        if self.search is not None:
            self.search.load_state_dict(state)
        else:
            self._pending_state = state
