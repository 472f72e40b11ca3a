"""ProAPO's text data: the stage-1 template library, and class prompts/descriptions as CuPL JSON files.

- :func:`template_library` (``"imagenet80"``: CLIP's 80 ImageNet templates, ``"simple"``: the baseline
  only) and :func:`expand_type_words` (the dataset-type variants of the authors' ``add_dataset_type_to_template``)
  build the library the template stage searches.
- :func:`read_class_prompts` / :func:`write_class_prompts` read and write the CuPL / DCLIP format
  (``{"class name": ["sentence", ...]}``; validated on read; written atomically with
  ``vlkit.cache.atomic_write_json``, with a ``<file>.provenance.json`` sidecar). ProAPO's output prompt file
  uses the same format, so the zero-shot classifier and TFUP read it through ``class_prompts_file``.
- :class:`JsonDescriptions` and :class:`TemplateDescriptions`: the two description sources that need no
  model (the language-model one is ``prompts_evo.models.descriptions.LLMDescriptions``); all three answer
  ``source.describe(classnames) -> {class: [sentence, ...]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from vlkit.cache import atomic_write_json
from vlkit.data.prompts import SIMPLE_TEMPLATE
from vlkit.errors import ConfigError, check_choice, check_classnames

__all__ = [
    "TEMPLATE_LIBRARIES",
    "template_library",
    "expand_type_words",
    "read_class_prompts",
    "write_class_prompts",
    "JsonDescriptions",
    "TemplateDescriptions",
]

TEMPLATE_LIBRARIES = ("imagenet80", "simple")


def template_library(name: str) -> list[str]:
    """Base templates: "imagenet80" (CLIP's 80 ImageNet templates) or "simple" (the baseline only)."""
    check_choice("template_library", name, TEMPLATE_LIBRARIES)
    if name == "imagenet80":
        from vlkit.data.prompts import imagenet_templates

        return imagenet_templates()
    return [SIMPLE_TEMPLATE]


def expand_type_words(templates: Sequence[str], type_words: Sequence[str] = ()) -> list[str]:
    """The stage-1 library: ``templates`` plus, per dataset-type word t, four variants of each template
    (the authors' ``add_dataset_type_to_template``): "<template>, a type of t.", "t: <template>",
    "photo" -> "t", and "photo" -> "t photo" (the last two only where the template says "photo").
    Order-preserving, duplicates dropped; the baseline template "a photo of a {}." is always included.

    (Not ``vlkit.models.zeroshot.expand_templates``, which fills templates with class names.)"""
    if isinstance(templates, str) or not templates:
        raise ConfigError(f"templates must be a non-empty list of str with one '{{}}', got {templates!r}", argument="templates")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ConfigError(f"every template needs exactly one '{{}}' placeholder, got {t!r}", argument="templates")
    if isinstance(type_words, str):
        raise ConfigError(f"type_words must be a list of words, got the string {type_words!r}", argument="type_words")
    out = [SIMPLE_TEMPLATE, *templates]
    for word in type_words:
        if not isinstance(word, str) or not word.strip() or "{" in word or "}" in word:
            raise ConfigError(f"type_words must be non-empty strings without braces, got {word!r}", argument="type_words")
        for t in templates:
            out.append(t.rstrip(". ") + f", a type of {word}.")
            out.append(f"{word}: {t}")
            if "photo" in t:
                out.append(t.replace("photo", word))
                out.append(t.replace("photo", f"{word} photo"))
    return list(dict.fromkeys(out))


def read_class_prompts(
    path: str | os.PathLike, classnames: Sequence[str], allow_extra_classes: bool = False
) -> dict[str, list[str]]:
    """Read a CuPL/DCLIP JSON file (class -> list of sentences) for ``classnames``, in their order.

    Raises ConfigError (a ValueError) for an empty/malformed file, a class missing from it, a class with
    no sentence, or a class of the file that is not among ``classnames`` (a file written for another class
    list; ``allow_extra_classes=True`` ignores those instead), FileNotFoundError for a missing file.
    """
    names = check_classnames(classnames)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"description file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"description file {str(path)!r} is empty; expected a JSON object class -> list of sentences",
                          argument="description_file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"description file {str(path)!r} is not valid JSON ({err})", argument="description_file") from err
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"description file {str(path)!r} must hold a non-empty JSON object class -> list of sentences, "
            f"got {type(data).__name__}", argument="description_file"
        )
    missing = [c for c in names if c not in data]
    if missing:
        raise ConfigError(f"description file {str(path)!r} lacks {len(missing)} of {len(names)} classes: {missing[:5]}",
                          argument="description_file")
    extra = [c for c in data if c not in names]
    if extra and not allow_extra_classes:
        raise ConfigError(
            f"description file {str(path)!r} must hold exactly the {len(names)} classes of the data set, got "
            f"{len(extra)} unknown: {extra[:5]} (a file for another class list?)", argument="description_file"
        )
    out = {}
    for c in names:
        value = data[c]
        if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ConfigError(f"{str(path)!r}: entry for {c!r} must be a list of str, got {type(value).__name__}",
                              argument="description_file")
        sentences = list(dict.fromkeys(s.strip() for s in value if s.strip()))
        if not sentences:
            raise ConfigError(f"{str(path)!r}: class {c!r} has no non-empty sentence", argument="description_file")
        out[c] = sentences
    return out


def write_class_prompts(path: str | os.PathLike, prompts: dict[str, list[str]], provenance: dict) -> Path:
    """Write ``prompts`` (class -> sentences) as CuPL JSON and ``<path>.provenance.json`` beside it,
    both atomically. Returns the path."""
    if not isinstance(prompts, dict) or not prompts:
        raise ConfigError(f"prompts must be a non-empty dict class -> list of str, got {type(prompts).__name__}", argument="prompts")
    for c, sentences in prompts.items():
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) and s for s in sentences):
            raise ConfigError(f"prompts[{c!r}] must be a non-empty list of non-empty str, got {sentences!r}"[:200],
                              argument="prompts")
    if not isinstance(provenance, dict):
        raise ConfigError(f"provenance must be a dict, got {type(provenance).__name__}", argument="provenance")
    path = Path(path)
    atomic_write_json(path, prompts)
    atomic_write_json(path.with_name(path.name + ".provenance.json"), provenance)
    return path


class JsonDescriptions:
    """Descriptions from a CuPL/DCLIP JSON file (validated on ``describe``).

    Args:
        path: the JSON file ``{"class name": ["sentence", ...]}``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def describe(self, classnames: Sequence[str]) -> dict[str, list[str]]:
        """Class name -> the file's sentences, for exactly ``classnames`` (see :func:`read_class_prompts`)."""
        return read_class_prompts(self.path, classnames)


class TemplateDescriptions:
    """Plain templates filled with the class name as the 'descriptions' (no language model).

    Args:
        templates: patterns with one ``{}`` each (e.g. the first 8 of the template library).
    """

    def __init__(self, templates: Sequence[str]) -> None:
        if isinstance(templates, str):
            raise ConfigError(f"templates must be a list of templates, got the string {templates!r}", argument="templates")
        templates = list(templates)
        if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
            raise ConfigError(f"templates must be a non-empty list of str with one '{{}}' each, got {templates[:3]!r}",
                              argument="templates")
        self.templates = templates

    def describe(self, classnames: Sequence[str]) -> dict[str, list[str]]:
        """Class name -> every template filled with it."""
        return {c: [t.format(c) for t in self.templates] for c in check_classnames(classnames)}
