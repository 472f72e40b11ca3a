"""The FSDP jobs of the 2-rank tests, run as ``python _fsdp_worker.py <job> <out_dir> <devices> '<options JSON>'``
(or, on one process, through ``_worker.run`` from the test process itself).

With ``devices=2`` the Trainer uses Lightning's ``ModelParallelStrategy`` on CPU (gloo, data-parallel size 2,
tensor-parallel size 1) and the LightningModule's ``configure_model`` shards the language model with FSDP2
(``fully_shard``); on 1 process the default single-device strategy runs the same job unsharded. The jobs plug
into ``_worker.py``'s runner (seed 0, one ``rank<r>.json`` per rank) and report, besides the metrics: how each
parameter is split (``shards``), the training metrics of every step (``steps``), the parameters that moved and,
from rank 0, the full weights at the end of fit (``trained.pt``, gathered from the shards).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _worker  # noqa: E402  (this folder's runner: run(), trainer_for())


class ShardedWeights(L.Callback):
    """Records, on every rank: how each parameter is sharded (after ``configure_model``), the logged ``train/*``
    values of each step, and which parameters moved during fit; rank 0 writes the full trained weights."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.shards: dict[str, dict] = {}
        self.steps: list[dict[str, float]] = []
        self.moved: list[str] | None = None

    @staticmethod
    def full(module) -> dict[str, torch.Tensor]:
        """Every parameter as a full tensor (DTensors gathered: every rank must call this)."""
        from torch.distributed.tensor import DTensor

        return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for n, p in module.named_parameters()}

    def on_train_start(self, trainer, pl_module) -> None:
        """Note each parameter's class, placements and local/global sizes; keep the full initial weights."""
        from torch.distributed.tensor import DTensor

        for name, p in pl_module.named_parameters():
            sharded = isinstance(p, DTensor)
            self.shards[name] = {"dtensor": sharded, "placements": [str(x) for x in p.placements] if sharded else [],
                                 "local": (p.to_local() if sharded else p).numel(), "global": p.numel(),
                                 "rows": p.shape[0] if p.dim() else 1}
        self.initial = self.full(pl_module)
        if trainer.global_rank == 0:
            torch.save(self.initial, self.out_dir / "initial.pt")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """The step's logged training values."""
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    def on_train_end(self, trainer, pl_module) -> None:
        """Names of the parameters that changed; rank 0 saves the full trained weights."""
        trained = self.full(pl_module)
        self.moved = sorted(n for n, p in trained.items() if not torch.equal(p, self.initial[n]))
        if trainer.global_rank == 0:
            torch.save(trained, self.out_dir / "trained.pt")


def fsdp_trainer(devices: int, out_dir: Path, callbacks: list, sharded: bool | None = None, **overrides) -> L.Trainer:
    """``_worker.trainer_for`` with ``ModelParallelStrategy`` (FSDP2 over all ranks) when ``sharded`` (default: on
    more than one process)."""
    if devices > 1 if sharded is None else sharded:
        from lightning.pytorch.strategies import ModelParallelStrategy

        overrides["strategy"] = ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1)
    return _worker.trainer_for(devices, out_dir, callbacks, **overrides)


def with_distributed_train_sampler(dm: L.LightningDataModule) -> L.LightningDataModule:
    """On one process, give ``dm``'s training loader the sampler Lightning gives each rank of a distributed run
    (a ``DistributedSampler``, here over 1 replica): it draws nothing from the global RNG, where the loader's own
    ``RandomSampler`` draws a seed per epoch, so the runs sample their rollouts from the same random stream."""
    from torch.utils.data import DataLoader, DistributedSampler

    make = dm.train_dataloader

    def train_dataloader() -> DataLoader:
        loader = make()
        sampler = DistributedSampler(loader.dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
                          drop_last=loader.drop_last, generator=loader.generator)

    dm.train_dataloader = train_dataloader
    return dm


def facts_of(trainer: L.Trainer, recorder: ShardedWeights) -> dict:
    """What every FSDP job reports besides the metrics: the shards, the steps, the optimiser's step count."""
    states = trainer.optimizers[0].state.values() if trainer.optimizers else []
    adam_steps = sorted({int(state["step"]) for state in states if "step" in state})
    return {"shards": recorder.shards, "steps": recorder.steps, "global_step": trainer.global_step,
            "adam_steps": adam_steps}


def ares_fsdp(out_dir: Path, devices: int, fit: bool = True, save: str | None = None, test_ckpt: str | None = None,
              resume: str | None = None, max_steps: int = 3, accelerator: str = "cpu", precision: str = "32-true",
              sharded: bool | None = None) -> tuple:
    """ARES (AEPO, tiny random LM + LoRA r 2, KL to the disabled adapter): ``max_steps`` rollout steps on one
    training prompt (2 ranks: the distributed sampler pads the shard, so both ranks draw the same prompt, the
    same rollouts, the same gradient), then greedy test on 4 prompts, one per batch (2 batches per rank).
    ``accelerator``, ``precision`` and ``sharded`` (FSDP on one device too) serve the GPU test."""
    from vlkit.data.reasoning import ReasoningDataModule
    from vlkit.methods.ares import LitARES

    model = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=2), group_size=2, max_new_tokens=8,
                    learning_rate=0.05, filter_groups=False, eval_temperature=0.0, threshold_quantile=0.5,
                    plot_dir=str(out_dir))
    dm = ReasoningDataModule(train_size=1, val_size=2, test_size=4, levels=[1, 2], prompts_per_batch=1,
                             eval_batch_size=1)
    if devices == 1:
        with_distributed_train_sampler(dm)
    recorder = ShardedWeights(out_dir)
    trainer = fsdp_trainer(devices, out_dir, [recorder], sharded, max_steps=max_steps, limit_val_batches=0,
                           accelerator=accelerator, precision=precision)
    if fit:
        L.seed_everything(0, verbose=False)  # as Lightning's distributed strategies re-seed at set-up
        trainer.fit(model, dm, ckpt_path=resume)
    if save:
        trainer.save_checkpoint(save)  # 2 ranks: a distributed checkpoint folder (each rank writes its shards)
    trainer.test(model, dm, ckpt_path=test_ckpt)
    return trainer, model, recorder, facts_of(trainer, recorder)


def minionerec_fsdp(out_dir: Path, devices: int, backbone: str, fit: bool = True, save: str | None = None,
                    test_ckpt: str | None = None, resume: str | None = None, max_epochs: int = 1) -> tuple:
    """MiniOneRec SFT of a pretrained-style Hugging Face Llama (``backbone``, full fine-tuning): 16 training rows,
    8 per step (2 ranks: 4 each, the same 8 rows as 1 process's step, every response 3 tokens long, so the
    mean of the ranks' losses is the 1-process loss), then beam (5 beams) and exact tests on 12 rows (2 batches
    of 3 per rank)."""
    from recsys.data.sequences import SeqRecDataModule
    from recsys.methods.minionerec import LitMiniOneRec

    dm = SeqRecDataModule(dataset="synthetic", batch_size=8 // devices, eval_batch_size=3, max_train_samples=16,
                          max_eval_samples=12)
    model = LitMiniOneRec(sid_path="random-8x2", tasks=("sid_seq",), decoder=dict(backbone=backbone),
                          optimizer=dict(lr=0.005, warmup_steps=0),
                          evaluation=dict(val_num_beams=5, test_num_beams=5, ks=(1, 5, 10)))
    if devices == 1:
        with_distributed_train_sampler(dm)
    recorder = ShardedWeights(out_dir)
    trainer = fsdp_trainer(devices, out_dir, [recorder], max_epochs=max_epochs, limit_val_batches=0)
    if fit:
        trainer.fit(model, dm, ckpt_path=resume)
    if save:
        trainer.save_checkpoint(save)
    trainer.test(model, dm, ckpt_path=test_ckpt)
    return trainer, model, recorder, facts_of(trainer, recorder)


JOBS = {"ares_fsdp": ares_fsdp, "minionerec_fsdp": minionerec_fsdp}
_worker.JOBS.update(JOBS)


def run(job: str, out_dir: Path, devices: int, options: dict) -> dict:
    """``_worker.run`` on this file's jobs."""
    return _worker.run(job, out_dir, devices, options)


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]))
