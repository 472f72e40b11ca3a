"""ProAPO's two-stage search engine (no Lightning): ``ProAPOSearch`` and its settings ``SearchSettings``.

Paper: Qu et al., "ProAPO: Progressively Automatic Prompt Optimization for Visual Classification",
CVPR 2025 (arXiv 2502.19844).

Stage 1 (ATO, task-level templates): a library of CLIP templates plus dataset-type variants is pruned
(drop templates whose single-template 1-shot Acc@1 is at least 200/C + 0.1 points below "a photo of a
{}."; keep the ``max_templates`` fittest), then evolved: each generation every elite spawns add / remove /
replace variants, and the population adds random mutations (2 + generation templates) and crossovers.
Stage 2 (class-specific descriptions): every class gets a pool "name only" + its descriptions, rendered
with every chosen template; the initial point is the fittest of 34 sampled description subsets; the
classes to work on are K-means groups of class embeddings, ranked by how much giving a class all its
descriptions changes the fitness (at most int(2.5 ln C) per group, int(10 ln C) in total); each group
then evolves with the same operators restricted to its classes.

The fitness only ever sees the labelled shots passed in (``features``, ``labels``). Every generation
keeps the ``top_k`` fittest of elites + children, with ties going to the incumbent, so the best fitness
never decreases. ``step()`` runs exactly one generation, so a Lightning module can run one per epoch,
and ``state_dict()`` / ``load_state_dict()`` resume a stopped search exactly.

Why this is in ``models/``: the search is a stateful object over text features (the prompt-embedding
pools of the current stage, built through :class:`~prompts_evo.models.prompt_embeddings.PromptEmbeddingCache`
from the backbone's text tower) and the population tensors; it is neither pure math (the operators and the
fitness it calls are in ``prompts_evo/functional``), nor data, nor a Lightning loop (``LitProAPO`` in
``prompts_evo/methods/proapo.py`` drives it one generation per epoch), and a notebook can run it alone.

:class:`SearchSettings` is the one list of the search's settings: ``ProAPOSearch``, ``LitProAPO`` (its
``search`` argument, a nested group in the YAML), the notebook API ``prompts_evo.fewshot.prepare_search``
and the demo all take it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from prompts_evo.functional.fitness import FitnessTerms, class_embeddings_from_masks, fitness_scores, selected_entry_sums
from prompts_evo.functional.grouping import group_classes, group_limits
from prompts_evo.functional.operators import (
    add_entry,
    candidate_keys,
    crossover,
    mutate,
    random_subsets,
    remove_entry,
    replace_entry,
    select_top_k,
)
from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache
from vlkit.checkpoints import allow_classes
from vlkit.errors import (
    ConfigError,
    check_classnames,
    check_finite_tensor,
    check_int,
    check_number,
    check_positive,
    check_settings,
)
from vlkit.functional.zeroshot import SIMPLE_TEMPLATE

__all__ = [
    "BASELINE_TEMPLATE",
    "SearchSettings",
    "render_prompt",
    "ProAPOSearch",
    "SearchResult",
]

BASELINE_TEMPLATE = SIMPLE_TEMPLATE  # the search's starting template is CLIP's default prompt, "a photo of a {}."


@dataclass(frozen=True)
class SearchSettings:
    """ProAPO's search settings (the authors' defaults), checked when built.

    Args:
        top_k: elites kept per generation (authors: 4).
        template_generations: stage-1 generations (authors: 8, 5 to 10 per config).
        edits_per_operator: add / remove / replace variants per elite (authors: 8).
        template_mutations: stage-1 mutations per generation (authors: 8).
        description_mutations: stage-2 mutations per generation (authors: 4).
        crossovers: crossovers per generation (authors: 16).
        inner_generations: stage-2 generations per group (authors: 4).
        outer_loops: passes over the groups (authors: 1 to 3).
        max_groups: groups searched per pass (authors: 1 to 4); groups are revisited in order if fewer exist.
        max_templates: keep the fittest this many templates after pruning (0 keeps all; authors 0/32/64/256).
        max_retries: extra candidates an operator draws to find unseen ones: ``n + max_retries`` attempts
            for n wanted (authors: 64).
        prune_templates: drop templates 200/C + 0.1 points below the baseline (authors' pruning).
        sample_initial_descriptions: pick the stage-2 start among 34 sampled subsets (else "all").
        top1_weight: a1, the weight of Acc@1 on the shots in the fitness (see
            :func:`prompts_evo.functional.fitness.fitness_scores`).
        top5_weight: a5, the weight of Acc@5.
        similarity_weight: r, the inter-class text-similarity penalty (negative: the authors' sign).
        entropy_weight: lambda, the cross-entropy weight (authors: 10).
        stage2_top1_weight: a1 in the description stage (None: as in stage 1); the authors set it per stage
            and dataset (e.g. CUB ViT-B/32 stage 2: a1 = 0, a5 = 0.2).
        stage2_top5_weight: a5 in the description stage (None: as in stage 1).
    """

    top_k: int = 4
    template_generations: int = 8
    edits_per_operator: int = 8
    template_mutations: int = 8
    description_mutations: int = 4
    crossovers: int = 16
    inner_generations: int = 4
    outer_loops: int = 1
    max_groups: int = 1
    max_templates: int = 64
    max_retries: int = 64
    prune_templates: bool = True
    sample_initial_descriptions: bool = True
    top1_weight: float = 0.5
    top5_weight: float = 0.05
    similarity_weight: float = 0.0
    entropy_weight: float = 10.0
    stage2_top1_weight: float | None = None
    stage2_top5_weight: float | None = None

    def __post_init__(self) -> None:
        for name in ("top_k", "template_generations", "edits_per_operator", "max_retries"):
            check_int(name, getattr(self, name), low=1)
        for name in ("template_mutations", "description_mutations", "crossovers", "inner_generations", "outer_loops",
                     "max_groups", "max_templates"):
            check_int(name, getattr(self, name), low=0)
        for name in ("prune_templates", "sample_initial_descriptions"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}", argument=name)
        for name in ("top1_weight", "top5_weight", "similarity_weight", "entropy_weight"):
            check_number(name, getattr(self, name))
        for name in ("stage2_top1_weight", "stage2_top5_weight"):
            check_number(name, getattr(self, name), allow_none=True)

    @classmethod
    def build(cls, settings: SearchSettings | dict | None = None, **overrides) -> SearchSettings:
        """``settings`` (a SearchSettings, a dict of fields, e.g. from a checkpoint, or None for the
        defaults) with ``overrides`` applied by name; an unknown name raises a ConfigError naming the
        closest setting."""
        settings = check_settings("search", settings, cls)
        return check_settings("search", overrides, cls, default=settings) if overrides else settings

    def fitness_weights(self, stage: str = "templates") -> dict[str, float]:
        """The keyword weights of ``fitness_scores`` in ``stage`` ("templates" or "descriptions")."""
        weights = dict(top1_weight=self.top1_weight, top5_weight=self.top5_weight,
                       similarity_weight=self.similarity_weight, entropy_weight=self.entropy_weight)
        if stage == "descriptions":
            if self.stage2_top1_weight is not None:
                weights["top1_weight"] = self.stage2_top1_weight
            if self.stage2_top5_weight is not None:
                weights["top5_weight"] = self.stage2_top5_weight
        return weights


# a SearchSettings inside a checkpoint (hyperparameters) loads under weights_only=True
allow_classes(SearchSettings)
torch.serialization.add_safe_globals([SearchSettings])


def render_prompt(template: str, classname: str, description: str = "") -> str:
    """template.format(class) followed by the description sentence (the authors' stage-2 prompt)."""
    text = template.format(classname)
    return f"{text} {description}".strip() if description else text


@dataclass
class SearchResult:
    """What a finished search found: the templates, the class prompts, the best fitness and the
    per-generation records (``ProAPOSearch.step``'s return values)."""

    templates: list[str]
    class_prompts: dict[str, list[str]]
    fitness: float
    history: list[dict] = field(default_factory=list)


class ProAPOSearch:
    """Progressive template -> description search on cached shot features.

    Args:
        classnames: C class names (unique, non-empty).
        features: (N, D) L2-normalised image features of the labelled shots.
        labels: (N,) int64 class indices of the shots.
        text_cache: encodes prompt strings once (see :class:`PromptEmbeddingCache`).
        templates: the stage-1 library (e.g. ``expand_type_words(imagenet_templates(), ["clothing"])``).
        descriptions: class name -> sentences for stage 2, or None to stop after stage 1.
        logit_scale: s in the fitness (the backbone's).
        seed: seeds every random choice of this search (nothing is shared between seeds).
        settings: the search settings (:class:`SearchSettings`, or a dict of its fields; None: defaults).
        **overrides: individual settings by name, applied over ``settings`` (``top_k=2``).

    The settings are read back as ``search.settings``; ``search.history`` holds the record of every
    generation run (what :meth:`step` returned), for notebooks and the prompt file's provenance.
    """

    def __init__(
        self,
        classnames: Sequence[str],
        features: Tensor,
        labels: Tensor,
        text_cache: PromptEmbeddingCache,
        templates: Sequence[str],
        descriptions: dict[str, list[str]] | None = None,
        logit_scale: float = 100.0,
        seed: int = 0,
        settings: SearchSettings | dict | None = None,
        **overrides,
    ) -> None:
        classnames = check_classnames(classnames)
        if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
            raise ConfigError(f"features and labels must be tensors, got {type(features).__name__}, {type(labels).__name__}",
                              argument="features")
        if features.dim() != 2 or labels.shape != (features.shape[0],):
            raise ConfigError(f"features must be (N, D) and labels (N,); got {tuple(features.shape)}, {tuple(labels.shape)}",
                              argument="features")
        if features.shape[0] == 0 or features.shape[1] == 0:
            raise ConfigError(f"features must hold at least one labelled shot of dimension >= 1, got {tuple(features.shape)}",
                              argument="features")
        check_finite_tensor("features", features)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ConfigError(f"labels must be integer class indices, got dtype {labels.dtype}", argument="labels")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classnames)):
            raise ConfigError(f"labels must lie in [0, {len(classnames)}), got range [{int(labels.min())}, {int(labels.max())}]",
                              argument="labels")
        check_positive("logit_scale", float(logit_scale))
        check_int("seed", seed)
        settings = SearchSettings.build(settings, **overrides)
        if isinstance(templates, str):
            raise ConfigError(f"templates must be a list of templates, got the string {templates!r}", argument="templates")
        library = list(dict.fromkeys(templates))
        for t in library:
            if not isinstance(t, str) or t.count("{}") != 1:
                raise ConfigError(f"every template needs exactly one '{{}}' placeholder, got {t!r}", argument="templates")
        if len(library) < settings.top_k:
            raise ConfigError(
                f"the template library ({len(library)} templates) must hold at least top_k={settings.top_k} templates: "
                "a population smaller than the selection size", argument="top_k"
            )
        if descriptions is not None:
            descriptions = _check_descriptions(descriptions, classnames)
        self.classnames = classnames
        self.features = features.float()
        self.labels = labels.long().to(features.device)
        self.text_cache = text_cache
        self.library = library
        self.descriptions = descriptions
        self.logit_scale = float(logit_scale)
        self.seed = int(seed)
        self.settings = settings
        self.weights = settings.fitness_weights("templates")
        self.stage2_weights = settings.fitness_weights("descriptions")
        self.generator = torch.Generator().manual_seed(self.seed)
        # search state (all of it goes into state_dict)
        self.stage = "templates"  # -> "descriptions" -> "done"
        self.generation = 0  # generations run so far (both stages)
        self.stage_generation = 0
        self.kept_templates: list[int] | None = None  # library indices after pruning
        self.chosen_templates: list[int] | None = None  # stage-2 templates (library indices)
        self.groups: list[list[int]] = []
        self.schedule: list[int] = []  # stage-2 group index of each remaining generation
        self.elites: Tensor | None = None  # (K, S, M) bool
        self.elite_fitness: Tensor | None = None  # (K,)
        self.elite_top1: Tensor | None = None  # (K,)
        self.seen: set[bytes] = set()
        self.history: list[dict] = []
        self.num_fitness_evaluations = 0
        self._pool: Tensor | None = None  # (C, M, D) of the current stage
        self._entries: Tensor | None = None  # (M, C, D) stage 1: the pool entry-major, read per template
        self._valid: Tensor | None = None  # (S, M)

    # ------------------------------------------------------------------ planning
    @property
    def total_generations(self) -> int:
        """Generations the full search runs (one ``step()`` each)."""
        return self.settings.template_generations + self._stage2_generations

    @property
    def done(self) -> bool:
        """True once every generation has run."""
        return self.stage == "done"

    # ------------------------------------------------------------------ fitness
    def _score(self, masks: Tensor, parents: Tensor | None = None) -> FitnessTerms:
        """(P, S, M) candidates of the current stage -> fitness terms (one batched product).

        Stage 1 reads each candidate's templates from the per-template embeddings (``_entries``) and,
        with ``parents`` (K, 1, M) (the elites the candidates were made from), builds a child one edit
        away from its parent from the parent's sum (:func:`selected_entry_sums`)."""
        pool = self._pool
        weights = self.stage2_weights if self.stage == "descriptions" else self.weights
        stage1 = self.stage == "templates" and self._entries is not None
        parent_masks = parent_sums = None
        if stage1 and parents is not None:
            parent_masks = parents[:, 0].to(pool.device)  # (K, M)
            parent_sums = selected_entry_sums(self._entries, parent_masks)  # (K, C, D), fresh: no drift, resumes exactly
        chunks = []
        for start in range(0, masks.shape[0], 256):  # bounds the (P, N, C) logits for big populations
            chunk = masks[start : start + 256].to(pool.device)  # (p, S, M)
            if stage1:
                emb = F.normalize(selected_entry_sums(self._entries, chunk[:, 0], parent_masks, parent_sums), dim=-1)  # (p, C, D)
            else:
                emb = class_embeddings_from_masks(pool, chunk)  # (p, C, D)
            chunks.append(fitness_scores(self.features, self.labels, emb, self.logit_scale, **weights))
        self.num_fitness_evaluations += masks.shape[0]
        return FitnessTerms(*(torch.cat([getattr(c, name) for c in chunks]) for name in FitnessTerms._fields))

    def class_embeddings(self, candidate: Tensor | None = None) -> Tensor:
        """(C, D) class embeddings of ``candidate`` (default: the current best)."""
        candidate = self.elites[0] if candidate is None else candidate
        return class_embeddings_from_masks(self._pool, candidate.unsqueeze(0).to(self._pool.device))[0]

    # ------------------------------------------------------------------ stage 1
    def _template_pool(self, indices: list[int]) -> Tensor:
        texts = [self.library[i].format(c) for c in self.classnames for i in indices]
        emb = self.text_cache.embed(texts).to(self.features.device)  # (C*M, D)
        return emb.view(len(self.classnames), len(indices), -1)  # (C, M, D)

    def _start_templates(self) -> dict:
        indices = list(range(len(self.library)))
        self._pool = self._template_pool(indices)
        self._entries = self._pool.transpose(0, 1).contiguous()  # (M, C, D)
        num = len(indices)
        singles = torch.eye(num, dtype=torch.bool).unsqueeze(1)  # (M, 1, M): each template alone
        terms = self._score(singles)
        kept = indices
        info = {"library_size": num}
        if self.settings.prune_templates:
            base = self.library.index(BASELINE_TEMPLATE) if BASELINE_TEMPLATE in self.library else 0
            delta = 200.0 / len(self.classnames) + 0.1
            keep = terms.top1 > terms.top1[base] - delta
            keep[base] = True
            kept = torch.nonzero(keep).flatten().tolist()
        if self.settings.max_templates and len(kept) > self.settings.max_templates:
            order = select_top_k(terms.fitness[kept], self.settings.max_templates).tolist()
            kept = sorted(kept[i] for i in order)
        if len(kept) < self.settings.top_k:  # keep enough for a population of top_k distinct single templates
            extra = [i for i in select_top_k(terms.fitness, num).tolist() if i not in kept]
            kept = sorted(kept + extra[: self.settings.top_k - len(kept)])
        self.kept_templates = kept
        self._pool = self._pool[:, kept]  # (C, M', D)
        self._entries = self._entries[kept]  # (M', C, D)
        self._valid = torch.ones(1, len(kept), dtype=torch.bool)
        # initial population: top_k random single templates (the authors' ``sample_manual``)
        picks = torch.randperm(len(kept), generator=self.generator)[: self.settings.top_k]
        init = torch.zeros(self.settings.top_k, 1, len(kept), dtype=torch.bool)
        init[torch.arange(self.settings.top_k), 0, picks] = True
        self._set_population(init, self._score(init))
        self.seen.update(candidate_keys(init))
        info.update(kept_templates=len(kept))
        return info

    # ------------------------------------------------------------------ stage 2
    def _description_pool(self, template_indices: list[int]) -> tuple[Tensor, Tensor]:
        entries = [[""] + self.descriptions[c] for c in self.classnames]  # entry 0 = name only
        width = max(len(e) for e in entries)
        valid = torch.zeros(len(self.classnames), width, dtype=torch.bool)
        texts = []
        for c, (name, row) in enumerate(zip(self.classnames, entries)):
            valid[c, : len(row)] = True
            for d in row:
                texts.extend(render_prompt(self.library[t], name, d) for t in template_indices)
        emb = self.text_cache.embed(texts).to(self.features.device)  # (sum_c n_c * T, D)
        pool = torch.zeros(len(self.classnames), width, emb.shape[-1], device=emb.device)
        offset = 0
        for c, row in enumerate(entries):
            block = emb[offset : offset + len(row) * len(template_indices)]
            pool[c, : len(row)] = block.view(len(row), len(template_indices), -1).sum(1)  # (n_c, D)
            offset += len(row) * len(template_indices)
        return pool, valid  # (C, M, D), (C, M)

    def _start_descriptions(self) -> dict:
        best = self.elites[0, 0]  # (M',) stage-1 winner
        self.chosen_templates = [self.kept_templates[i] for i in torch.nonzero(best).flatten().tolist()]
        self._pool, self._valid = self._description_pool(self.chosen_templates)
        self._entries = None  # stage 2 selects per class: the dense (C, M, D) pool
        valid = self._valid
        counts = valid.sum(-1)  # (C,)
        # prompt sampling: all, names only, 16 per-class random sizes, 16 shared sizes
        inits = [valid.clone(), torch.zeros_like(valid)]
        inits[1][:, 0] = True
        if self.settings.sample_initial_descriptions:
            for _ in range(16):
                low = torch.floor(counts.float() / 3 + 0.71).long().clamp(min=1)  # (C,)
                sizes = low + (torch.rand(counts.shape, generator=self.generator) * (counts - low + 1)).long()
                inits.append(random_subsets(valid, sizes, self.generator))
            for _ in range(16):
                low = max(1, int(math.floor(float(counts.float().mean()) / 3 + 0.71)))
                size = int(torch.randint(low, int(counts.max()) + 1, (1,), generator=self.generator))
                inits.append(random_subsets(valid, torch.full_like(counts, size), self.generator))
        init = torch.stack(inits)  # (I, C, M)
        keys = candidate_keys(init)
        unique = [i for i, k in enumerate(keys) if k not in keys[:i]]
        init = init[unique]
        terms = self._score(init)
        order = select_top_k(terms.fitness, min(self.settings.top_k, init.shape[0])).cpu()  # init lives on the CPU
        population = init[order]
        if population.shape[0] < self.settings.top_k:  # pad with edits of the best (tiny description pools)
            top_k = self.settings.top_k
            extra = replace_entry(population[0], valid, torch.ones(valid.shape[0], dtype=torch.bool), top_k, self.generator)
            population = torch.cat([population, extra])[:top_k] if extra.shape[0] else population.repeat(top_k, 1, 1)[:top_k]
        self._set_population(population, self._score(population))
        self.seen = set(candidate_keys(init))
        start = self.elites[0]
        start_fitness = float(self.elite_fitness[0])
        # group sampling: K-means groups of class embeddings, ranked by importance
        groups = group_classes(self.class_embeddings(start).cpu(), self.generator)
        per_group, total = group_limits(len(self.classnames))
        probes = start.unsqueeze(0).repeat(len(self.classnames), 1, 1)  # (C, C, M)
        probes[torch.arange(len(self.classnames)), torch.arange(len(self.classnames))] = valid  # class c gets all
        importance = self._score(probes).fitness  # (C,)
        chosen, used = [], 0
        for group in groups:
            ranked = sorted(group, key=lambda c: -float(importance[c]))
            above = [c for c in ranked if float(importance[c]) > start_fitness + 0.1]
            # none above the bar (e.g. the start already holds every description): still search the
            # top-ranked classes of the group rather than nothing (documented deviation)
            picked = (above or ranked)[: min(per_group, total - used)]
            if picked:
                chosen.append(picked)
                used += len(picked)
            if used >= total:
                break
        self.groups = chosen
        s = self.settings
        order_groups = [i % len(chosen) for i in range(s.max_groups)]
        self.schedule = [g for _ in range(s.outer_loops) for g in order_groups for _ in range(s.inner_generations)]
        return {
            "templates": [self.library[i] for i in self.chosen_templates],
            "start_fitness": start_fitness,
            "groups": [[self.classnames[c] for c in g] for g in chosen],
        }

    # ------------------------------------------------------------------ evolution
    def _set_population(self, population: Tensor, terms: FitnessTerms) -> None:
        self.elites = population
        self.elite_fitness = terms.fitness.cpu()
        self.elite_top1 = terms.top1.cpu()

    def _unseen(self, make, count: int) -> list[Tensor]:
        """Up to ``count`` candidates never evaluated before, among ``count + max_retries`` drawn at once by
        ``make(n)``: the first unseen ones in draw order (the authors' ``range(num + 64)`` attempts, one
        candidate each, stopping at ``num`` new ones)."""
        if count <= 0:
            return []
        batch = make(count + self.settings.max_retries)  # (n, S, M)
        found: list[int] = []
        for index, key in enumerate(candidate_keys(batch)):
            if key not in self.seen:
                self.seen.add(key)
                found.append(index)
                if len(found) == count:
                    break
        return list(batch[found].unbind(0)) if found else []

    def _generation(self, editable: Tensor, mutations: int, mutation_size: int) -> dict:
        valid, gen = self._valid, self.generator
        children: list[Tensor] = []
        for elite in self.elites:
            for operator in (add_entry, remove_entry, replace_entry):
                make = lambda n, e=elite, op=operator: op(e, valid, editable, n, gen)  # noqa: E731
                children += self._unseen(make, self.settings.edits_per_operator)
        children += self._unseen(lambda n: mutate(self.elites[0], valid, editable, n, mutation_size, gen), mutations)
        children += self._unseen(lambda n: crossover(self.elites, editable, n, gen), self.settings.crossovers)
        if children:
            batch = torch.stack(children)  # (P, S, M)
            terms = self._score(batch, parents=self.elites)
            population = torch.cat([self.elites, batch])
            fitness = torch.cat([self.elite_fitness, terms.fitness.cpu()])
            top1 = torch.cat([self.elite_top1, terms.top1.cpu()])
            mean_fitness = float(terms.fitness.mean())
        else:
            population, fitness, top1, mean_fitness = self.elites, self.elite_fitness, self.elite_top1, float(self.elite_fitness.mean())
        keep = select_top_k(fitness, self.settings.top_k)  # elites listed first: ties keep the incumbent
        self.elites, self.elite_fitness, self.elite_top1 = population[keep], fitness[keep], top1[keep]
        return {"num_children": len(children), "mean_fitness": mean_fitness}

    def step(self) -> dict:
        """Run one generation (starting a stage when needed); returns this generation's record."""
        if self.done:
            raise RuntimeError("the search is finished; read best_class_prompts()")
        info: dict = {}
        if self.stage == "templates" and self.elites is None:
            info.update(self._start_templates())
        if self.stage == "templates" and self.stage_generation >= self.settings.template_generations:
            self._enter_descriptions_or_finish(info)
        if self.stage == "templates":
            editable = torch.ones(1, dtype=torch.bool)
            out = self._generation(editable, self.settings.template_mutations, 2 + self.stage_generation)
            group = None
        elif self.stage == "descriptions":
            if self.chosen_templates is None:
                info.update(self._start_descriptions())
            group_index = self.schedule[self.stage_generation]
            editable = torch.zeros(len(self.classnames), dtype=torch.bool)
            editable[self.groups[group_index]] = True
            size = max(1, int(self._valid.sum(-1).float().mean()) // 2)
            out = self._generation(editable, self.settings.description_mutations, size)
            group = group_index
        else:
            raise RuntimeError("the search is finished")
        self.stage_generation += 1
        self.generation += 1
        record = {
            "generation": self.generation,
            "stage": self.stage,
            "group": group,
            "best_fitness": float(self.elite_fitness[0]),
            "best_top1": float(self.elite_top1[0]),
            "mean_fitness": out["mean_fitness"],
            "num_children": out["num_children"],
            "fitness_evaluations": self.num_fitness_evaluations,
            "texts_encoded": self.text_cache.num_encoded,
            **info,
        }
        self.history.append(record)
        stage1_over = self.stage_generation >= self.settings.template_generations
        if self.stage == "templates" and stage1_over and self._stage2_generations == 0:
            self.stage = "done"
        elif self.stage == "descriptions" and self.stage_generation >= len(self.schedule):
            self.stage = "done"
        return record

    @property
    def _stage2_generations(self) -> int:
        s = self.settings
        return s.outer_loops * s.max_groups * s.inner_generations if self.descriptions is not None else 0

    def _enter_descriptions_or_finish(self, info: dict) -> None:
        if self._stage2_generations == 0:
            self.stage = "done"
            return
        self.stage = "descriptions"
        self.stage_generation = 0

    def run(self, progress: bool = True) -> SearchResult:
        """Run every remaining generation and return the result; ``progress`` shows a bar of generations
        with the best fitness so far (tqdm; a demo's ``gr.Progress(track_tqdm=True)`` streams it)."""
        from tqdm.auto import tqdm

        total = self.settings.template_generations + self._stage2_generations
        with tqdm(total=total, initial=self.generation, desc="ProAPO generations", disable=not progress, leave=False) as bar:
            while not self.done:
                record = self.step()
                bar.update(1)
                bar.set_postfix(best_fitness=f"{record['best_fitness']:.3f}")
        return self.result()

    # ------------------------------------------------------------------ results
    def best_templates(self) -> list[str]:
        """The templates of the current best candidate (stage 2: the templates chosen by stage 1)."""
        if self.elites is None:
            raise RuntimeError("call step() first")
        if self.chosen_templates is not None:
            return [self.library[i] for i in self.chosen_templates]
        return [self.library[self.kept_templates[i]] for i in torch.nonzero(self.elites[0, 0]).flatten().tolist()]

    def best_class_prompts(self) -> dict[str, list[str]]:
        """Class name -> the prompts of the current best candidate (CuPL/DCLIP JSON format): averaging
        their normalised embeddings reproduces the class embedding the fitness saw."""
        templates = self.best_templates()
        if self.chosen_templates is None:
            return {c: [t.format(c) for t in templates] for c in self.classnames}
        out = {}
        for c, name in enumerate(self.classnames):
            entries = [""] + self.descriptions[name]
            chosen = torch.nonzero(self.elites[0, c]).flatten().tolist()
            out[name] = [render_prompt(t, name, entries[m]) for m in chosen for t in templates]
        return out

    def result(self) -> SearchResult:
        """The current best as a :class:`SearchResult` (templates, class prompts, fitness, history)."""
        return SearchResult(self.best_templates(), self.best_class_prompts(), float(self.elite_fitness[0]), list(self.history))

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Everything needed to resume the search exactly (population, seen keys, RNG state, history)."""
        return {
            "stage": self.stage,
            "generation": self.generation,
            "stage_generation": self.stage_generation,
            "kept_templates": self.kept_templates,
            "chosen_templates": self.chosen_templates,
            "groups": self.groups,
            "schedule": self.schedule,
            "elites": None if self.elites is None else self.elites.cpu(),
            "elite_fitness": self.elite_fitness,
            "elite_top1": self.elite_top1,
            "seen": sorted(self.seen),
            "history": list(self.history),
            "num_fitness_evaluations": self.num_fitness_evaluations,
            "generator": self.generator.get_state(),
            "library": self.library,
            "classnames": self.classnames,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` of a search over the same library and classes."""
        if state["library"] != self.library or state["classnames"] != self.classnames:
            raise ConfigError("state_dict must come from a search over the same template library and class list, got "
                              f"{len(state['library'])} templates / {len(state['classnames'])} classes (this search: "
                              f"{len(self.library)} / {len(self.classnames)})", argument="state_dict")
        for key in ("stage", "generation", "stage_generation", "kept_templates", "chosen_templates", "groups",
                    "schedule", "elites", "elite_fitness", "elite_top1", "history", "num_fitness_evaluations", "seed"):
            setattr(self, key, state[key])
        self.seen = set(state["seen"])
        self.generator.set_state(state["generator"])
        if self.chosen_templates is not None:
            self._pool, self._valid = self._description_pool(self.chosen_templates)
        elif self.kept_templates is not None:
            self._pool = self._template_pool(self.kept_templates)
            self._entries = self._pool.transpose(0, 1).contiguous()  # (M', C, D)
            self._valid = torch.ones(1, len(self.kept_templates), dtype=torch.bool)


def _check_descriptions(descriptions: dict, classnames: list[str]) -> dict[str, list[str]]:
    if not isinstance(descriptions, dict) or not descriptions:
        raise ConfigError(f"descriptions must be a non-empty dict class name -> list of sentences, got {type(descriptions).__name__}",
                          argument="descriptions")
    missing = [c for c in classnames if c not in descriptions]
    if missing:
        raise ConfigError(f"descriptions lack {len(missing)} classes: {missing[:5]}", argument="descriptions")
    extra = [c for c in descriptions if c not in classnames]
    if extra:
        raise ConfigError(f"descriptions must cover exactly the {len(classnames)} classes, got {len(extra)} unknown: {extra[:5]}",
                          argument="descriptions")
    out = {}
    for c in classnames:
        sentences = descriptions[c]
        if isinstance(sentences, str) or not isinstance(sentences, (list, tuple)):
            raise ConfigError(f"descriptions[{c!r}] must be a list of str, got {type(sentences).__name__}", argument="descriptions")
        cleaned = [s.strip() for s in sentences if isinstance(s, str) and s.strip()]
        out[c] = list(dict.fromkeys(cleaned))
    return out
