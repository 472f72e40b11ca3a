"""Dual encoders (CLIP-like image + text towers) behind one small interface, built by
``create_backbone(name, **overrides)`` over a dict of presets.

Presets and names accepted:
- ``"tiny-random"``: a random open_clip CLIP of a few hundred thousand parameters (tests, no download).
- ``"offline-lite0-minilm"``: EfficientNet-Lite0 (ImageNet) image tower + all-MiniLM-L6-v2 text tower,
  both from PyPI packages, aligned without any image by a ridge map from MiniLM embeddings of the 1000
  ImageNet class prompts to the rows of EfficientNet's ImageNet classifier (see ``OfflineLite0MiniLM``).
- open_clip architectures with a pretrained tag, ``"ViT-B-32/openai"`` or ``"open_clip:ViT-B-16/laion2b_s34b_b88k"``
  (downloads on first use: the path for users with internet).
- a local open_clip checkpoint file: ``create_backbone("/path/ckpt.pt", arch="ViT-B-32")``.
- a local Hugging Face CLIP directory (``config.json`` of a ``CLIPModel``) or a hub id
  ``"hf:openai/clip-vit-base-patch32"``.

Every backbone exposes ``encode_image(images (B,3,H,W)) -> (B,D)``, ``encode_text(list[str]) -> (T,D)``
(both unnormalised), ``preprocess`` (PIL -> tensor), ``train_preprocess``, ``embed_dim``, ``logit_scale``
and ``fingerprint`` (identity of weights + preprocessing, used to key feature caches).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlkit.cache import atomic_torch_save, cache_root
from vlkit.errors import ConfigError, closest_names
from vlkit.functional.ridge import ridge_fit
from vlkit.models.clip_text import cuts_at_eot, encode_text_cut_at_eot
from vlkit.models.clip_tokenizer import fast_clip_tokenizer
from vlkit.models.pretrained import efficientnet_lite0_weights_path, load_efficientnet_lite0, minilm_dir
from vlkit.models.text_encoders import MeanPoolTextEncoder

__all__ = ["DualEncoder", "create_backbone", "list_backbones", "PRESETS"]


class DualEncoder(nn.Module):
    """Base class: an image tower and a text tower mapping into one D-dimensional space."""

    embed_dim: int
    logit_scale: float = 100.0
    fingerprint: str
    preprocess: Callable
    train_preprocess: Callable

    def encode_image(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, D)
        """Image features, unnormalised: (B, 3, H, W) -> (B, D)."""
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> Tensor:  # T strings -> (T, D)
        """Text features, unnormalised: T strings -> (T, D)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """The device of the encoder's parameters."""
        return next(self.parameters()).device

    def _check_texts(self, texts) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be a non-empty sequence of str, got {type(texts).__name__} {texts[:3]!r}")
        return texts


def _clip_transforms(image_size: int, mean, std) -> tuple[Callable, Callable]:
    from torchvision import transforms as T

    norm = T.Normalize(mean, std)
    to_rgb = T.Lambda(lambda im: im.convert("RGB"))
    eval_tf = T.Compose(
        [to_rgb, T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size), T.ToTensor(), norm]
    )
    # TFUP-T's strong view: random resized crop + flip (the authors' train transforms)
    train_tf = T.Compose(
        [
            to_rgb,
            T.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            norm,
        ]
    )
    return eval_tf, train_tf


