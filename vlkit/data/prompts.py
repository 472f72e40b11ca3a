"""Class names, prompt templates and per-class prompt files (the CuPL/DCLIP JSON format:
``{"class name": ["sentence", ...]}``), shared by zero-shot, TFUP and ProAPO."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "SIMPLE_TEMPLATE",
    "imagenet_templates",
    "load_class_prompts",
    "save_class_prompts",
    "check_classnames",
]

SIMPLE_TEMPLATE = "a photo of a {}."


def imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates (shipped inside open_clip), as ``str.format`` patterns."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


def check_classnames(classnames: Sequence[str], argument: str = "classnames") -> list[str]:
    names = list(classnames)
    if not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise ValueError(f"{argument} must be a non-empty list of non-empty strings, got {names[:5]!r}")
    seen, dupes = set(), []
    for c in names:
        (dupes.append(c) if c in seen else seen.add(c))
    if dupes:
        raise ValueError(f"{argument} holds duplicate class names: {sorted(set(dupes))!r}")
    return names


def load_class_prompts(path: str | os.PathLike, classnames: Sequence[str]) -> dict[str, list[str]]:
    """Read and validate a class -> sentences JSON file for the given class names (in their order)."""
    path = Path(path)
    names = check_classnames(classnames)
    if not path.exists():
        raise FileNotFoundError(f"class_prompts_file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"class_prompts_file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"class_prompts_file {str(path)!r} must hold a non-empty object class -> list of sentences")
    missing = [c for c in names if c not in data]
    if missing:
        raise ValueError(f"class_prompts_file {str(path)!r} lacks classes {missing!r} (has {list(data)[:5]!r}...)")
    prompts = {}
    for c in names:
        sentences = data[c]
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
            raise ValueError(f"class_prompts_file {str(path)!r}: class {c!r} needs a non-empty list of sentences, got {sentences!r}")
        prompts[c] = list(sentences)
    return prompts


def save_class_prompts(path: str | os.PathLike, prompts: Mapping[str, Sequence[str]], provenance: Mapping | None = None) -> Path:
    """Write prompts atomically; ``provenance`` (model, prompt, seed, ...) goes to ``<path>.provenance.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, payload in ((path, {k: list(v) for k, v in prompts.items()}), (Path(f"{path}.provenance.json"), provenance)):
        if payload is None:
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1, ensure_ascii=False)
        os.replace(tmp, target)
    return path
