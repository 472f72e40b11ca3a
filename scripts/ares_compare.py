"""Offline GRPO vs AEPO (ARES) on SmolLM2-135M-Instruct with LoRA, generated arithmetic, same budget.

Each algorithm trains from the same LoRA-initialised model (lora_B = 0, so step 0 is the packaged model),
the same seed, prompts and step budget; then both are evaluated on the same held-out problems with greedy
decoding (per-level accuracy, response length and HWE-token count, HWE measured with each run's own
threshold tau). Nothing is selected on the test split: hyperparameters are fixed in advance.

Run one algorithm per process (they can run side by side), then summarise:
    python scripts/ares_compare.py --algorithm grpo --out runs/ares_compare
    python scripts/ares_compare.py --algorithm aepo --out runs/ares_compare --baseline
    python scripts/ares_compare.py --baseline-only --out runs/ares_compare   # or this, separately
    python scripts/ares_compare.py --summarize --out runs/ares_compare
``--quick`` shrinks everything to a tiny random model (seconds; for checking the script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vlkit.cache import atomic_write_json  # noqa: E402  (after the path insert; standard library only)


def run(args) -> dict:
    import lightning as L
    import torch

    from vlkit.data.reasoning import ReasoningDataModule
    from vlkit.methods.ares import LitARES
    from vlkit.models.language import LanguageModelSettings

    torch.set_num_threads(args.threads)
    out = Path(args.out) / ("baseline" if args.baseline_only else args.algorithm)
    L.seed_everything(args.seed)
    model_name = "tiny-random-lm" if args.quick else args.model
    model = LitARES(
        language_model=LanguageModelSettings(model_name=model_name, lora_r=16, lora_alpha=32),
        algorithm=args.algorithm,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.lr,
        eval_temperature=0.0,  # greedy evaluation for both runs
        # GRPO baseline: accuracy reward, constant KL, symmetric clip, no dual clip, no filtering;
        # AEPO: the authors' defaults (clip 0.2/0.3, dual clip 3, per-bucket KL, accuracy filtering)
        dynamic_kl=args.algorithm == "aepo",
        filter_groups=args.algorithm == "aepo",
        clip_high=0.3 if args.algorithm == "aepo" else 0.2,
        dual_clip=3.0 if args.algorithm == "aepo" else None,
        plot_dir=str(out),
        max_grad_norm=1.0,  # authors' grad-norm clip
        seed=args.seed,
    )
    dm = ReasoningDataModule(
        train_size=args.steps * args.prompts_per_batch, val_size=0, test_size=args.test_size, levels=args.levels,
        prompts_per_batch=args.prompts_per_batch, eval_batch_size=args.eval_batch_size, seed=args.seed,
    )

    def trainer(**kw):
        return L.Trainer(accelerator="auto", devices=1, logger=L.pytorch.loggers.CSVLogger(str(out), name="logs"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1, **kw)

    result = {"algorithm": args.algorithm, "args": vars(args)}
    if args.baseline_only:  # the packaged model (LoRA B = 0) on the test split, nothing else
        t0 = time.time()
        test = trainer().test(model, dm, verbose=False)[0]
        atomic_write_json(Path(args.out) / "baseline_test.json", {**test, "test_s": time.time() - t0}, indent=1)
        return {"baseline_test": test}
    if args.baseline:
        t0 = time.time()
        result["baseline_test"] = trainer().test(model, dm, verbose=False)[0]
        result["baseline_test_s"] = time.time() - t0
    t0 = time.time()
    trainer(max_steps=args.steps, max_epochs=1).fit(model, dm)
    result["train_s"] = time.time() - t0
    t0 = time.time()
    result["test"] = trainer().test(model, dm, verbose=False)[0]
    result["test_s"] = time.time() - t0
    result["history"] = json.loads((out / "ares_history.json").read_text())["history"]  # MetricHistory's rows
    result["controller"] = model.controller_state()
    atomic_write_json(out / "result.json", result, indent=1)
    return result


def summarize(out_dir: Path) -> str:
    rows = {}
    for alg in ("grpo", "aepo"):
        path = out_dir / alg / "result.json"
        if path.exists():
            rows[alg] = json.loads(path.read_text())
    if not rows:
        raise FileNotFoundError(f"no result.json under {out_dir}/{{grpo,aepo}}")
    levels = sorted({int(k.rsplit("level", 1)[1]) for r in rows.values() for k in r["test"] if "acc_level" in k})
    lines = ["| model | test acc | " + " | ".join(f"acc L{lv}" for lv in levels) + " | "
             + " | ".join(f"len L{lv}" for lv in levels) + " | HWE/resp | train reward (last 10) | train HWE (mean) | train wall |",
             "|---" * (6 + 2 * len(levels)) + "|"]
    base = next((r["baseline_test"] for r in rows.values() if "baseline_test" in r), None)
    if base is None and (out_dir / "baseline_test.json").exists():  # from an earlier --baseline run
        base = json.loads((out_dir / "baseline_test.json").read_text())

    def fmt(test: dict, name: str, extra: str, hwe: bool = True) -> str:
        accs = " | ".join(f"{test.get(f'test/acc_level{lv}', float('nan')):.3f}" for lv in levels)
        lens = " | ".join(f"{test.get(f'test/length_level{lv}', float('nan')):.1f}" for lv in levels)
        hwe_text = f"{test['test/hwe_count']:.2f}" if hwe else "-"
        return f"| {name} | {test['test/acc']:.3f} | {accs} | {lens} | {hwe_text} | {extra} |"

    if base is not None:  # before training tau is unset, so no HWE count
        lines.append(fmt(base, "base model (no RL)", "- | - | -", hwe=False))
    for alg, r in rows.items():
        hist = r["history"]
        last = hist[-10:]
        reward = sum(h["train/reward"] for h in last) / max(len(last), 1)
        hwe = sum(h["train/hwe_count"] for h in hist) / max(len(hist), 1)
        lines.append(fmt(r["test"], f"+ LoRA {alg.upper()}", f"{reward:.3f} | {hwe:.2f} | {r['train_s'] / 60:.1f} min"))
    table = "\n".join(lines)
    (out_dir / "summary.md").write_text(table + "\n")
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", choices=["grpo", "aepo"], default="aepo")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts-per-batch", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--test-size", type=int, default=90)
    p.add_argument("--eval-batch-size", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline", action="store_true", help="also evaluate the model before training")
    p.add_argument("--baseline-only", action="store_true", help="only evaluate the untrained model (baseline_test.json)")
    p.add_argument("--out", default="runs/ares_compare")
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny random model, 2 steps (checks the script)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.test_size, args.eval_batch_size, args.max_new_tokens = 2, 6, 6, 8
    if args.summarize:
        print(summarize(Path(args.out)))
        return
    r = run(args)
    print(json.dumps({k: v for k, v in r.items() if k not in ("history", "args")}, indent=1))


if __name__ == "__main__":
    main()