class OpenClipEncoder(DualEncoder):
    """Any open_clip model (pretrained tag, local checkpoint or random init)."""

    def __init__(self, model: nn.Module, tokenizer, preprocess, train_preprocess, fingerprint: str) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = fast_clip_tokenizer(tokenizer)  # open_clip's CLIP tokenizer: same ids, faster
        self._cuts_at_eot: bool | None = None  # vlkit.models.clip_text.cuts_at_eot(model), on first encode_text
        self.preprocess = preprocess
        self.train_preprocess = train_preprocess
        self.fingerprint = fingerprint
        self.embed_dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") else int(
            model.visual.output_dim
        )
        self.logit_scale = float(model.logit_scale.exp().clamp(max=100).item()) if hasattr(model, "logit_scale") else 100.0

    def encode_image(self, images: Tensor) -> Tensor:
        """open_clip's image tower: (B, 3, H, W) -> (B, D)."""
        return self.model.encode_image(images)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """open_clip's tokenizer (one call for all texts) and text tower (``batch_size`` rows a pass): T strings -> (T, D).

        A plain CLIP text tower (causal, pooled at the end-of-text token) runs each batch only up to its
        last end-of-text position (``vlkit.models.clip_text``); any other tower runs ``model.encode_text``.
        """
        tokens = self.tokenizer(self._check_texts(texts)).to(self.device)  # (T, L)
        if self._cuts_at_eot is None:  # decided once per model, on first use (a two-row probe pass)
            self._cuts_at_eot = cuts_at_eot(self.model)
        if self._cuts_at_eot and tokens.shape[1] == self.model.positional_embedding.shape[0]:
            # plain CLIP tower: rows sorted by length, each batch cut after its last EOT
            return encode_text_cut_at_eot(self.model, tokens, batch_size)  # (T, D)
        return torch.cat([self.model.encode_text(chunk) for chunk in tokens.split(batch_size)])  # (T, D)


