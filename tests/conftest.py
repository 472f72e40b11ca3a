import os
from pathlib import Path

# The kit's cache root (features, the offline preset's text map, embeddings, ...): a persistent, git-ignored
# folder in the repository, so test runs reuse what earlier runs built. Set here, before anything imports
# the kit; a VLKIT_CACHE the user set wins. Tests that check caching point it at tmp_path themselves.
os.environ.setdefault("VLKIT_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "vlkit"))

# Offline by default: a stray hub lookup would hang ~40 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
