"""The trained models the demos show by default: built once, kept in the kit's cache, found by the tabs.

    make demo-assets                                   # = python scripts/demo_assets.py (about 10 min on 2 CPU cores)
    python scripts/demo_assets.py --only minionerec --epochs 4

* **MiniOneRec** (:func:`build_minionerec_assets`): the kit's own pipeline on Amazon Industrial, through the
  CLI and the configs of ``python -m recsys.experiments``: semantic IDs from the RQ-VAE over MiniLM item-text
  embeddings (``configs/recsys/rqvae/amazon18-industrial_minilm.yaml``), then SFT of the 2-layer, 64-d
  scratch decoder (``configs/recsys/minionerec/amazon18-industrial_sft.yaml``) for 4 epochs, keeping the
  checkpoint with the best ``val/ndcg@10``. Stored under ``<cache>/demo-assets/minionerec/<dataset>/``:
  one folder per build holding ``model.ckpt`` (state dict and hyperparameters, read back with
  ``weights_only=True``) and ``sid_index.json``, and ``asset.json``, written last and atomically, which
  names the complete build and records what was trained on what. A reader sees the previous complete
  build or the new one, never a mix; an interrupted build leaves only a stray folder, removed next time.
  The demo builds it on first use too (a button with a progress bar) when it is missing.
* **ARES**: SmolLM2-135M-Instruct, converted once from the packaged GGUF to safetensors by
  ``vlkit.models.pretrained`` (:func:`prepare_smollm2`), about 30 s the first time.

``<cache>`` is the kit's cache root (``$VLKIT_CACHE``, default ``~/.cache/vlkit``); every function takes a
``root`` to use another folder (tests build tiny assets in a temporary one).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "DEFAULT_MINIONEREC_DATASET",
    "ASSET_FORMAT",
    "minionerec_asset_dir",
    "find_minionerec_assets",
    "build_minionerec_assets",
    "store_minionerec_assets",
    "prepare_smollm2",
]

DEFAULT_MINIONEREC_DATASET = "amazon18-industrial"
ASSET_FORMAT = 1  # bumped when the stored layout changes: an older asset.json is then ignored
NAMESPACE = "demo-assets"
# about how long the RQ-VAE stage and one SFT epoch (with its validation) take on 2 quiet CPU cores (MiniLM
# encoding included; measured on Industrial), for the progress bar only
_RQVAE_SECONDS = {"synthetic": 10.0}
_RQVAE_SECONDS_DEFAULT = 180.0
_SFT_EPOCH_SECONDS = {"synthetic": 3.0}
_SFT_EPOCH_SECONDS_DEFAULT = 100.0

Progress = Callable[[float, str], None]


def minionerec_asset_dir(dataset: str = DEFAULT_MINIONEREC_DATASET, root: str | Path | None = None) -> Path:
    """The folder of the trained MiniOneRec recommender of ``dataset``: ``<root>/minionerec/<dataset>``
    (``root`` None: ``<cache>/demo-assets``). Not created here."""
    from recsys.experiments import DATASETS
    from vlkit.cache import cache_root
    from vlkit.errors import check_choice

    check_choice("dataset", dataset, sorted(DATASETS))
    base = Path(root) if root is not None else cache_root() / NAMESPACE
    return base / "minionerec" / dataset


def find_minionerec_assets(dataset: str = DEFAULT_MINIONEREC_DATASET, root: str | Path | None = None) -> dict | None:
    """The complete trained recommender of ``dataset``, or None when none was built (or its record is
    unreadable, of another layout, or names missing files).

    Returns:
        ``asset.json``'s record (dataset, model, data, epochs, validation metrics, wall time, when) with
        ``checkpoint`` and ``sid_path`` as absolute paths.
    """
    folder = minionerec_asset_dir(dataset, root)
    try:
        record = json.loads((folder / "asset.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != ASSET_FORMAT or record.get("dataset") != dataset:
        return None
    build = folder / str(record.get("build", ""))
    if build.parent != folder or not (build / "model.ckpt").is_file() or not (build / "sid_index.json").is_file():
        return None
    return {**record, "checkpoint": str(build / "model.ckpt"), "sid_path": str(build / "sid_index.json")}


def _with_progress(work: Callable[[], dict], progress: Progress | None, low: float, high: float,
                   expected_s: float, description: str) -> dict:
    """Run ``work()``; meanwhile report ``progress(fraction, text)`` once a second, the fraction moving from
    ``low`` towards ``high`` with the elapsed time over ``expected_s`` (the SFT stage is time-budgeted, so
    there it is the true fraction). ``work`` runs in a worker thread so that the caller's thread can report."""
    if progress is None:
        return work()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=target, name="demo-asset-build", daemon=True)
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        elapsed = time.monotonic() - start
        progress(low + (high - low) * min(elapsed / max(expected_s, 1e-6), 0.99),
                 f"{description}: {elapsed:.0f} s of about {expected_s:.0f} s")
        worker.join(1.0)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _validation_history(stage_dir: Path, monitor: str = "val/ndcg@10") -> tuple[dict[str, float], int]:
    """(the ``val/*`` metrics and ``epoch`` of the validation run with the highest ``monitor``, the number of
    epochs run) from the stage's ``metrics.csv``: what the kept checkpoint scored (the first of equal ones,
    as ModelCheckpoint keeps) and how far training went."""
    import csv

    best: dict[str, float] = {}
    epochs = 0
    with open(stage_dir / "fit" / "version_0" / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("epoch") not in ("", None):
                epochs = max(epochs, int(float(row["epoch"])) + 1)
            if row.get(monitor) in ("", None):
                continue
            values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            values["epoch"] = float(row.get("epoch") or 0)
            if not best or values[monitor] > best[monitor]:
                best = values
    return best, epochs


def store_minionerec_assets(dataset: str, root: str | Path | None, checkpoint: dict, sid_index: bytes,
                            provenance: dict) -> dict:
    """Write one complete build (see the module docstring) and switch ``asset.json`` to it; returns
    :func:`find_minionerec_assets`'s record.

    Args:
        dataset: the data set the model was trained on.
        root: the assets folder (None: ``<cache>/demo-assets``).
        checkpoint: a LitMiniOneRec checkpoint dict (``state_dict``, ``hyper_parameters``, ``vlkit_class``,
            ...); only weights, hyperparameters and provenance are kept (no optimizer state).
        sid_index: the bytes of the ``sid_index.json`` the model was trained with.
        provenance: what to record about the training (configs, epochs, validation metrics, wall time ...).
    """
    from vlkit.cache import atomic_torch_save, atomic_write_bytes, atomic_write_json

    folder = minionerec_asset_dir(dataset, root)
    folder.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=folder, prefix=time.strftime("%Y%m%d-%H%M%S-")))  # unique, never reused
    stamp = build.name
    keep = ("state_dict", "hyper_parameters", "vlkit_class", "datamodule_hyper_parameters", "epoch", "global_step",
            "pytorch-lightning_version")
    atomic_torch_save({k: checkpoint[k] for k in keep if k in checkpoint}, build / "model.ckpt")
    atomic_write_bytes(build / "sid_index.json", sid_index)
    decoder = dict(checkpoint.get("hyper_parameters", {}).get("decoder") or {})
    backbone = decoder.get("backbone", "scratch")
    record = {
        "format": ASSET_FORMAT,
        "dataset": dataset,
        "build": stamp,
        "model": (f"MiniOneRec SFT: {decoder.get('num_layers', '?')}-layer, {decoder.get('hidden_size', '?')}-d decoder "
                  + ("trained from scratch" if backbone == "scratch" else f"fine-tuned from {backbone}")),
        "steps": int(checkpoint.get("global_step", 0)),
        "built": time.strftime("%Y-%m-%d %H:%M"),
        **provenance,
    }
    atomic_write_json(folder / "asset.json", record)  # the switch: the new build is now the one read
    for old in folder.iterdir():  # earlier builds nobody points at any more
        if old.is_dir() and old.name != stamp and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    found = find_minionerec_assets(dataset, root)
    if found is None:  # a bug, not a user error
        raise RuntimeError(f"the demo asset just written for {dataset!r} is not readable")
    return found