class HFClipEncoder(DualEncoder):
    """A Hugging Face ``CLIPModel`` from a local directory or a hub id."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from transformers import CLIPModel, CLIPTokenizerFast

        self.model = CLIPModel.from_pretrained(path).eval()
        self.tokenizer = CLIPTokenizerFast.from_pretrained(path)
        size = self.model.config.vision_config.image_size
        self.preprocess, self.train_preprocess = _clip_transforms(
            size, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        )
        self.embed_dim = int(self.model.config.projection_dim)
        self.logit_scale = float(self.model.logit_scale.exp().clamp(max=100).item())
        self.fingerprint = f"hf-clip:{path}"

    def encode_image(self, images: Tensor) -> Tensor:
        """CLIPModel image features: (B, 3, H, W) -> (B, D)."""
        return self.model.get_image_features(pixel_values=images)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """CLIPModel text features: T strings -> (T, D)."""
        batch = self.tokenizer(self._check_texts(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.model.get_text_features(**batch)


# Templates used to embed the ImageNet class names when fitting the offline text->image map, and the
# ridge strength. Chosen on 1,000 Fashion-MNIST *train* images (never test): 1 template, lambda 0.01
# gave 36.8% vs 36.0-36.5% for 7 templates or lambda 0.1 / 1 (docs/papers.md, "offline preset").
OFFLINE_ALIGN_TEMPLATES = ("a photo of a {}.",)
OFFLINE_RIDGE_LAMBDA = 0.01


class OfflineLite0MiniLM(DualEncoder):
    """A CLIP-like dual encoder from two packaged pretrained towers, aligned without images.

    Image tower: EfficientNet-Lite0's pooled 1280-d features. Text tower: MiniLM sentence embedding t
    (384-d, L2-normalised) mapped into the image space by ``M`` (384 x 1280), fitted in closed form by
    ridge regression min ||T M - W||^2 + lam ||M||^2, where T stacks the MiniLM embeddings of the 1000
    ImageNet class prompts (template-averaged) and W the rows of EfficientNet's ImageNet classifier,
    each normalised to unit length. A class prompt then lands near the classifier row of the ImageNet
    classes it resembles, so cos(image feature, text embedding) acts as a zero-shot logit.
    Image preprocessing follows timm's settings for this model (bicubic 224, mean = std = 0.5).

    Args:
        ridge_lambda: ridge strength lam of the text -> image map, > 0.
        templates: prompt templates (one ``{}`` each) averaged per ImageNet class when fitting the map.
        image_size: side of the square input images.
        cache_dir: folder of the fitted map (None: ``<cache root>/backbones``, see ``vlkit.cache``).
    """

    def __init__(
        self,
        ridge_lambda: float = OFFLINE_RIDGE_LAMBDA,
        templates: Sequence[str] = OFFLINE_ALIGN_TEMPLATES,
        image_size: int = 224,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if ridge_lambda <= 0:
            raise ValueError(f"ridge_lambda must be > 0, got {ridge_lambda}")
        self.image_tower = load_efficientnet_lite0(num_classes=0).eval()  # pooled (B, 1280)
        self.text_tower = MeanPoolTextEncoder(minilm_dir())  # all-MiniLM-L6-v2, (T, 384) unit-norm
        self.embed_dim = int(self.image_tower.num_features)
        self.logit_scale = 100.0
        self.preprocess, self.train_preprocess = _clip_transforms(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        weights_file = efficientnet_lite0_weights_path()
        key = json.dumps(
            {
                "weights": [weights_file.name, weights_file.stat().st_size],
                "text": str(minilm_dir().name),
                "lambda": ridge_lambda,
                "templates": list(templates),
                "version": 2,
            },
            sort_keys=True,
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        self.fingerprint = f"offline-lite0-minilm-{digest}-img{image_size}"
        cache = Path(cache_dir) if cache_dir else cache_root("backbones")
        path = cache / f"offline-lite0-minilm-{digest}.pt"
        projection = self._load_or_fit(path, ridge_lambda, list(templates))
        self.register_buffer("text_projection", projection)  # (384, 1280)

    def _load_or_fit(self, path: Path, ridge_lambda: float, templates: list[str]) -> Tensor:
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                projection = blob["text_projection"]
                if projection.shape == (self.text_tower.dim, self.embed_dim) and torch.isfinite(projection).all():
                    return projection
            except Exception:  # corrupt cache: rebuild below
                pass
        from open_clip import IMAGENET_CLASSNAMES

        classifier = load_efficientnet_lite0().classifier.weight.detach()  # (1000, 1280)
        texts = [t.format(name) for name in IMAGENET_CLASSNAMES for t in templates]
        emb = self.text_tower(texts).view(len(IMAGENET_CLASSNAMES), len(templates), -1)  # (1000, n_tpl, 384)
        emb = F.normalize(emb.mean(1), dim=-1)  # (1000, 384)
        target = F.normalize(classifier, dim=-1)  # (1000, 1280)
        projection = ridge_fit(emb, target, ridge_lambda)  # (384, 1280)
        atomic_torch_save({"text_projection": projection}, path)
        return projection

    def encode_image(self, images: Tensor) -> Tensor:
        """EfficientNet-Lite0's pooled features: (B, 3, H, W) -> (B, 1280)."""
        return self.image_tower(images)  # (B, 1280)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """MiniLM sentence embeddings mapped into the image space: T strings -> (T, 1280)."""
        emb = self.text_tower(self._check_texts(texts))  # (T, 384)
        return emb @ self.text_projection  # (T, 1280)


_TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _tiny_random(seed: int = 0, **_unused) -> DualEncoder:
    import open_clip

    with torch.random.fork_rng(devices=[]):  # seeded weights without resetting the caller's RNG
        torch.manual_seed(seed)
        model = open_clip.CLIP(**_TINY_CLIP_CFG)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=_TINY_CLIP_CFG["text_cfg"]["context_length"])
    pre, train_pre = _clip_transforms(32, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    return OpenClipEncoder(model, tokenizer, pre, train_pre, fingerprint=f"tiny-random-seed{seed}")


def _offline(ridge_lambda: float = OFFLINE_RIDGE_LAMBDA, image_size: int = 224, cache_dir: str | None = None) -> DualEncoder:
    return OfflineLite0MiniLM(ridge_lambda=ridge_lambda, image_size=image_size, cache_dir=cache_dir)


def _check_open_clip_arch(arch: str) -> None:
    import open_clip

    known = open_clip.list_models()
    if arch not in known:
        close = closest_names(arch, known)
        hint = f" (closest: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"arch must be an open_clip architecture (open_clip.list_models()), got {arch!r}{hint}", argument="arch"
        )


