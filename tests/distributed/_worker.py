"""One job of the 2-rank tests, run as ``python _worker.py <job> <out_dir> <devices> '<options JSON>'`` (or, on
one process, through :func:`run` from the test process itself).

With ``devices=2`` the Trainer uses Lightning's ``ddp`` strategy on CPU (gloo): Lightning re-runs this
script for rank 1. Every rank writes ``rank<r>.json`` into ``out_dir``: the metrics it holds after the run
(``trainer.callback_metrics``), the parameters that moved during ``fit`` and job-specific facts; rank 0
also writes the weights at the start and at the end of ``fit`` (``initial.pt``, ``trained.pt``) and, when
asked, a checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch


class MovedParameters(L.Callback):
    """Which parameters changed between the start and the end of ``fit`` (names as in the LightningModule);
    rank 0 writes the weights at both ends (``initial.pt``, ``trained.pt``)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.moved: list[str] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        """Keep a copy of every parameter."""
        self.initial = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        if trainer.global_rank == 0:
            torch.save({n: p.cpu() for n, p in self.initial.items()}, self.out_dir / "initial.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        """Names of the parameters that are no longer equal to their copy."""
        self.moved = sorted(n for n, p in pl_module.named_parameters() if not torch.equal(p.detach(), self.initial[n]))
        if trainer.global_rank == 0:
            torch.save({n: p.detach().cpu() for n, p in pl_module.named_parameters()}, self.out_dir / "trained.pt")


def trainer_for(devices: int, out_dir: Path, callbacks: list, **overrides) -> L.Trainer:
    """A quiet CPU Trainer: DDP (gloo) on 2 processes, the default single-device strategy on 1."""
    settings = dict(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, default_root_dir=str(out_dir), callbacks=callbacks)
    return L.Trainer(**{**settings, **overrides})


def fit_then_evaluate(model, dm, out_dir: Path, devices: int, fit: bool, save: str | None, ckpt: str | None,
                      evaluate: str | None = "test", resume: str | None = None, **overrides) -> tuple:
    """``fit`` (from ``resume`` when given, tracking the moved parameters), write a checkpoint to ``save`` (every
    rank calls it; rank 0 writes), then ``evaluate`` (``"test"``, ``"validate"`` or None) with the weights of
    ``ckpt`` when given. Returns (trainer, moved-parameters callback)."""
    moved = MovedParameters(out_dir)
    trainer = trainer_for(devices, out_dir, [moved], **overrides)
    if fit:
        trainer.fit(model, dm, ckpt_path=resume)
    if save:
        trainer.save_checkpoint(save)
    if evaluate:
        getattr(trainer, evaluate)(model, dm, ckpt_path=ckpt)
    return trainer, moved


def sasrec(out_dir: Path, devices: int, epochs: int = 3, train_batch: int = 40, resume: str | None = None,
           save: str | None = None, test_ckpt: str | None = None, test: bool = True) -> tuple:
    """SASRec on 40 synthetic training rows (dropout 0, every step sees all 40: ``train_batch`` x ``devices``
    = 40), then exact-ranking test on 13 rows (odd: padding would score one row twice)."""
    from recsys.data.sequences import SeqRecDataModule
    from recsys.methods.sasrec import LitSASRec

    dm = SeqRecDataModule(dataset="synthetic", batch_size=train_batch, eval_batch_size=4, max_train_samples=40,
                          max_eval_samples=13)
    model = LitSASRec(hidden_size=16, num_layers=1, num_heads=2, dropout=0.0, max_length=10, lr=0.01)
    trainer, moved = fit_then_evaluate(model, dm, out_dir, devices, epochs > 0, save, test_ckpt, "test" if test else None,
                                       resume, max_epochs=epochs, limit_val_batches=0)
    return trainer, model, moved, {"global_step": trainer.global_step, "train_rows": len(dm.load().splits["train"])}


def minionerec(out_dir: Path, devices: int, fit: bool = True, save: str | None = None,
               test_ckpt: str | None = None) -> tuple:
    """MiniOneRec SFT (scratch decoder, 2 steps), then the beam (5 beams) and exact tests on 13 rows, the exact
    one limited to the split's first 7 rows (``evaluation.max_exact_rows``)."""
    from recsys.data.sequences import SeqRecDataModule
    from recsys.methods.minionerec import LitMiniOneRec

    dm = SeqRecDataModule(dataset="synthetic", batch_size=8 // devices, eval_batch_size=3, max_train_samples=16,
                          max_eval_samples=13)
    model = LitMiniOneRec(sid_path="random-8x2", tasks=("sid_seq",), decoder=dict(hidden_size=32, num_layers=1, num_heads=2),
                          optimizer=dict(lr=0.005, warmup_steps=0),
                          evaluation=dict(val_num_beams=5, test_num_beams=5, max_exact_rows=7, ks=(1, 5, 20)))
    trainer, moved = fit_then_evaluate(model, dm, out_dir, devices, fit, save, test_ckpt, max_epochs=1, limit_val_batches=0)
    return trainer, model, moved, {}


def tfupt(out_dir: Path, devices: int, fit: bool = True, save: str | None = None, test_ckpt: str | None = None,
          cache_dir: str | None = None) -> tuple:
    """TFUP-T on 101 tiny-random Fashion-MNIST features (odd), 1 warm-up + 1 main epoch, then test."""
    from vlkit.data.fewshot import FewShotDataModule
    from vlkit.methods.tfup import LitTFUPT

    dm = FewShotDataModule(dataset="fashion-mnist", subset_size=101, augment_views=1, batch_size=32, eval_batch_size=16,
                           cache_dir=cache_dir)
    model = LitTFUPT(backbone="tiny-random", warmup_epochs=1, confidence_threshold=0.3)
    trainer, moved = fit_then_evaluate(model, dm, out_dir, devices, fit, save, test_ckpt, max_epochs=2)
    preds = model.test_predictions  # (N, 3): index, prediction, label
    facts = {"test_rows": int(preds.shape[0]), "unique_indices": int(preds[:, 0].unique().numel()),
             "data_rows": int(dm.eval_features.shape[0]), "predictions": preds.tolist()}
    return trainer, model, moved, facts


def repri(out_dir: Path, devices: int) -> tuple:
    """RePRI's three variants on 5 episodes of fold 0 (odd), 2 episodes per batch; nothing is trained."""
    from vlkit.data.episodes import EpisodicDataModule
    from vlkit.methods.repri import LitRePRI

    dm = EpisodicDataModule(dataset="fashion_scenes", folds=[0], shots=2, episodes_per_fold=5, max_shots=3, image_size=64,
                            canvas_size=64, batch_size=2, test_scenes=60, val_scenes=60, min_foreground_pixels=32)
    model = LitRePRI(backbone="tiny-random", iterations=5, oracle_iterations=5, feature_cache=False)
    trainer = trainer_for(devices, out_dir, [])
    trainer.test(model, dm)
    return trainer, model, None, {"data_rows": len(dm.episodes("test"))}


def repri_base(out_dir: Path, devices: int, fit: bool = True, save: str | None = None,
               test_ckpt: str | None = None) -> tuple:
    """RePRI's base training of the head (2 steps on 32 scenes), then its validation mIoU on 33 held-out scenes
    (odd), 4 per batch."""
    from vlkit.data.episodes import EpisodicDataModule
    from vlkit.methods.repri import LitRePRIBaseTraining

    dm = EpisodicDataModule(dataset="fashion_scenes", folds=[0], image_size=64, canvas_size=64, base_training=True,
                            base_batch_size=16 // devices, train_scenes=32, val_scenes=33)
    model = LitRePRIBaseTraining(backbone="tiny-random", num_base_classes=8, bottleneck=16, lr=0.05)
    trainer, moved = fit_then_evaluate(model, dm, out_dir, devices, fit, save, test_ckpt, "validate", max_epochs=1,
                                       check_val_every_n_epoch=2)  # no validation inside fit: validate() only
    return trainer, model, moved, {}


def ares(out_dir: Path, devices: int, fit: bool = True, save: str | None = None, test_ckpt: str | None = None) -> tuple:
    """ARES (AEPO, tiny random LM + LoRA): 1 rollout step, then greedy test on 5 prompts (odd) of levels 1 and 2,
    one prompt per batch (so that no row's padding depends on how the rows are split)."""
    from vlkit.data.reasoning import ReasoningDataModule
    from vlkit.methods.ares import LitARES

    model = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=2), group_size=2, max_new_tokens=8,
                    learning_rate=0.01, filter_groups=False, eval_temperature=0.0, plot_dir=str(out_dir))
    dm = ReasoningDataModule(train_size=2 * devices, val_size=2, test_size=5, levels=[1, 2], prompts_per_batch=2,
                             eval_batch_size=1)
    trainer, moved = fit_then_evaluate(model, dm, out_dir, devices, fit, save, test_ckpt, max_steps=1, limit_val_batches=0)
    return trainer, model, moved, {}


JOBS = {"sasrec": sasrec, "minionerec": minionerec, "tfupt": tfupt, "repri": repri, "repri_base": repri_base,
        "ares": ares}


def run(job: str, out_dir: Path, devices: int, options: dict) -> dict:
    """Run the job from seed 0, then write this rank's report ``rank<r>.json`` and return it."""
    L.seed_everything(0, verbose=False)
    trainer, _model, moved, facts = JOBS[job](Path(out_dir), devices, **options)
    report = {
        "rank": trainer.global_rank, "world_size": trainer.world_size,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "moved": None if moved is None else moved.moved, **facts,
    }
    path = Path(out_dir) / f"rank{trainer.global_rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    os.replace(path.with_suffix(".tmp"), path)
    return report


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]))
