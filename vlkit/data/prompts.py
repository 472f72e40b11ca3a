"""Class names, prompt templates and per-class prompt files (the CuPL/DCLIP JSON format:
``{"class name": ["sentence", ...]}``), shared by zero-shot, TFUP and ProAPO."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vlkit.cache import atomic_write_json
from vlkit.errors import ConfigError, check_classnames, check_file  # check_classnames: re-exported here
from vlkit.functional.zeroshot import SIMPLE_TEMPLATE  # re-exported here, with the other templates

__all__ = [
    "SIMPLE_TEMPLATE",
    "imagenet_templates",
    "load_class_prompts",
    "save_class_prompts",
    "check_classnames",
]


def imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates (shipped inside open_clip), as ``str.format`` patterns."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


def load_class_prompts(path: str | os.PathLike, classnames: Sequence[str]) -> dict[str, list[str]]:
    """Read and validate a class -> sentences JSON file for the given class names (in their order).

    The file's classes must be exactly ``classnames``: a missing class and an extra one (usually a
    misspelt or foreign class name) both raise ConfigError naming them."""
    names = check_classnames(classnames)
    path = check_file("class_prompts_file", path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"class_prompts_file {str(path)!r} must be valid JSON, got a file that is not valid JSON: {err}",
                          argument="class_prompts_file") from err
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"class_prompts_file {str(path)!r} must hold a non-empty object class -> list of sentences, "
            f"got {type(data).__name__}",
            argument="class_prompts_file",
        )
    missing = [c for c in names if c not in data]
    if missing:
        raise ConfigError(f"class_prompts_file {str(path)!r} lacks classes {missing!r} (has {list(data)[:5]!r}...)",
                          argument="class_prompts_file")
    extra = [c for c in data if c not in names]
    if extra:
        raise ConfigError(
            f"class_prompts_file {str(path)!r} must hold only the dataset's classes, got extra classes {extra[:5]!r} "
            f"(dataset classes: {names[:5]!r}...)",
            argument="class_prompts_file",
        )
    prompts = {}
    for c in names:
        sentences = data[c]
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
            raise ConfigError(
                f"class_prompts_file {str(path)!r}: class {c!r} needs a non-empty list of sentences, got {sentences!r}",
                argument="class_prompts_file",
            )
        prompts[c] = list(sentences)
    return prompts


def save_class_prompts(path: str | os.PathLike, prompts: Mapping[str, Sequence[str]], provenance: Mapping | None = None) -> Path:
    """Write prompts atomically; ``provenance`` (model, prompt, seed, ...) goes to ``<path>.provenance.json``."""
    path = Path(path)
    for target, payload in ((path, {k: list(v) for k, v in prompts.items()}), (Path(f"{path}.provenance.json"), provenance)):
        if payload is not None:
            atomic_write_json(target, payload, indent=1)
    return path