def _summarise_load_error(error: Exception) -> str:
    """One line from torch's multi-line ``load_state_dict`` error: counts of missing, unexpected and
    mis-shaped tensors with an example of each."""
    text = str(error)
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*)"), ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)")):
        match = re.search(pattern, text)
        if match:
            keys = re.findall(r'"([^"]+)"', match.group(1))
            parts.append(f"{len(keys)} {label} tensors (e.g. {keys[0]!r})" if keys else f"{label} tensors")
    shapes = re.findall(r"size mismatch for ([^:]+):", text)
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]!r})")
    return ", ".join(parts) if parts else (text.strip().splitlines() or [type(error).__name__])[0]


def _open_clip(arch: str, pretrained: str | None = None, **kwargs) -> DualEncoder:
    import open_clip

    _check_open_clip_arch(arch)
    if pretrained and os.path.isfile(pretrained):
        # open_clip loads a local file strictly (every tensor present, every shape equal) with
        # torch.load(weights_only=True); its errors become one ConfigError naming the file and the arch
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, weights_only=True, **kwargs)
        except pickle.UnpicklingError:
            raise ConfigError(
                f"backbone checkpoint {pretrained!r} holds objects other than tensors and plain values, which the kit "
                "refuses to unpickle (weights_only=True)",
                argument="backbone",
            ) from None
        except (RuntimeError, KeyError, StopIteration, AttributeError, EOFError, ValueError) as error:
            raise ConfigError(
                f"backbone checkpoint {pretrained!r} does not match architecture {arch!r}: {_summarise_load_error(error)}",
                argument="backbone",
            ) from None
        digest = hashlib.sha1(f"{pretrained}:{os.path.getsize(pretrained)}:{os.path.getmtime(pretrained)}".encode()).hexdigest()[:12]
        fingerprint = f"open_clip:{arch}:file-{digest}"
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained and pretrained not in tags:
            close = closest_names(pretrained, tags)
            raise ConfigError(
                f"the pretrained tag of open_clip architecture {arch!r} must be one of its {len(tags)} tags "
                f"(open_clip.list_pretrained_tags_by_model({arch!r})) or an existing checkpoint file, got "
                f"{pretrained!r}{' (closest: ' + ', '.join(close) + ')' if close else ''}",
                argument="backbone",
            )
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, **kwargs)
        fingerprint = f"open_clip:{arch}:{pretrained}"
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    _, train_pre = _clip_transforms(size, mean, std)
    return OpenClipEncoder(model, open_clip.get_tokenizer(arch), preprocess, train_pre, fingerprint)


# Named presets: builder + fixed arguments. Users' real models go through open_clip tags below.
PRESETS: dict[str, tuple[Callable[..., DualEncoder], dict]] = {
    "tiny-random": (_tiny_random, {}),
    "offline-lite0-minilm": (_offline, {}),
    "ViT-B-32/openai": (_open_clip, {"arch": "ViT-B-32", "pretrained": "openai"}),
    "ViT-B-16/openai": (_open_clip, {"arch": "ViT-B-16", "pretrained": "openai"}),
    "ViT-L-14/openai": (_open_clip, {"arch": "ViT-L-14", "pretrained": "openai"}),
    "RN50/openai": (_open_clip, {"arch": "RN50", "pretrained": "openai"}),
    "ViT-B-16/laion2b": (_open_clip, {"arch": "ViT-B-16", "pretrained": "laion2b_s34b_b88k"}),
}


