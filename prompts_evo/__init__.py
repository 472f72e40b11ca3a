"""ProAPO: evolutionary prompt optimisation from templates to class-specific descriptions (builds on vlkit).

Public API: ``prepare_search`` (backbone + dataset -> a ready ``ProAPORun``), ``ProAPOSearch`` (the
two-stage search on any cached features), ``expand_templates``, the description sources
(``JsonDescriptions``, ``LLMDescriptions``, ``TemplateDescriptions``), ``read_class_prompts`` /
``write_class_prompts`` and ``LitProAPO`` (Lightning, one generation per epoch).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "prepare_search": "prompts_evo.api",
    "ProAPORun": "prompts_evo.api",
    "template_library": "prompts_evo.api",
    "ProAPOSearch": "prompts_evo.search",
    "SearchResult": "prompts_evo.search",
    "expand_templates": "prompts_evo.search",
    "PromptEmbeddingCache": "prompts_evo.text_cache",
    "JsonDescriptions": "prompts_evo.descriptions",
    "LLMDescriptions": "prompts_evo.descriptions",
    "TemplateDescriptions": "prompts_evo.descriptions",
    "read_class_prompts": "prompts_evo.descriptions",
    "write_class_prompts": "prompts_evo.descriptions",
    "LitProAPO": "prompts_evo.methods.proapo",
    "plot_fitness_curve": "prompts_evo.methods.proapo",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'prompts_evo' has no attribute {name!r}")


__all__ = list(_LAZY)
