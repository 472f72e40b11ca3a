"""ProAPO: evolutionary prompt optimisation from templates to class-specific descriptions (builds on vlkit).

The package has vlkit's four layers: ``functional/`` (fitness, edit operators, class grouping),
``models/`` (prompt-embedding cache, LLM descriptions, the search engine ``ProAPOSearch`` and its
``SearchSettings``), ``data/`` (image features and ``ProAPODataModule``, the template library and the CuPL
JSON format) and ``methods/proapo.py`` (``LitProAPO``); ``prompts_evo.fewshot`` is the notebook API.

Public names load lazily (``import prompts_evo`` stays light): ``fewshot``, ``prepare_search``,
``ProAPORun``, ``ProAPOSearch``, ``SearchSettings``, ``SearchResult``, ``expand_type_words``,
``template_library``, ``PromptEmbeddingCache``, the description sources (``JsonDescriptions``,
``LLMDescriptions``, ``TemplateDescriptions``), ``read_class_prompts`` / ``write_class_prompts``,
``ProAPODataModule`` and ``LitProAPO``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "fewshot": "prompts_evo.fewshot",
    "prepare_search": "prompts_evo.fewshot",
    "ProAPORun": "prompts_evo.fewshot",
    "ProAPOSearch": "prompts_evo.models.search",
    "SearchSettings": "prompts_evo.models.search",
    "SearchResult": "prompts_evo.models.search",
    "PromptEmbeddingCache": "prompts_evo.models.prompt_embeddings",
    "LLMDescriptions": "prompts_evo.models.descriptions",
    "expand_type_words": "prompts_evo.data.prompts",
    "template_library": "prompts_evo.data.prompts",
    "JsonDescriptions": "prompts_evo.data.prompts",
    "TemplateDescriptions": "prompts_evo.data.prompts",
    "read_class_prompts": "prompts_evo.data.prompts",
    "write_class_prompts": "prompts_evo.data.prompts",
    "ProAPODataModule": "prompts_evo.data.features",
    "LitProAPO": "prompts_evo.methods.proapo",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "fewshot" else getattr(module, name)
    raise AttributeError(f"module 'prompts_evo' has no attribute {name!r}")


__all__ = list(_LAZY)
