"""TFUP and TFUP-T (Long et al., arXiv 2404.16339) as LightningModules, plus the zero-shot and
Tip-Adapter baselines that share TFUP's cache kernel.

- ``LitTFUP`` (training-free; run with ``vlkit test``): ``mode="zeroshot"`` (text head only),
  ``"tfup"`` (unsupervised cache + multi-level similarity), ``"tip-adapter"`` (labelled K-shot cache,
  cosine affinity).
- ``LitTFUPT`` (``vlkit fit`` then ``vlkit test``): text residual + image adapter trained on the
  unlabeled set with warm-up cross-entropy, confident-sample cross-entropy and the marginal-entropy term.

Both read features from ``vlkit.data.fewshot.FewShotDataModule`` (connected in ``setup``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import MulticlassAccuracy

from vlkit.checkpoints import record_class, regrouped_hyperparameters
from vlkit.errors import (
    ConfigError,
    check_choice,
    check_file,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_probability,
    check_settings,
)
from vlkit.functional.tfup import (
    cache_logits,
    marginal_entropy,
    multi_level_similarity,
    prepare_tfup_cache,
    prepared_tfup_logits,
    select_confident_prototypes_from_features,
    tfup_cache_shots,
    tfup_logits,
)
from vlkit.functional.zeroshot import zeroshot_logits
from vlkit.models.backbones import create_backbone
from vlkit.models.zeroshot import build_text_classifier

__all__ = ["CacheSettings", "LitTFUP", "LitTFUPT", "resolve_templates"]

_TEMPLATE_SETS = ("simple", "imagenet")
MODES = ("zeroshot", "tfup", "tip-adapter")
SELECTIONS = ("last", "paper-test-best")


def _check_text_head_args(template_set: str | None, templates: list[str] | None, class_prompts_file: str | None) -> None:
    """The text head's arguments, checked at construction (the files and strings, not the backbone)."""
    check_choice("template_set", template_set, ("auto", *_TEMPLATE_SETS, "none", None))
    if templates is not None:
        bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
        if isinstance(templates, str) or bad:
            raise ConfigError(
                f"templates must be a list of strings with exactly one '{{}}' slot each, got {templates!r}",
                argument="templates",
            )
    if class_prompts_file is not None:
        check_file("class_prompts_file", class_prompts_file)
    if template_set in (None, "none") and not templates and class_prompts_file is None:
        raise ConfigError(
            f"template_set={template_set!r} with no templates and no class_prompts_file leaves the text head "
            "without prompts; give one of them",
            argument="template_set",
        )


@dataclass(frozen=True)
class CacheSettings:
    """TFUP's cache: how many confident samples per class it keeps and how their logits join the text head's
    (the ``cache`` group of ``LitTFUP`` and ``LitTFUPT``), checked when built.

    Args:
        alpha: residual weight of the cache logits, >= 0 (TFUP: 0.3).
        beta: sharpness of the cache kernel exp(-beta (1 - A)), >= 0 (TFUP: 1).
        temperature: softmax temperature of the selection and MSM probabilities, > 0 (TFUP: 10).
        cache_proportion: TFUP's K = min(max_shots, max(min_shots, floor(proportion N / C))), in [0, 1] (0.3).
        min_shots: the lower bound of K, an int >= 1 (9).
        max_shots: the upper bound of K, an int >= min_shots (16).
    """

    alpha: float = 0.3
    beta: float = 1.0
    temperature: float = 10.0
    cache_proportion: float = 0.3
    min_shots: int = 9
    max_shots: int = 16

    def __post_init__(self) -> None:
        check_non_negative("alpha", self.alpha)
        check_non_negative("beta", self.beta)
        check_positive("temperature", self.temperature)
        check_probability("cache_proportion", self.cache_proportion)
        check_int("min_shots", self.min_shots, low=1)
        check_int("max_shots", self.max_shots, low=self.min_shots)


