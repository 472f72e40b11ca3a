"""Zero-shot text classifier: class weights from class names and templates or per-class prompts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from vlkit.errors import check_classnames
from vlkit.functional.zeroshot import SIMPLE_TEMPLATE, class_embeddings_from_prompts

__all__ = ["SIMPLE_TEMPLATE", "build_text_classifier", "encode_texts", "expand_templates"]


def expand_templates(classnames: Sequence[str], templates: Sequence[str]) -> dict[str, list[str]]:
    """Per-class prompts from templates with one ``{}`` slot each."""
    templates = list(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"templates must be strings with exactly one '{{}}' slot, got {bad[:3] or templates!r}")
    return {c: [t.format(c) for t in templates] for c in classnames}


@torch.no_grad()
def encode_texts(backbone, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """Encode strings in batches with the backbone's text tower. -> (T, D) float32, unnormalised."""
    out = [backbone.encode_text(list(texts[i : i + batch_size])).float() for i in range(0, len(texts), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def build_text_classifier(
    backbone,
    classnames: Sequence[str],
    templates: Sequence[str] | None = None,
    class_prompts: Mapping[str, Sequence[str]] | None = None,
    batch_size: int = 256,
) -> Tensor:
    """(C, D) unit-norm class weights: mean of normalised prompt embeddings per class, renormalised.

    Give ``templates`` (``str.format`` patterns with one ``{}``) or ``class_prompts`` (class -> sentences,
    e.g. a CuPL/ProAPO prompt file); with both, a class uses its sentences plus the filled templates.
    """
    names = check_classnames(classnames)
    if templates is None and class_prompts is None:
        templates = [SIMPLE_TEMPLATE]
    prompts: dict[str, list[str]] = {c: [] for c in names}
    if class_prompts is not None:
        missing = [c for c in names if c not in class_prompts or not class_prompts[c]]
        if missing:
            raise ValueError(f"class_prompts lacks sentences for classes {missing!r}")
        for c in names:
            prompts[c].extend(class_prompts[c])
    if templates is not None:
        for c, sentences in expand_templates(names, templates).items():
            prompts[c].extend(sentences)
    texts = [s for c in names for s in prompts[c]]
    owner = torch.tensor([i for i, c in enumerate(names) for _ in prompts[c]])  # (P,)
    embeddings = encode_texts(backbone, texts, batch_size)  # (P, D)
    return class_embeddings_from_prompts(embeddings, owner.to(embeddings.device), len(names))  # (C, D)
