"""vlkit: adapting vision-language models and generative recommendation.

``import vlkit`` stays light: heavy submodules (open_clip, transformers, gradio) load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from vlkit.errors import ConfigError  # noqa: E402  (standard library only: stays light)

_LAZY = {
    "create_backbone": "vlkit.models.backbones",
    "list_backbones": "vlkit.models.backbones",
    "fewshot": "vlkit.fewshot",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "fewshot" else getattr(module, name)
    raise AttributeError(f"module 'vlkit' has no attribute {name!r}")


__all__ = ["ConfigError", *_LAZY]
