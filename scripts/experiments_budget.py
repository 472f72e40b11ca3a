"""What one step of the issue-14 experiments costs on this machine: the numbers behind docs/experiments-budget.md.

Times, on the CPU (or the GPU with ``--device cuda``), with ``--threads`` intra-op threads:

- MiniOneRec on SmolLM2-135M-Instruct (the packaged offline weights), LoRA and full fine-tuning: one SFT
  optimiser step on a batch of the authors' task mix (the first SFT rows of every task, batch ``--batch``),
  one RL rollout (``--rl-prompts`` prompts x 16 constrained beams, then K = 2 clipped-surrogate updates), and
  50-beam constrained evaluation of ``--eval-rows`` test rows (rows per CPU-second);
- ARES on SmolLM2-135M-Instruct + LoRA: one AEPO training step (4 prompts x 4 samples, 48 new tokens).

The authors' released semantic IDs of the Amazon category give the trie (unique random 4-level IDs on
MovieLens); the cost of exact ranking grows with the trie's distinct prefixes. Each timing is the median of
``--repeats`` after one warm-up step.

    python scripts/experiments_budget.py                           # everything, one thread
    python scripts/experiments_budget.py --only ares --threads 1
    python scripts/experiments_budget.py --quick                   # tiny random models (checks the script)

Prints one line per measurement, ``BUDGET <name> wall <s> s, cpu <s> s``: the median wall time and the
median CPU time of this process (with one thread, what the step costs on an idle core; on a shared machine
the wall time also holds the waits for the other jobs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Clock:
    """Wall and CPU seconds (``time.process_time``: this process's CPU time, all its threads) of repeated steps.
    On a shared machine the wall time grows with the other jobs' load; the CPU time of a one-thread run is
    what the step costs on an idle core."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def start(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])

    def text(self, skip_first: bool = False) -> str:
        wall, cpu = (self.wall[1:], self.cpu[1:]) if skip_first and len(self.wall) > 1 else (self.wall, self.cpu)
        return f"wall {statistics.median(wall):.2f} s, cpu {statistics.median(cpu):.2f} s"

    def cpu_median(self, skip_first: bool = False) -> float:
        return statistics.median(self.cpu[1:] if skip_first and len(self.cpu) > 1 else self.cpu)


def _timed(step, repeats: int) -> _Clock:
    step()  # warm-up: allocations, lazy imports, first-call kernel choices
    clock = _Clock()
    for _ in range(repeats):
        clock.start()
        step()
        clock.stop()
    return clock


def _timer_callback(clock: _Clock):
    """A Lightning callback that times every training batch (rollout + updates) on ``clock``."""
    import lightning as L

    class Timer(L.Callback):
        def on_train_batch_start(self, *unused):
            clock.start()

        def on_train_batch_end(self, *unused):
            clock.stop()

    return Timer()


def minionerec_budget(args, lora_r: int) -> None:
    import torch

    from recsys.data.sequences import SeqRecDataModule
    from recsys.methods.minionerec import LitMiniOneRec, LitMiniOneRecRL
    from recsys.data.prompts import TASKS

    tag = "lora" if lora_r else "full"
    dataset = "synthetic" if args.quick else args.dataset
    backbone = args.tiny_backbone if args.quick else "smollm2"
    # the authors' released IDs of an Amazon category (the real trie: 48 / 2,295 / 3,670 / 3,686 prefixes per level
    # on Industrial), unique random 4-level IDs elsewhere
    sid_path = "random-8x2" if args.quick else "released" if dataset.startswith("amazon18") else "random-16x4"
    data = SeqRecDataModule(dataset=dataset).load()
    decoder = dict(backbone=backbone, lora_r=lora_r, lora_alpha=32)
    module = LitMiniOneRec(sid_path=sid_path, tasks=tuple(TASKS), max_prompt_tokens=256, decoder=decoder)
    module.build(data)
    module.to(args.device)
    rows = module.train_rows(data)
    per_task = max(1, args.batch // len(TASKS))  # a batch of the task mix: the same number of rows of each task
    by_task, offset = [], 0
    for task in module.hparams.tasks:  # train_rows concatenates the tasks in this order
        count = len(data.item_ids) if task in ("sid2title", "title2sid") else len(data.splits["train"])
        by_task += rows[offset: offset + per_task]
        offset += count
    batch = {k: v.to(args.device) for k, v in module.collate_train(by_task[: args.batch]).items()}
    tokens = int(batch["attention_mask"].sum())
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)

    def sft_step():
        loss = module.lm_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    clock = _timed(sft_step, args.repeats)
    print(f"BUDGET minionerec_sft_step_{tag} {clock.text()}  (batch {len(by_task[: args.batch])} rows, "
          f"{batch['input_ids'].shape[1]} tokens padded, {tokens} real tokens, "
          f"{sum(p.numel() for p in trainable) / 1e6:.1f} M trainable)", flush=True)

    eval_rows = data.splits["test"][: args.eval_rows]
    prompts = module.collate_eval(eval_rows)["prompts"]
    beams = min(50, module.trie.codes.shape[0])
    clock = _timed(lambda: module.recommend(prompts, beams), max(1, args.repeats // 2))
    print(f"BUDGET minionerec_beam50_eval_{tag} {clock.text()} for {len(prompts)} rows = "
          f"{len(prompts) / clock.cpu_median():.2f} rows per cpu-second", flush=True)

    if args.exact_rows:
        from recsys.models.constrained import score_all_items

        exact_prompts = prompts[: args.exact_rows]
        clock = _Clock()  # one call, no warm-up: the beam search above already ran the model
        clock.start()
        score_all_items(module.model, exact_prompts, module.trie, module.tokenizer.pad_token_id)
        clock.stop()
        print(f"BUDGET minionerec_exact_eval_{tag} {clock.text()} for {len(exact_prompts)} rows x "
              f"{module.trie.codes.shape[0]} items = {len(exact_prompts) / clock.cpu_median():.3f} rows per cpu-second",
              flush=True)
    if args.skip_rl:
        return
    import lightning as L

    rl = LitMiniOneRecRL(sid_path=sid_path, tasks=tuple(TASKS), max_prompt_tokens=256, decoder=decoder,
                         rl=dict(group_size=16, updates_per_rollout=2))
    rl.build(data)
    rl.to(args.device)
    from torch.utils.data import DataLoader

    rollout_rows = data.splits["train"][: args.rl_prompts]  # the same prompts every step
    trainer = L.Trainer(accelerator="cuda" if args.device == "cuda" else "cpu", devices=1, max_steps=args.repeats + 1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    clock = _Clock()

    class OneBatch(L.LightningDataModule):
        def load(self):
            return data

        def connect(self, **kw):
            pass

        def train_dataloader(self):
            return DataLoader(rollout_rows * (args.repeats + 1), batch_size=args.rl_prompts, collate_fn=rl.collate_eval)

    trainer.callbacks.append(_timer_callback(clock))
    trainer.fit(rl, datamodule=OneBatch())
    print(f"BUDGET minionerec_rl_step_{tag} {clock.text(skip_first=True)}  ({args.rl_prompts} prompts x 16 beams, 2 updates; "
          f"the configs' rollouts have 16 prompts)", flush=True)


def ares_budget(args) -> None:
    import lightning as L

    from vlkit.data.reasoning import ReasoningDataModule
    from vlkit.methods.ares import LitARES
    from vlkit.models.language import LanguageModelSettings

    model_name = "tiny-random-lm" if args.quick else "smollm2-135m-instruct"
    clock = _Clock()
    model = LitARES(language_model=LanguageModelSettings(model_name=model_name, lora_r=16, lora_alpha=32),
                    algorithm="aepo", group_size=4, max_new_tokens=8 if args.quick else 48, learning_rate=1e-4,
                    seed=0)
    dm = ReasoningDataModule(train_size=4 * (args.repeats + 1), val_size=0, test_size=0, levels=[1, 2, 3],
                             prompts_per_batch=4, seed=0)
    trainer = L.Trainer(accelerator="cuda" if args.device == "cuda" else "cpu", devices=1, max_steps=args.repeats + 1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[_timer_callback(clock)])
    trainer.fit(model, dm)
    print(f"BUDGET ares_aepo_step {clock.text(skip_first=True)}  (4 prompts x 4 samples, <= {model.hparams.max_new_tokens} new "
          "tokens, LoRA r 16: rollout + scoring + 1 update)", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["all", "minionerec", "ares"], default="all")
    p.add_argument("--dataset", default="amazon18-industrial", help="MiniOneRec data set (its test rows and titles)")
    p.add_argument("--batch", type=int, default=64, help="SFT rows per step (the configs' batch_size)")
    p.add_argument("--eval-rows", type=int, default=16, help="test rows of the 50-beam evaluation timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1: cpu seconds = idle-core seconds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-rl", action="store_true", help="MiniOneRec: SFT step and evaluation only")
    p.add_argument("--rl-prompts", type=int, default=16, help="prompts per RL rollout (16 beams each)")
    p.add_argument("--exact-rows", type=int, default=1, help="test rows of the exact-ranking timing (0: skip it)")
    p.add_argument("--variants", nargs="+", choices=["lora", "full"], default=["lora", "full"],
                   help="MiniOneRec fine-tuning variants to time")
    p.add_argument("--quick", action="store_true", help="tiny random models on synthetic data (checks the script)")
    p.add_argument("--tiny-backbone", default=None, help="--quick: a tiny Hugging Face causal-LM folder (default: built)")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    print(f"# {args.threads} thread(s), device {args.device}, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if args.quick:
        args.batch, args.eval_rows, args.repeats = min(args.batch, 12), min(args.eval_rows, 4), 1
        if args.tiny_backbone is None:
            args.tiny_backbone = str(_tiny_llama(Path(os.environ.get("TMPDIR", "/tmp")) / "vlkit_budget_tiny_llama"))
    if args.only in ("all", "minionerec"):
        for variant in args.variants:
            minionerec_budget(args, 16 if variant == "lora" else 0)
    if args.only in ("all", "ares"):
        ares_budget(args)


def _tiny_llama(folder: Path) -> Path:
    """A 1-layer random Llama with SmolLM2's tokenizer in ``folder`` (SmolLM2's shape but 16-d)."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    from vlkit.models.pretrained import smollm2_dir

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(smollm2_dir()) / name, folder / name)
    config = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


if __name__ == "__main__":
    main()
