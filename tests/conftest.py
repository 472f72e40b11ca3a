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

import csv  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


def _last_csv_metrics(save_dir: Path) -> dict[str, float]:
    """The last logged value of every metric in the newest CSVLogger ``metrics.csv`` under ``save_dir``."""
    files = sorted(Path(save_dir).rglob("metrics.csv"))
    assert files, f"no metrics.csv under {save_dir}"
    out = {}
    with open(files[-1]) as fh:
        for row in csv.DictReader(fh):
            out.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")})
    return out


@pytest.fixture
def csv_metrics():
    """``csv_metrics(save_dir) -> {name: last value}``: what a CLI run with the CSVLogger logged."""
    return _last_csv_metrics


def _reload_with_flat_group(module, group: str, directory: Path) -> list:
    """``module`` written as a Lightning checkpoint twice, as it is and as the version before its settings
    group ``group`` wrote it (the group's fields flat among the hyperparameters), then each loaded back with
    ``load_from_checkpoint(..., weights_only=True)``: [from the current checkpoint, from the flat one]."""
    import lightning as L

    hparams = dict(module.hparams)
    flat = {k: v for k, v in hparams.items() if k != group} | dict(hparams[group])
    loaded = []
    for name, hyper_parameters in (("current.ckpt", hparams), ("flat.ckpt", flat)):
        checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": hyper_parameters,
                      "pytorch-lightning_version": L.__version__}
        module.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, directory / name)
        loaded.append(type(module).load_from_checkpoint(directory / name, map_location="cpu", weights_only=True))
    return loaded


@pytest.fixture
def reload_with_flat_group(tmp_path):
    """``reload_with_flat_group(module, group) -> [current, flat]``: ``module`` reloaded from a checkpoint of
    the current layout and from one whose ``group`` settings were flat hyperparameters (the older layout)."""
    return lambda module, group: _reload_with_flat_group(module, group, tmp_path)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