def build_minionerec_assets(
    dataset: str = DEFAULT_MINIONEREC_DATASET,
    root: str | Path | None = None,
    epochs: int = 4,
    max_minutes: float = 30.0,
    overrides: Sequence[str] = (),
    progress: Progress | None = None,
) -> dict:
    """Train the demo's recommender for ``dataset`` with the kit's own pipeline and store it (see the module
    docstring); returns :func:`find_minionerec_assets`'s record of the new build.

    Args:
        dataset: a data set of ``recsys.experiments.DATASETS`` (its ``rqvae`` and ``sft`` configs are used).
        root: the assets folder (None: ``<cache>/demo-assets``).
        epochs: SFT epochs (``--trainer.max_epochs``; 4 take about 6 minutes on 2 CPU cores for Industrial); the
            checkpoint with the best ``val/ndcg@10`` is kept.
        max_minutes: a cap on the SFT wall time (``--trainer.max_time``) for a slow or busy machine; the
            record says how many epochs were done.
        overrides: more ``--key=value`` options for both ``vlkit fit`` calls (tests shrink the run with them).
        progress: ``progress(fraction, text)`` called about once a second (the demo's ``gr.Progress``);
            None prints Lightning's progress bar instead.
    """
    from recsys.experiments import best_checkpoint, config_path, run_stage
    from recsys.methods.minionerec import LitMiniOneRec
    from vlkit.checkpoints import load_checkpoint
    from vlkit.errors import check_int, check_number

    check_int("epochs", epochs, low=1)
    check_number("max_minutes", max_minutes, low=0, low_open=True, high=24 * 60)
    folder = minionerec_asset_dir(dataset, root)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".build-*"):  # what an interrupted build left behind (not one running now)
        if time.time() - stale.stat().st_mtime > 2 * 3600:
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".build-"))  # the stages' logs and checkpoints; removed at the end
    sid_path = work / "sid_index.json"
    bar = [] if progress is not None else ["--trainer.enable_progress_bar=true"]
    seconds = int(max_minutes * 60)
    budget = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"  # DD:HH:MM:SS
    started = time.time()
    try:
        rqvae_s = _RQVAE_SECONDS.get(dataset, _RQVAE_SECONDS_DEFAULT)
        _with_progress(
            lambda: run_stage("fit", config_path(dataset, "rqvae"), work / "rqvae",
                              f"--model.init_args.sid_path={sid_path}", *bar, *overrides),
            progress, 0.0, 0.25, rqvae_s, "1/2 semantic IDs (RQ-VAE over the item texts)")
        _with_progress(
            lambda: run_stage("fit", config_path(dataset, "sft"), work / "sft", f"--model.init_args.sid_path={sid_path}",
                              f"--trainer.max_epochs={epochs}", f"--trainer.max_time={budget}",
                              "--trainer.check_val_every_n_epoch=1", *bar, *overrides,  # every epoch is a candidate
                              monitor="val/ndcg@10"),
            progress, 0.25, 0.97, epochs * _SFT_EPOCH_SECONDS.get(dataset, _SFT_EPOCH_SECONDS_DEFAULT),
            f"2/2 MiniOneRec SFT, {epochs} epoch(s)")
        if progress is not None:
            progress(0.98, "storing the checkpoint")
        validation, epochs_done = _validation_history(work / "sft")
        found = store_minionerec_assets(
            dataset, root, load_checkpoint(best_checkpoint(work / "sft"), (LitMiniOneRec,)), sid_path.read_bytes(),
            {"semantic_ids": "the kit's RQ-VAE (configs/recsys/rqvae), unique IDs",
             "configs": [config_path(dataset, stage).relative_to(config_path(dataset, stage).parents[3]).as_posix()
                         for stage in ("rqvae", "sft")],
             "epochs": epochs_done, "kept_epoch": int(validation.pop("epoch", 0)) + 1, "validation": validation,
             "overrides": list(overrides), "wall_s": round(time.time() - started, 1)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress is not None:
        progress(1.0, "done")
    return found


def prepare_smollm2() -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF to safetensors once (about 30 s; cached) and return
    its folder, so that the ARES tab's first answer does not wait for it."""
    from vlkit.models.pretrained import smollm2_dir

    return Path(smollm2_dir())