def resolve_templates(
    template_set: str | None, templates: list[str] | None, class_prompts_file: str | None = None
) -> list[str] | None:
    """The templates of the text head. ``"auto"``: the simple template, unless a class-prompt file is
    given (then its sentences alone); ``None``/``"none"``: no template."""
    from vlkit.data.prompts import SIMPLE_TEMPLATE, imagenet_templates

    if templates:
        return list(templates)
    if template_set == "auto":
        template_set = None if class_prompts_file else "simple"
    if template_set is None or template_set == "none":
        return None
    if template_set == "simple":
        return [SIMPLE_TEMPLATE]
    if template_set == "imagenet":
        return imagenet_templates()
    raise ConfigError(
        f"template_set must be one of {_TEMPLATE_SETS}, 'auto' or 'none', got {template_set!r}", argument="template_set"
    )


class _FeatureClassifier(L.LightningModule):
    """Shared set-up: backbone, data connection, text class weights, accuracy metrics.

    The arguments below are those of both subclasses (``LitTFUP`` and ``LitTFUPT``); jsonargparse reads
    base-class docstrings, so ``--model.help`` shows them for either.

    Args:
        backbone: ``create_backbone`` name (preset, ``open_clip:<arch>/<tag>``, checkpoint, HF dir).
        template_set: ``"auto"`` (the simple template, or only the prompt file's sentences when
            ``class_prompts_file`` is set), ``"simple"`` ("a photo of a {}."), ``"imagenet"`` (CLIP's 80
            templates) or ``None`` (no template).
        templates: explicit templates (override ``template_set``).
        class_prompts_file: a class -> sentences JSON (CuPL, DCLIP or ProAPO output) for the text head.
        cache: TFUP's cache (:class:`CacheSettings`: ``alpha``, ``beta``, ``temperature``, ``cache_proportion``,
            ``min_shots``, ``max_shots``; a dict of some of them also works).
    """

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``; a checkpoint written before the ``cache`` group (flat ``alpha``,
        ``beta``, ... hyperparameters) loads too, those values regrouped."""
        groups = regrouped_hyperparameters(checkpoint_path, {"cache": CacheSettings})
        return super().load_from_checkpoint(checkpoint_path, *args, **{**groups, **kwargs})

    def prepare(self, datamodule) -> "_FeatureClassifier":
        """Set up outside a Trainer (demos, notebooks): connect ``datamodule`` and build the head/cache."""
        self._attached_datamodule = datamodule
        self.setup("test")
        return self

    def _build_head(self) -> None:
        h = self.hparams
        dm = getattr(self, "_attached_datamodule", None)
        if dm is None and self._trainer is not None:
            dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "connect"):
            raise ConfigError(
                f"{type(self).__name__} needs a FewShotDataModule-like datamodule with connect(backbone), got {dm!r}",
                argument="datamodule",
            )
        if getattr(self, "_head_ready", False):
            return
        # kept outside the module tree: the frozen towers are only needed here, and must not bloat
        # every checkpoint (features are cached by the datamodule)
        self.__dict__["backbone"] = create_backbone(h.backbone)
        dm.connect(self.backbone)
        self.classnames = list(dm.classnames)
        class_prompts = None
        if h.class_prompts_file:
            from vlkit.data.prompts import load_class_prompts

            class_prompts = load_class_prompts(h.class_prompts_file, self.classnames)
        templates = resolve_templates(h.template_set, h.templates, h.class_prompts_file)
        if templates is None and class_prompts is None:
            raise ConfigError(
                "the text head needs prompts: give templates, template_set or class_prompts_file, got none",
                argument="template_set",
            )
        weights = build_text_classifier(self.backbone, self.classnames, templates=templates, class_prompts=class_prompts)
        self.register_buffer("class_weights", weights.float().cpu(), persistent=False)  # (C, D)
        self.logit_scale = float(self.backbone.logit_scale)
        self.datamodule = dm
        num_classes = len(self.classnames)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_recall = MulticlassAccuracy(num_classes, average="macro")
        # (index, prediction, label) rows, concatenated over ranks at compute (torchmetrics "cat" state); float32
        # holds the indices exactly below 2**24 rows
        self.test_rows = CatMetric()
        self._head_ready = True

    def _select_confident(self, features: Tensor, shots: int) -> Tensor:
        """TFUP's confidence + prototype selection on p = softmax(t f W^T) (t = the TFUP temperature, 10),
        streamed over row chunks: (N, D) -> (C, K) indices."""
        return select_confident_prototypes_from_features(features, self.class_weights, shots, self.cache.temperature)

    def _collect(self, logits: Tensor, batch: dict, stage: str) -> None:
        preds = logits.argmax(-1)
        if stage == "test":
            self.test_acc.update(preds, batch["label"])
            self.test_recall.update(preds, batch["label"])
            self.test_rows.update(torch.stack([batch["index"], preds, batch["label"]], 1))  # (B, 3)
        else:
            self.val_acc.update(preds, batch["label"])

    # both subclasses score features the same way: forward() gives (B, C) logits
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate ``val/acc`` over a batch of features."""
        self._collect(self(batch["features"]), batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate test accuracy, mean per-class recall and the (index, prediction, label) rows."""
        self._collect(self(batch["features"]), batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Class probabilities (B, C)."""
        return self(batch["features"]).softmax(-1)

    def on_test_epoch_end(self) -> None:
        """Log ``test/acc`` and ``test/mean_per_class_recall``; keep ``test_predictions`` (N, 3), rows of every
        rank in index order. The torchmetrics states are reduced over ranks at compute, so N ranks log what 1 rank
        does (the values are then identical on every rank: no ``sync_dist``)."""
        self.log("test/acc", self.test_acc.compute(), prog_bar=True)
        self.log("test/mean_per_class_recall", self.test_recall.compute())
        self.test_acc.reset()
        self.test_recall.reset()
        rows = self.test_rows.compute()  # (N, 3): index, prediction, label ([] when no row was scored)
        rows = rows.long().cpu() if isinstance(rows, Tensor) else torch.zeros(0, 3, dtype=torch.long)
        self.test_rows.reset()
        self.test_predictions = rows[rows[:, 0].argsort()]  # (N, 3) in index order

    def on_validation_epoch_end(self) -> None:
        """Log ``val/acc``."""
        self.log("val/acc", self.val_acc.compute(), prog_bar=True)
        self.val_acc.reset()


class LitTFUP(_FeatureClassifier):
    """Training-free classifiers over cached features: zero-shot, TFUP and Tip-Adapter.

    The backbone, text-head and cache arguments (``backbone``, ``template_set``, ``templates``,
    ``class_prompts_file``, ``cache``) are documented on the shared base class ``_FeatureClassifier``.

    Args:
        mode: ``"zeroshot"``, ``"tfup"`` (unsupervised cache from the unlabeled set, multi-level
            similarity) or ``"tip-adapter"`` (labelled shots from the datamodule, cosine affinity).
    """

    def __init__(
        self,
        backbone: str = "offline-lite0-minilm",
        mode: str = "tfup",
        template_set: str | None = "auto",
        templates: list[str] | None = None,
        class_prompts_file: str | None = None,
        cache: CacheSettings = CacheSettings(),
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        _check_text_head_args(template_set, templates, class_prompts_file)
        self.cache = check_settings("cache", cache, CacheSettings)
        cache = dataclasses.asdict(self.cache)  # hparams hold plain values (weights_only loads)
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        """Build the text head, then the cache: TFUP's confident prototypes or the labelled shots."""
        self._build_head()
        h, c, dm = self.hparams, self.cache, self.datamodule
        self.cache_keys = self.cache_values = None
        self._prepared_from = None  # the cache is prepared on the first forward (see forward)
        num_classes = len(self.classnames)
        if h.mode == "tfup":
            feats = dm.unlabeled_features  # (N, D)
            shots = tfup_cache_shots(feats.shape[0], num_classes, c.cache_proportion, c.min_shots, c.max_shots)
            index = self._select_confident(feats, shots)  # (C, K)
            self.cache_index = index
            self.cache_keys = feats[index.flatten()]  # (C*K, D)
            pseudo = torch.arange(num_classes).repeat_interleave(shots)  # (C*K,)
            self.cache_values = F.one_hot(pseudo, num_classes).float()  # (C*K, C)
            self.cache_label_accuracy = float((dm.eval_labels[index.flatten()] == pseudo).float().mean())  # diagnostic
        elif h.mode == "tip-adapter":
            if dm.shot_features is None:
                raise ConfigError("mode='tip-adapter' needs labelled shots: set data.shots >= 1, got 0", argument="shots")
            self.cache_keys = dm.shot_features
            self.cache_values = F.one_hot(dm.shot_labels, num_classes).float()

    def forward(self, features: Tensor) -> Tensor:
        """(B, D) features -> (B, C) logits."""
        h = self.hparams
        weights = self.class_weights.to(features.device)
        if h.mode == "zeroshot":
            return zeroshot_logits(features, weights, self.logit_scale)
        # one setup per cache (normalisation, checks, the cache softmax), not one per batch
        # (in-place writes such as load_state_dict keep the tensor object but bump its version counter)
        tensors = (self.class_weights, self.cache_keys, self.cache_values)
        source = (tensors, tuple(t._version for t in tensors), features.device)
        last = getattr(self, "_prepared_from", None)
        if last is None or last[1:] != source[1:] or any(a is not b for a, b in zip(last[0], tensors)):
            self._prepared_cache = prepare_tfup_cache(
                weights,
                self.cache_keys.to(features.device),
                self.cache_values.to(features.device),
                temperature=self.cache.temperature,
                similarity="msm" if h.mode == "tfup" else "cosine",
            )
            self._prepared_from = source
        return prepared_tfup_logits(
            features, self._prepared_cache, alpha=self.cache.alpha, beta=self.cache.beta, logit_scale=self.logit_scale
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record which class wrote the checkpoint."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """No optimiser: TFUP trains nothing."""
        return None


class ImageAdapter(nn.Module):
    """TFUP-T's image adapter: Linear(D, D/r) - ReLU - Linear(D/r, D) - ReLU, no bias (CLIP-Adapter style).

    The feature dimension D is read from the backbone (the authors hard-code 512).

    Args:
        dim: D, the feature dimension.
        reduction: r, the hidden width is D // r.
    """

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) -> (B, D)."""
        return self.net(x)


class LitTFUPT(_FeatureClassifier):
    """TFUP-T: training-based TFUP (sec. 3.4) over cached features.

    Learnable: a text residual R (C, D) initialised at 0 with W' = normalize(text_ratio W + (1-text_ratio) R)
    and an image adapter A with f' = normalize(adapter_ratio A(f) + (1-adapter_ratio) f).
    Epochs < ``warmup_epochs``: cross-entropy of 100 f'(x_strong) W'^T on the confidence+prototype-selected
    subset (K_t = max(min_shots, floor(training_proportion N / C)) per class) with TFUP pseudo-labels.
    Later epochs, every sample: weak logits = 100 f'_w W'^T + alpha exp(-beta(1 - A')) L with the MSM
    recomputed on the adapted features and W'; samples whose max weak probability exceeds
    ``confidence_threshold`` contribute CE(strong logits, argmax weak); plus
    ``marginal_weight`` * (-H(mean softmax(strong logits))).

    The backbone, text-head and cache arguments (``backbone``, ``template_set``, ``templates``,
    ``class_prompts_file``, ``cache``) are documented on the shared base class ``_FeatureClassifier``;
    ``training_proportion`` sizes the warm-up subset as ``cache.cache_proportion`` sizes the cache (with
    ``cache.min_shots`` as its lower bound).

    Args:
        training_proportion: K_t's proportion of the warm-up subset, in [0, 1] (0.75).
        adapter_ratio: weight of the adapter output in f', in [0, 1] (0.2).
        text_ratio: weight of the frozen class weights in W', in (0, 1] (0.5).
        adapter_reduction: hidden width D / r of the adapter, an int >= 1 with D / r >= 1 (4).
        warmup_epochs: epochs of warm-up cross-entropy on the selected subset, an int >= 0 (5).
        confidence_threshold: weak-view probability above which a sample is confident, in [0, 1) (0.9;
            at 1 no sample is ever confident).
        marginal_weight: weight of the marginal-entropy term, >= 0 (0.3).
        lr: AdamW learning rate, > 0 (authors: 0.012 at batch 256), cosine schedule over the real number
            of steps.
        weight_decay: AdamW weight decay, >= 0 (authors: 0.1).
        adam_eps: AdamW epsilon, > 0 (authors: 3e-3).
        selection: ``"last"`` (default, strict: the last epoch is tested; no label is read) or
            ``"paper-test-best"`` (the authors' protocol: the epoch with the best test accuracy; the
            CLI config adds a ModelCheckpoint on ``val/acc`` computed on the test labels). Every result
            records which one produced it.
    """

    def __init__(
        self,
        backbone: str = "offline-lite0-minilm",
        template_set: str | None = "auto",
        templates: list[str] | None = None,
        class_prompts_file: str | None = None,
        cache: CacheSettings = CacheSettings(),
        training_proportion: float = 0.75,
        adapter_ratio: float = 0.2,
        text_ratio: float = 0.5,
        adapter_reduction: int = 4,
        warmup_epochs: int = 5,
        confidence_threshold: float = 0.9,
        marginal_weight: float = 0.3,
        lr: float = 0.012,
        weight_decay: float = 0.1,
        adam_eps: float = 3e-3,
        selection: str = "last",
    ) -> None:
        super().__init__()
        check_choice("selection", selection, SELECTIONS)
        _check_text_head_args(template_set, templates, class_prompts_file)
        self.cache = check_settings("cache", cache, CacheSettings)
        check_probability("training_proportion", training_proportion)
        check_probability("adapter_ratio", adapter_ratio)
        check_probability("text_ratio", text_ratio, open_low=True)
        check_int("adapter_reduction", adapter_reduction, low=1)
        check_int("warmup_epochs", warmup_epochs, low=0)
        check_probability("confidence_threshold", confidence_threshold, open_high=True)
        check_non_negative("marginal_weight", marginal_weight)
        check_positive("lr", lr)
        check_non_negative("weight_decay", weight_decay)
        check_positive("adam_eps", adam_eps)
        cache = dataclasses.asdict(self.cache)  # hparams hold plain values (weights_only loads)
        self.save_hyperparameters()
        self.adapter = None

    def setup(self, stage: str) -> None:
        """Build the text head, the adapter and residual, TFUP's cache and the warm-up pseudo-labels."""
        self._build_head()
        if self.adapter is not None:
            return
        h, c, dm = self.hparams, self.cache, self.datamodule
        num_classes, dim = self.class_weights.shape
        check_number("adapter_reduction", h.adapter_reduction, high=dim)  # the hidden layer keeps >= 1 unit
        self.adapter = ImageAdapter(dim, h.adapter_reduction)
        self.text_residual = nn.Parameter(torch.zeros(num_classes, dim))  # (C, D), R = 0 at start
        feats = dm.unlabeled_features  # (N, D)
        # cache: TFUP's unsupervised K-shot cache (keys stay the clean features)
        k = tfup_cache_shots(feats.shape[0], num_classes, c.cache_proportion, c.min_shots, c.max_shots)
        cache_index = self._select_confident(feats, k).flatten()  # (C*K,)
        self.register_buffer("cache_keys", feats[cache_index].clone(), persistent=False)  # (C*K, D)
        self.register_buffer(
            "cache_values", F.one_hot(torch.arange(num_classes).repeat_interleave(k), num_classes).float(), persistent=False
        )  # (C*K, C)
        # training subset for the warm-up, labelled by the argmax of the TFUP logits
        k_train = min(
            tfup_cache_shots(feats.shape[0], num_classes, h.training_proportion, c.min_shots, None), feats.shape[0]
        )
        subset = self._select_confident(feats, k_train).flatten().unique()  # (<= C*K_t,)
        tfup = tfup_logits(feats, self.class_weights, self.cache_keys, self.cache_values, c.alpha, c.beta, self.logit_scale,
                           c.temperature)
        in_subset = torch.zeros(feats.shape[0], dtype=torch.bool)
        in_subset[subset] = True
        self.register_buffer("warmup_mask", in_subset, persistent=False)  # (N,)
        self.register_buffer("pseudo_labels", tfup.argmax(-1), persistent=False)  # (N,)

    # -- the adapted heads -------------------------------------------------------------------------
    def adapted_text(self) -> Tensor:
        """W' = normalize(text_ratio W + (1 - text_ratio) R): (C, D)."""
        r = self.hparams.text_ratio
        return F.normalize(r * self.class_weights + (1 - r) * self.text_residual, dim=-1)  # (C, D)

    def adapted_image(self, features: Tensor) -> Tensor:
        """f' = normalize(adapter_ratio A(f) + (1 - adapter_ratio) f), f normalised: (B, D) -> (B, D)."""
        a = self.hparams.adapter_ratio
        f = F.normalize(features, dim=-1)
        return F.normalize(a * self.adapter(f) + (1 - a) * f, dim=-1)  # (B, D)

    def forward(self, features: Tensor) -> Tensor:
        """Evaluation logits as the authors score TFUP-T: 100 f' W'^T (no cache). (B, D) -> (B, C)."""
        return self.logit_scale * self.adapted_image(features) @ self.adapted_text().T

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Warm-up cross-entropy on the selected subset, then confident-sample CE minus the marginal entropy."""
        h, c = self.hparams, self.cache
        text = self.adapted_text()  # (C, D)
        strong = self.logit_scale * self.adapted_image(batch["strong_features"]) @ text.T  # (B, C)
        index = batch["index"]
        if self.current_epoch < h.warmup_epochs:
            member = self.warmup_mask[index]  # (B,)
            loss = F.cross_entropy(strong[member], self.pseudo_labels[index][member]) if member.any() else strong.sum() * 0
            self.log("train/warmup_ce", loss, prog_bar=True)
            return loss
        with torch.no_grad():
            weak_f = self.adapted_image(batch["features"])  # (B, D)
            keys = self.adapted_image(self.cache_keys)  # (C*K, D)
            affinity = multi_level_similarity(weak_f, keys, text, c.temperature)  # (B, C*K)
            weak = self.logit_scale * weak_f @ text.T + c.alpha * cache_logits(affinity, self.cache_values, c.beta)
            confidence, target = weak.softmax(-1).max(-1)  # (B,), (B,)
            confident = confidence > h.confidence_threshold  # (B,)
        ce = F.cross_entropy(strong[confident], target[confident]) if confident.any() else strong.sum() * 0
        marginal = marginal_entropy(strong)
        loss = ce - h.marginal_weight * marginal
        self.log_dict(
            {"train/ce": ce, "train/marginal_entropy": marginal, "train/confident_fraction": confident.float().mean()},
            prog_bar=True,
        )
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record which class wrote the checkpoint."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """AdamW over the adapter and the text residual, cosine-annealed per step."""
        h = self.hparams
        params = list(self.adapter.parameters()) + [self.text_residual]
        optimizer = torch.optim.AdamW(params, lr=h.lr, eps=h.adam_eps, weight_decay=h.weight_decay)
        # the authors' T_max counts the warm-up loader's steps while the main phase runs the larger
        # loader; we anneal over the real number of optimiser steps
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