def list_backbones() -> list[str]:
    """The preset names ``create_backbone`` accepts (besides open_clip tags, files and directories)."""
    return sorted(PRESETS)


_INSTANCES: dict[str, DualEncoder] = {}


def _names_open_clip_arch(name: str) -> bool:
    """Whether ``name`` reads ``"<arch>/<tag>"`` with an open_clip architecture before the slash."""
    arch, slash, tag = name.partition("/")
    if not slash or not arch or not tag or "/" in tag:
        return False
    import open_clip

    return arch in open_clip.list_models()


def create_backbone(name: str, **overrides) -> DualEncoder:
    """Build a frozen dual encoder by preset name, open_clip tag, checkpoint file or HF directory.

    Examples: ``create_backbone("offline-lite0-minilm")``, ``create_backbone("tiny-random", seed=1)``,
    ``create_backbone("open_clip:ViT-B-32/laion2b_s34b_b79k")``,
    ``create_backbone("/ckpts/clip.pt", arch="ViT-B-32")``, ``create_backbone("/models/clip-vit-b32")``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    # frozen encoders are shared within a process: a notebook comparing methods builds each once
    memo_key = f"{name}|{sorted(overrides.items())!r}"
    if memo_key in _INSTANCES:
        return _INSTANCES[memo_key]
    # building initialises weights at random before loading them (timm, open_clip, transformers): do it in a
    # forked RNG, so creating a backbone never shifts the caller's seeded stream (a method's results must not
    # depend on whether a backbone was already built in this process)
    with torch.random.fork_rng(devices=[]):
        backbone = _build_backbone(name, dict(overrides))
    for p in backbone.parameters():
        p.requires_grad_(False)
    _INSTANCES[memo_key] = backbone.eval()
    return backbone


def _build_backbone(name: str, overrides: dict) -> DualEncoder:
    """The uncached part of :func:`create_backbone`: resolve ``name`` and build the encoder."""
    # order: preset names, the explicit prefixes, then what is on disk, then a bare open_clip
    # "<arch>/<tag>"; a name that is none of these is refused naming the closest presets
    if name in PRESETS:
        builder, fixed = PRESETS[name]
        backbone = builder(**{**fixed, **overrides})
    elif name.startswith("open_clip:"):
        arch, _, tag = name.removeprefix("open_clip:").partition("/")
        backbone = _open_clip(arch, tag or None, **overrides)
    elif name.startswith("hf:"):
        backbone = HFClipEncoder(name.removeprefix("hf:"))
    elif os.path.isfile(name):
        if "arch" not in overrides:
            raise ConfigError(
                f"arch must name the open_clip architecture of checkpoint file {name!r}, got none: "
                f"create_backbone({name!r}, arch='ViT-B-32')",
                argument="arch",
            )
        arch = overrides.pop("arch")
        backbone = _open_clip(arch, name, **overrides)
    elif os.path.isdir(name):
        if not (Path(name) / "config.json").exists():
            raise ConfigError(
                f"backbone directory {name!r} must hold the config.json of a Hugging Face CLIPModel, got none",
                argument="backbone",
            )
        backbone = HFClipEncoder(name)
    elif _names_open_clip_arch(name):  # "<arch>/<tag>": _open_clip checks the tag
        arch, _, tag = name.partition("/")
        backbone = _open_clip(arch, tag, **overrides)
    else:
        close = closest_names(name, list_backbones())
        hint = f"closest presets: {', '.join(close)}; " if close else ""
        what = "no preset, open_clip <arch>/<tag>, file or directory of that name" if "/" in name else "unknown backbone"
        raise ConfigError(
            f"backbone must be a preset, 'open_clip:<arch>/<tag>', '<arch>/<tag>', 'hf:<id>', an existing checkpoint "
            f"file or a Hugging Face directory, got {name!r}: {what} ({hint}all presets: {', '.join(list_backbones())})",
            argument="backbone",
        )
    return backbone
