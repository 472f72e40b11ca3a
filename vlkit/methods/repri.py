"""RePRI (Boudiaf et al., CVPR 2021, arXiv 2012.06166) as Lightning modules.

- :class:`LitRePRI`: transductive inference on frozen dense features, nothing trained. Run it with
  ``vlkit test --config configs/vlkit/repri/fashion_scenes_1shot.yaml`` (``validate`` scores the
  held-out validation episodes). It scores, on the same episodes, any of three variants:

  * ``prototype``: the inductive baseline (nearest of the support foreground/background prototypes);
  * ``repri``: the transductive classifier with the authors' defaults;
  * ``oracle``: RePRI with the true query foreground proportion (the authors' oracle script: 300
    iterations, weights 1, 1, 0.1).

  Metrics: ``<stage>/miou_<variant>`` (class-wise mIoU, mean over folds), ``<stage>/fbiou_<variant>``
  (FB-IoU, mean over folds), the same per fold as ``<stage>/fold<f>/...``, and
  ``<stage>/proportion_error_repri`` (mean |pi_repri - pi_true| at the end of the optimisation) and
  ``<stage>/episodes`` (episodes scored). Every one is computed from torchmetrics states reduced over ranks, over
  episodes that each rank scores once (``vlkit.data.sharding``), so N ranks report what 1 rank does.

- :class:`LitRePRIBaseTraining`: the optional base training (``vlkit fit``) of a segmentation head on the
  fold's base classes over the frozen backbone; ``LitRePRI(head_checkpoint=...)`` then runs on the head's
  bottleneck features, the paper's setting (the authors train the whole PSPNet).

Protocols (``protocol``):
  * ``"strict"`` (default): the transductive terms see the query's padding mask (image geometry), never its
    label; predictions are scored at the label's original resolution.
  * ``"paper"``: the authors' inference: the query label's ``!= 255`` mask inside the loss and the proportion
    estimate, and scoring on the resized, padded label.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassJaccardIndex

from vlkit.checkpoints import load_checkpoint, record_class
from vlkit.data.dense_features import DenseFeatureCache
from vlkit.data.episodes import fold_classes
from vlkit.errors import (
    ConfigError,
    check_choice,
    check_finite_tensor,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
)
from vlkit.functional.repri import (
    IGNORE_INDEX,
    check_repri_settings,
    downsample_mask,
    oracle_foreground_proportion,
    prototype_baseline,
    repri_fit,
    upsample_logits,
)
from vlkit.models.dense import SegmentationHead, create_dense_backbone

__all__ = ["LitRePRI", "LitRePRIBaseTraining", "VARIANTS"]

VARIANTS = ("prototype", "repri", "oracle")


def _build_backbone(backbone: str, out_indices: list[int] | None) -> nn.Module:
    overrides = {} if out_indices is None else {"out_indices": tuple(out_indices)}
    return create_dense_backbone(backbone, **overrides)


class LitRePRI(L.LightningModule):
    """RePRI transductive few-shot segmentation (test-time only).

    Args:
        backbone: dense backbone preset (``lite0-offline``, ``tiny-random``, ``timm:<name>``,
            ``open_clip:<arch>/<tag>``; see ``vlkit.models.dense``).
        out_indices: feature levels for timm backbones, distinct ints >= 0 (None: the preset's default, (2, 3)
            for lite0).
        head_checkpoint: a ``LitRePRIBaseTraining`` checkpoint; RePRI then runs on its bottleneck features.
        temperature: tau in ``tau * cos``, > 0 (authors: 20).
        lr: SGD learning rate on (prototype, bias), > 0 (authors: 0.025).
        iterations: the authors' ``adapt_iter``, an int >= 1 (50 = 49 SGD steps).
        ce_weight: lambda_CE, >= 0 (1).
        kl_weight: lambda_KL, >= 0; None = 1/K (the authors' ``'auto'``).
        entropy_weight: lambda_H, >= 0; None = 1/K (the authors' ``'auto'``).
        proportion_update_at: the authors' ``FB_param_update``, ints >= 1 ([10]).
        kl_boost: added to lambda_KL at each proportion update, >= 0 (authors: 1).
        variants: which of ``prototype``, ``repri``, ``oracle`` to score on the same episodes.
        oracle_iterations: iterations of the oracle variant, an int >= 1 (authors' oracle script: 300).
        oracle_weights: (lambda_CE, lambda_KL, lambda_H) of the oracle variant, each >= 0 (authors: 1, 1, 0.1).
        protocol: ``"strict"`` or ``"paper"`` (see the module docstring).
        feature_cache: keep backbone features of pool images (float16, in memory and on disk under the kit's
            cache root ``$VLKIT_CACHE/repri_features/``, keyed by backbone and pool fingerprints and image size,
            written atomically; a corrupt file is rebuilt: ``vlkit.data.dense_features``), so each image is
            encoded once across episodes and runs. Only inside ``vlkit test``/``validate``.
        encode_batch_size: images per backbone forward, an int >= 1.
    """

    def __init__(
        self,
        backbone: str = "lite0-offline",
        out_indices: list[int] | None = None,
        head_checkpoint: str | None = None,
        temperature: float = 20.0,
        lr: float = 0.025,
        iterations: int = 50,
        ce_weight: float = 1.0,
        kl_weight: float | None = None,
        entropy_weight: float | None = None,
        proportion_update_at: list[int] = [10],  # noqa: B006 (jsonargparse needs a literal default)
        kl_boost: float = 1.0,
        variants: list[str] = ["prototype", "repri", "oracle"],  # noqa: B006
        oracle_iterations: int = 300,
        oracle_weights: list[float] = [1.0, 1.0, 0.1],  # noqa: B006
        protocol: str = "strict",
        feature_cache: bool = True,
        encode_batch_size: int = 64,
    ) -> None:
        super().__init__()
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants or isinstance(variants, str):
            raise ConfigError(f"variants must be a non-empty subset of {VARIANTS}, got {variants!r}", argument="variants")
        check_choice("protocol", protocol, ("strict", "paper"))
        if isinstance(oracle_weights, str) or len(oracle_weights) != 3:
            raise ConfigError(
                f"oracle_weights must be 3 values (ce, kl, entropy) >= 0, got {oracle_weights!r}", argument="oracle_weights"
            )
        for w in oracle_weights:
            check_non_negative("oracle_weights", w)
        if out_indices is not None:
            if isinstance(out_indices, (str, int)) or not out_indices or len(set(out_indices)) != len(out_indices):
                raise ConfigError(
                    f"out_indices must be None or a non-empty list of distinct ints >= 0, got {out_indices!r}",
                    argument="out_indices",
                )
            for i in out_indices:
                check_int("out_indices", i, low=0)
        check_repri_settings(temperature, lr, iterations, ce_weight, kl_weight, entropy_weight, proportion_update_at,
                             kl_boost)
        check_int("oracle_iterations", oracle_iterations, low=1)
        check_int("encode_batch_size", encode_batch_size, low=1)
        self.save_hyperparameters()
        self.backbone = _build_backbone(backbone, out_indices)
        self.head: SegmentationHead | None = None
        if head_checkpoint is not None:
            self.head = LitRePRIBaseTraining.load_head(head_checkpoint, self.backbone.out_channels)
            for p in self.head.parameters():
                p.requires_grad_(False)
        self._feature_caches: dict[str, DenseFeatureCache] = {}  # pool fingerprint -> its cache (kept across stages)
        self._feature_cache: DenseFeatureCache | None = None  # the one of the running stage
        self._metrics: nn.ModuleDict | None = None
        # mean |pi_repri - pi_true| over the episodes of every rank (torchmetrics "sum" states, reduced at compute)
        self.proportion_error = MeanMetric()
        self.scored_episodes = SumMetric()  # episodes scored on every rank: the data's count, none twice

    # -- features ------------------------------------------------------------------------------------------

    @property
    def mean(self):
        """The backbone's input normalisation mean (per channel), handed to the DataModule."""
        return self.backbone.mean

    @property
    def std(self):
        """The backbone's input normalisation std (per channel), handed to the DataModule."""
        return self.backbone.std

    def _embed(self, backbone_features: Tensor) -> Tensor:
        feats = backbone_features if self.head is None else self.head.eval().embed(backbone_features)
        return F.normalize(feats, dim=1)  # the authors L2-normalise features along channels

    def _backbone_features(self, images: Tensor, keys: Tensor | None) -> Tensor:
        """(N, 3, S, S) -> (N, D, h, w); pool images (``keys`` given) go through the cache."""
        bs = self.hparams.encode_batch_size
        if keys is None or self._feature_cache is None:  # no pool (or no cache): nothing to key on
            return torch.cat([self.backbone(images[i : i + bs]) for i in range(0, len(images), bs)])
        return self._feature_cache.encode(images, keys.tolist(), self.backbone, bs)  # (N, D, h, w)

    def _open_cache(self, split: str) -> None:
        """Select (and load from disk, see ``vlkit.data.dense_features``) the feature cache of ``split``'s pool."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not self.hparams.feature_cache or dm is None or not hasattr(dm, "pool_fingerprint"):
            self._feature_cache = None
            return
        fingerprint = dm.pool_fingerprint(split)
        cache = self._feature_caches.get(fingerprint)
        if cache is None:
            cache = DenseFeatureCache(self.backbone.fingerprint, fingerprint, image_size=getattr(dm, "image_size", None))
            self._feature_caches[fingerprint] = cache
        cache.load()
        self._feature_cache = cache

    def _close_cache(self) -> None:
        """Write the running stage's new features to disk (atomically; nothing when nothing is new)."""
        if self._feature_cache is not None:
            self._feature_cache.save()

    # -- inference -----------------------------------------------------------------------------------------

    def segment(self, batch: dict[str, Tensor], variants: list[str] | None = None) -> dict[str, Tensor]:
        """Run the variants on a batch of episodes (keys of ``vlkit.data.episodes``).

        Returns, per variant v, ``logits_<v>``: the foreground logit (B, 1, h, w) at feature resolution
        (foreground where > 0), and for ``repri`` also ``proportion_repri`` (B,) and ``proportion_init`` (B,).
        """
        variants = list(self.hparams.variants if variants is None else variants)
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"variants must be a subset of {VARIANTS}, got {variants!r}", argument="variants")
        hp = self.hparams
        missing = [k for k in ("support_images", "support_masks", "query_image", "query_valid") if k not in batch]
        if missing:
            raise ConfigError(f"batch must hold the episode keys of vlkit.data.episodes, missing {missing}", argument="batch")
        s_img, q_img = batch["support_images"], batch["query_image"]  # (B, K, 3, S, S), (B, 1, 3, S, S)
        if s_img.dim() != 5 or q_img.dim() != 5 or q_img.shape[1] != 1 or s_img.shape[0] != q_img.shape[0]:
            raise ConfigError(
                f"support_images must be (B, K, 3, S, S) and query_image (B, 1, 3, S, S), got {tuple(s_img.shape)} "
                f"and {tuple(q_img.shape)}",
                argument="support_images",
            )
        # before the backbone: one NaN pixel would silently turn the whole episode's prediction into noise
        check_finite_tensor("support_images", s_img)
        check_finite_tensor("query_image", q_img)
        b, k = s_img.shape[:2]
        s_keys = batch.get("support_index")
        q_keys = batch.get("query_index")
        s_feat = self._backbone_features(s_img.flatten(0, 1), None if s_keys is None else s_keys.flatten())
        q_feat = self._backbone_features(q_img.flatten(0, 1), None if q_keys is None else q_keys.flatten())
        s_feat = self._embed(s_feat).unflatten(0, (b, k))  # (B, K, D, h, w)
        q_feat = self._embed(q_feat).unflatten(0, (b, 1))  # (B, 1, D, h, w)
        size = tuple(s_feat.shape[-2:])
        s_masks = downsample_mask(batch["support_masks"], size)  # (B, K, h, w)
        if hp.protocol == "paper" and "query_mask" in batch:
            q_valid = downsample_mask(batch["query_mask"], size) != IGNORE_INDEX  # label-derived (authors)
        else:
            q_valid = downsample_mask(batch["query_valid"], size)  # (B, 1, h, w) geometry only
        out: dict[str, Tensor] = {}
        if "prototype" in variants:
            out["logits_prototype"] = prototype_baseline(s_feat, s_masks, q_feat, hp.temperature)
        if "repri" in variants:
            res = repri_fit(
                s_feat, s_masks, q_feat, q_valid, hp.temperature, hp.lr, hp.iterations, hp.ce_weight,
                hp.kl_weight, hp.entropy_weight, tuple(hp.proportion_update_at), hp.kl_boost,
            )  # fmt: skip
            out["logits_repri"] = res.query_logits - res.bias[:, None, None, None]
            out["proportion_repri"] = res.proportion_final
            out["proportion_init"] = res.proportion_init
        if "oracle" in variants:
            if "query_mask" not in batch:
                raise ConfigError(
                    "the oracle variant needs the query label (batch key 'query_mask'), got a batch without it",
                    argument="variants",
                )
            q_small = downsample_mask(batch["query_mask"], size)  # (B, 1, h, w)
            truth = oracle_foreground_proportion(q_small)  # (B,)
            ce_w, kl_w, h_w = hp.oracle_weights
            res = repri_fit(
                s_feat, s_masks, q_feat, q_valid, hp.temperature, hp.lr, hp.oracle_iterations, ce_w, kl_w, h_w,
                (), 0.0, oracle_proportion=truth,
            )  # fmt: skip
            out["logits_oracle"] = res.query_logits - res.bias[:, None, None, None]
            out["proportion_true"] = truth
        return out

    def predictions(self, logits: Tensor, batch: dict[str, Tensor]) -> list[Tensor]:
        """Foreground masks per episode at the scoring resolution: the original label size (strict) or the
        padded input size (paper). logits (B, 1, h, w) -> B bool tensors (H0, W0) or (S, S)."""
        s = batch["query_image"].shape[-1]
        up = upsample_logits(logits, (s, s))[:, 0]  # (B, S, S)
        if self.hparams.protocol == "paper":
            return list(up > 0)
        preds = []
        for i in range(len(up)):
            rh, rw = batch["query_resized_size"][i].tolist()
            h0, w0 = batch["query_size"][i].tolist()
            crop = up[i, :rh, :rw]  # the image area of the padded input
            if (rh, rw) != (h0, w0):
                crop = F.interpolate(crop[None, None], size=(h0, w0), mode="bilinear", align_corners=False)[0, 0]
            preds.append(crop > 0)
        return preds

    # -- Lightning hooks ------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Connect the DataModule to the backbone's normalisation and build the per-variant IoU metrics."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "connect"):
            dm.connect(mean=self.mean, std=self.std)
        if dm is not None and hasattr(dm, "pool"):
            num_classes = dm.pool("test" if stage in ("test", "predict") else "val").num_classes
            folds = list(dm.folds)
        else:
            num_classes, folds = 1000, [0]
        self._folds = folds
        metrics = {}
        for v in self.hparams.variants:
            metrics[f"{v}_class"] = MulticlassJaccardIndex(
                num_classes + 1, average="none", ignore_index=IGNORE_INDEX, zero_division=float("nan")
            )  # NaN for classes without episodes, left out of the mean
            for f in folds:
                metrics[f"{v}_fb{f}"] = MulticlassJaccardIndex(2, average="macro", ignore_index=IGNORE_INDEX)
        self._metrics = nn.ModuleDict(metrics)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the writing class in the checkpoint (``vlkit.checkpoints``)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """No optimiser: RePRI trains nothing across episodes."""
        return None  # RePRI trains nothing; its per-episode SGD lives in vlkit.functional.repri

    def _eval_step(self, batch: dict[str, Tensor]) -> None:
        out = self.segment(batch)
        targets = self._targets(batch)
        self.scored_episodes.update(float(len(targets)))
        for v in self.hparams.variants:
            preds = self.predictions(out[f"logits_{v}"], batch)
            for i, (pred, target) in enumerate(zip(preds, targets)):
                c, f = int(batch["class_id"][i]), int(batch["fold"][i])
                pred, target = pred.flatten(), target.flatten()
                labelled = torch.where(target == 1, c + 1, target)  # fg pixels carry the class id + 1
                self._metrics[f"{v}_class"].update(torch.where(pred, c + 1, 0), labelled)
                self._metrics[f"{v}_fb{f}"].update(pred.long(), target)
        if "proportion_repri" in out:
            truth = oracle_foreground_proportion(downsample_mask(batch["query_mask"], out["logits_repri"].shape[-2:]))
            self.proportion_error.update((out["proportion_repri"] - truth).abs())  # (B,)

    def _targets(self, batch: dict[str, Tensor]) -> list[Tensor]:
        if self.hparams.protocol == "paper":
            return list(batch["query_mask"][:, 0])  # (S, S) resized and padded
        out = []
        for i in range(len(batch["query_size"])):
            h0, w0 = batch["query_size"][i].tolist()
            out.append(batch["query_mask_original"][i, :h0, :w0])
        return out

    def _log_epoch(self, stage: str) -> None:
        # every value below comes from torchmetrics states reduced over ranks at compute (confusion matrices and
        # sums): N ranks log what 1 rank does, identical on every rank (no sync_dist)
        dm = self.trainer.datamodule

        for v in self.hparams.variants:
            per_class = self._metrics[f"{v}_class"].compute()  # (C + 1,)
            fold_miou, fold_fb = [], []
            for f in self._folds:
                classes = torch.tensor(fold_classes(dm.dataset, f)) + 1
                fold_miou.append(per_class[classes].nanmean())
                fold_fb.append(self._metrics[f"{v}_fb{f}"].compute())
                self.log(f"{stage}/fold{f}/miou_{v}", fold_miou[-1])
                self.log(f"{stage}/fold{f}/fbiou_{v}", fold_fb[-1])
            self.log(f"{stage}/miou_{v}", torch.stack(fold_miou).mean())
            self.log(f"{stage}/fbiou_{v}", torch.stack(fold_fb).mean())
            self._metrics[f"{v}_class"].reset()
            for f in self._folds:
                self._metrics[f"{v}_fb{f}"].reset()
        if "repri" in self.hparams.variants:
            self.log(f"{stage}/proportion_error_repri", self.proportion_error.compute())
            self.proportion_error.reset()
        self.log(f"{stage}/episodes", self.scored_episodes.compute())
        self.scored_episodes.reset()

    def on_test_start(self) -> None:
        """Open the test pool's dense feature cache."""
        self._open_cache("test")

    def on_validation_start(self) -> None:
        """Open the validation pool's dense feature cache."""
        self._open_cache("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Segment a batch of test episodes with every variant and update the metrics."""
        self._eval_step(batch)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Segment a batch of validation episodes with every variant and update the metrics."""
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        """Log ``test/*`` metrics and write new pool features to the cache."""
        self._log_epoch("test")
        self._close_cache()

    def on_validation_epoch_end(self) -> None:
        """Log ``val/*`` metrics and write new pool features to the cache."""
        self._log_epoch("val")
        self._close_cache()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[Tensor]:
        """RePRI's foreground masks for a batch of episodes (see :meth:`predictions`)."""
        return self.predictions(self.segment(batch, ["repri"])["logits_repri"], batch)


class LitRePRIBaseTraining(L.LightningModule):
    """Base training of a segmentation head on the fold's base classes over a frozen dense backbone.

    Cross-entropy with label smoothing over background + base classes, novel pixels ignored (255), SGD with
    Nesterov momentum and a cosine schedule to 1e-6 as the authors train PSPNet (their lr 0.0025 is for a
    pretrained network; the fresh head here uses ``lr`` 0.01 by default). Logs ``train/loss`` and
    ``val/base_miou`` (mean IoU over background + base classes on held-out scenes: no novel class, no test
    episode is looked at, so checkpoints may be selected on it).

    Args:
        backbone: dense backbone preset, as in :class:`LitRePRI`.
        out_indices: feature levels for timm backbones, as in :class:`LitRePRI`.
        num_base_classes: base classes of the fold, an int >= 1 (8 on Fashion scenes, 15 on PASCAL-5i, 60 on
            COCO-20i).
        bottleneck: channels of the head's embedding, an int >= 1 (the authors' PSPNet: 512).
        lr: SGD learning rate, > 0 (authors: 0.0025 for a pretrained network).
        momentum: Nesterov momentum, in (0, 1) (Nesterov needs > 0; authors: 0.9).
        weight_decay: SGD weight decay, >= 0 (authors: 1e-4).
        label_smoothing: epsilon of the cross-entropy, in [0, 1) (authors: 0.1).
    """

    def __init__(
        self,
        backbone: str = "lite0-offline",
        out_indices: list[int] | None = None,
        num_base_classes: int = 8,
        bottleneck: int = 256,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        check_int("num_base_classes", num_base_classes, low=1)
        check_int("bottleneck", bottleneck, low=1)
        check_positive("lr", lr)
        check_number("momentum", momentum, low=0, high=1, low_open=True, high_open=True)
        check_non_negative("weight_decay", weight_decay)
        check_number("label_smoothing", label_smoothing, low=0, high=1, high_open=True)
        self.save_hyperparameters()
        self.backbone = _build_backbone(backbone, out_indices)
        self.head = SegmentationHead(self.backbone.out_channels, num_base_classes + 1, bottleneck)
        self.val_miou = MulticlassJaccardIndex(num_base_classes + 1, average="macro", ignore_index=IGNORE_INDEX)

    def setup(self, stage: str) -> None:
        """Connect the DataModule's normalisation and check ``num_base_classes`` against the fold."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "connect"):
            dm.connect(mean=self.backbone.mean, std=self.backbone.std)
        if dm is not None and hasattr(dm, "base_classes"):
            n = len(dm.base_classes())
            if n != self.hparams.num_base_classes:
                raise ConfigError(
                    f"num_base_classes must equal the data fold's {n} base classes, got {self.hparams.num_base_classes}",
                    argument="num_base_classes",
                )

    def forward(self, images: Tensor) -> Tensor:
        """Per-pixel logits of the base classes + background: (B, 3, S, S) -> (B, C + 1, S, S)."""
        logits = self.head(self.backbone(images))  # (B, C + 1, h, w)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)  # (B, C + 1, S, S)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Pixel-wise cross-entropy on base-class labels (void pixels ignored); logs ``train/loss``."""
        loss = F.cross_entropy(
            self(batch["image"]), batch["label"], ignore_index=IGNORE_INDEX, label_smoothing=self.hparams.label_smoothing
        )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the base-class mIoU on a validation batch."""
        self.val_miou.update(self(batch["image"]).argmax(1), batch["label"])

    def on_validation_epoch_end(self) -> None:
        """Log ``val/base_miou``."""
        self.log("val/base_miou", self.val_miou.compute())
        self.val_miou.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the writing class in the checkpoint (``vlkit.checkpoints``)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """SGD with Nesterov momentum on the head only, cosine-annealed over the run."""
        hp = self.hparams
        opt = torch.optim.SGD(self.head.parameters(), lr=hp.lr, momentum=hp.momentum, nesterov=True, weight_decay=hp.weight_decay)
        steps = self.trainer.estimated_stepping_batches if self._trainer is not None else 1000
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)), eta_min=1e-6)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @staticmethod
    def load_head(checkpoint: str, in_channels: int) -> SegmentationHead:
        """The trained head of a checkpoint written by ``vlkit fit`` with this module."""
        # weights_only=True; a missing or unreadable file, or another class's checkpoint, is a ConfigError
        ckpt = load_checkpoint(checkpoint, LitRePRIBaseTraining, argument="head_checkpoint")
        hp = ckpt.get("hyper_parameters", {})
        state = {k[len("head.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("head.")}
        if not state:
            raise ConfigError(
                f"head_checkpoint must be a LitRePRIBaseTraining checkpoint, got {checkpoint} (no 'head.*' weights)",
                argument="head_checkpoint",
            )
        got = state["bottleneck.0.weight"].shape[1]
        if got != in_channels:
            raise ConfigError(
                f"head_checkpoint expects {got}-channel features but the backbone gives {in_channels}",
                argument="head_checkpoint",
            )
        head = SegmentationHead(in_channels, hp.get("num_base_classes", state["classifier.weight"].shape[0] - 1) + 1,
                                hp.get("bottleneck", state["classifier.weight"].shape[1]))  # fmt: skip
        head.load_state_dict(state)
        return head.eval()
