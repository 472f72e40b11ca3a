"""Few-shot / unsupervised evaluation API for notebooks: plain functions returning tables (lists of dicts).

    from vlkit import fewshot
    rows = fewshot.evaluate(method="tfup", backbone="offline-lite0-minilm", dataset="fashion-mnist")
    print(fewshot.to_markdown(fewshot.summarize(rows)))   # accuracy in percent, "± std (n seeds)" when n > 1

Rows keep accuracy as a fraction in [0, 1]; tables print it in percent through ``vlkit.report``.

The CLI configs and the demos run the same LightningModules and DataModule underneath.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence

import torch

from vlkit.errors import ConfigError, check_choice, check_file, check_int

__all__ = ["METHODS", "evaluate", "to_markdown", "per_class_accuracy", "summarize"]

# method name -> (LightningModule class path, fixed init args)
METHODS = {
    "zeroshot": ("vlkit.methods.tfup.LitTFUP", {"mode": "zeroshot"}),
    "tfup": ("vlkit.methods.tfup.LitTFUP", {"mode": "tfup"}),
    "tip-adapter": ("vlkit.methods.tfup.LitTFUP", {"mode": "tip-adapter"}),
    "tfup-t": ("vlkit.methods.tfup.LitTFUPT", {}),
}


def _module_class(path: str):
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def evaluate(
    method: str = "tfup",
    backbone: str = "offline-lite0-minilm",
    dataset: str = "fashion-mnist",
    shots: int = 0,
    seeds: Sequence[int] = (1,),
    subset_size: int | None = 2000,
    template_set: str | None = "auto",
    class_prompts_file: str | None = None,
    max_epochs: int = 30,
    selection: str = "last",
    augment_views: int = 1,
    cache_dir: str | None = None,
    root: str | None = None,
    accelerator: str = "auto",
    return_predictions: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Run one method per seed and return one row per seed.

    Args:
        method: ``"zeroshot"``, ``"tfup"``, ``"tip-adapter"`` (labelled ``shots``) or ``"tfup-t"``.
        backbone: any ``create_backbone`` name.
        dataset: ``"fashion-mnist"``, ``"imagefolder:<dir>"`` (with ``train/`` and ``test/`` inside),
            ``"imagefolder:<dir>?test_fraction=0.2&seed=0"`` (a seeded split of one folder) or
            ``"torchvision:<Name>"``.
        shots: labelled shots per class, an int >= 0 (Tip-Adapter needs >= 1); the unsupervised methods
            ignore labels.
        seeds: one run per seed (shot sampling and TFUP-T's training); a non-empty list of distinct ints.
        subset_size: evaluate on this seeded subset of the test split, an int >= 1 (None: all of it).
        template_set / class_prompts_file: the text head (e.g. a ProAPO prompt file, which must exist).
        max_epochs, selection, augment_views: TFUP-T only (max_epochs an int >= 1, augment_views an int >= 0);
            ``selection="paper-test-best"`` reproduces the authors' test-set epoch selection and is labelled
            ``paper-compat`` in the rows.
        cache_dir: root of the feature cache (None: the kit's cache root, ``$VLKIT_CACHE`` or
            ``~/.cache/vlkit``); the second run on the same data skips the image encoder.
        root: data root of the dataset (None: its default location).
        accelerator: Lightning accelerator (``"auto"``: CUDA when available).
        return_predictions: add ``predictions``, the (N, 3) [index, prediction, label] test tensor, to each row.
        progress: show progress (default): a ``[fewshot] <method> seed <s>`` line per run and Lightning's bars
            for TFUP-T's epochs and the test pass (the feature encoding shows its own bar on a cache miss);
            False leaves out the line and Lightning's bars.
    Returns:
        Rows with method, mode, dataset, split (how train and test images were separated, e.g.
        ``"seeded test_fraction=0.2 seed=0"``), backbone, shots, seed, accuracy, mean_per_class_recall, seconds.
    """
    import lightning as L

    from vlkit.data.fewshot import FewShotDataModule, describe_split
    from vlkit.trainer_defaults import quiet_lightning

    # every argument is checked here, before any dataset is read or any backbone is built
    check_choice("method", method, sorted(METHODS))
    if not isinstance(backbone, str) or not backbone:
        raise ConfigError(f"backbone must be a backbone name string, got {backbone!r}", argument="backbone")
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"dataset must be a dataset name string, got {dataset!r}", argument="dataset")
    check_int("shots", shots, low=0)
    if method == "tip-adapter" and shots < 1:
        raise ConfigError(f"method='tip-adapter' needs shots >= 1 (labelled images per class), got {shots}",
                          argument="shots")
    if isinstance(seeds, (str, int)) or not seeds:
        raise ConfigError(f"seeds must be a non-empty list of ints, got {seeds!r}", argument="seeds")
    for seed in seeds:
        check_int("seeds", seed)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct (one row per seed), got {list(seeds)}", argument="seeds")
    check_int("subset_size", subset_size, low=1, allow_none=True)
    check_choice("template_set", template_set, ("auto", "simple", "imagenet", "none", None))
    if class_prompts_file is not None:
        check_file("class_prompts_file", class_prompts_file)
    elif template_set in (None, "none"):
        raise ConfigError(
            f"template_set={template_set!r} without a class_prompts_file leaves the text head without prompts",
            argument="template_set",
        )
    check_int("max_epochs", max_epochs, low=1)
    check_choice("selection", selection, ("last", "paper-test-best"))
    check_int("augment_views", augment_views, low=0)
    class_path, fixed = METHODS[method]
    quiet_lightning()
    rows = []
    for seed in seeds:
        if progress:
            print(f"[fewshot] {method} seed {seed} ({backbone}, {dataset})", flush=True)
        L.seed_everything(seed, verbose=False)
        start = time.perf_counter()
        datamodule = FewShotDataModule(
            dataset=dataset,
            root=root,
            subset_size=subset_size,
            shots=shots,
            seed=seed,
            augment_views=augment_views if method == "tfup-t" else 0,
            cache_dir=cache_dir,
        )
        if class_prompts_file is not None:  # the file's classes must be the dataset's, checked before any encoding
            from vlkit.data.prompts import load_class_prompts

            load_class_prompts(class_prompts_file, datamodule.classnames)
        init = dict(backbone=backbone, template_set=template_set, class_prompts_file=class_prompts_file, **fixed)
        if method == "tfup-t":
            init["selection"] = selection
        model = _module_class(class_path)(**init)
        common = dict(
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
        )
        ckpt_path = None
        scratch = tempfile.TemporaryDirectory(prefix="vlkit-fewshot-")  # per-run checkpoints, removed below
        if method == "tfup-t":
            callbacks = []
            if selection == "paper-test-best":
                from lightning.pytorch.callbacks import ModelCheckpoint

                callbacks.append(ModelCheckpoint(monitor="val/acc", mode="max", dirpath=scratch.name))
                ckpt_path = "best"
            trainer = L.Trainer(
                max_epochs=max_epochs,
                enable_checkpointing=bool(callbacks),
                callbacks=callbacks,
                num_sanity_val_steps=0,
                # the per-epoch curve is computed in both modes (its loader draws from the global RNG,
                # so validating in one mode only would change the training order between modes); only
                # "paper-test-best" selects on it
                check_val_every_n_epoch=1,
                default_root_dir=scratch.name,
                **common,
            )
            trainer.fit(model, datamodule=datamodule)
        else:
            trainer = L.Trainer(enable_checkpointing=False, **common)
        metrics = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]
        scratch.cleanup()
        row = {
            "method": method,
            "mode": "paper-compat (test-selected epoch)" if selection == "paper-test-best" and method == "tfup-t" else "strict",
            "dataset": dataset,
            "split": describe_split(dataset),
            "backbone": backbone,
            "prompts": class_prompts_file or (template_set if template_set != "auto" else "simple"),
            "shots": shots,
            "seed": seed,
            "n_test": int(datamodule.eval_labels.numel()),
            "accuracy": float(metrics["test/acc"]),
            "mean_per_class_recall": float(metrics["test/mean_per_class_recall"]),
            "seconds": round(time.perf_counter() - start, 1),
        }
        if method == "tfup":
            row["cache_pseudo_label_accuracy"] = model.cache_label_accuracy
        if return_predictions:
            row["predictions"] = model.test_predictions
        rows.append(row)
    return rows


def per_class_accuracy(predictions: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy per class from an (N, 3) [index, prediction, label] tensor (``test_predictions``);
    ``num_classes``: an int >= 1."""
    check_int("num_classes", num_classes, low=1)
    if predictions.dim() != 2 or predictions.shape[1] != 3:
        raise ConfigError(f"predictions must be (N, 3) [index, prediction, label], got {tuple(predictions.shape)}",
                          argument="predictions")
    pred, label = predictions[:, 1], predictions[:, 2]
    out = []
    for c in range(num_classes):
        member = label == c
        out.append(float((pred[member] == c).float().mean()) if member.any() else float("nan"))
    return out


def summarize(rows: list[dict], keys: Sequence[str] = ("method", "mode", "prompts", "shots")) -> list[dict]:
    """Mean and sample standard deviation of accuracy over seeds, grouped by ``keys``.

    Returns one row per group: the ``keys``, ``seeds`` (how many rows), ``accuracy_mean`` and ``accuracy_std``
    (fractions; the std is 0.0 for one seed), ``seconds_mean``. :func:`to_markdown` prints such a row's
    accuracy as one column in percent, ``38.93 ± 0.41 (3 seeds)``, the std and count only when seeds > 1,
    and its seconds rounded.
    """
    from vlkit.report import mean_and_std

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        mean, std = mean_and_std([m["accuracy"] for m in members])
        out.append(
            {
                **dict(zip(keys, key)),
                "seeds": len(members),
                "accuracy_mean": mean,
                "accuracy_std": std,
                "seconds_mean": float(sum(m["seconds"] for m in members) / len(members)),
            }
        )
    return out


def to_markdown(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """A markdown table of the rows through the kit's formatter (:func:`vlkit.report.markdown_table`):
    rates (accuracy, recall, mIoU) in percent with two decimals, a ``summarize`` row's accuracy as
    ``mean ± std (n seeds)`` (one column ``accuracy``; the std only when n > 1), seconds rounded, other
    floats with 4 decimals.

    Args:
        rows: ``evaluate`` or ``summarize`` rows (or any dicts).
        columns: the keys to show (None: all but ``predictions``; a ``summarize`` row's ``accuracy_mean``
            and ``accuracy_std`` show as one ``accuracy`` column, ``seconds_mean`` as ``seconds``).
    """
    from vlkit.report import markdown_table

    return markdown_table(rows, columns)
