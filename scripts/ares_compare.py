"""GRPO vs AEPO (ARES) on SmolLM2-135M-Instruct with LoRA, generated arithmetic: a comparison sized to decide.

Protocol (nothing is selected on the held-out problems; hyperparameters are fixed in advance):

- the same training problems (``--data-seed``) and step budget for both algorithms; every run starts from the
  same LoRA-initialised model (lora_B = 0, so step 0 is the packaged model); ``--seed`` (at least 2 per
  algorithm) sets the LoRA init, rollout sampling and batch order;
- held-out problems: ``--test-size`` (default 500) distinct generated problems across ``--levels``, none of
  them a training problem (level 1 has only 81 distinct sums: what it cannot fill goes to the other
  levels, round-robin), the same for every run, each answered once by greedy decoding;
- per problem: correct or not, response length (tokens), mean token entropy; the comparison is paired per
  problem (each algorithm's value averaged over its seeds first), with a 95 % bootstrap interval and a
  sign-flip p-value (``vlkit.functional.stats.paired_bootstrap``), overall and per difficulty level;
- over training: every ``--probe-every`` rollouts, greedy answers to a small probe set (``--probe-size`` per
  level, disjoint from training and held-out problems) give length and entropy per level; the training
  rollouts give length and HWE tokens per ARES difficulty bucket (easy / medium / hard by pass rate).

Run each (algorithm, seed) in its own process (they can run side by side), the base model once, then summarise:

    python scripts/ares_compare.py --algorithm grpo --seed 0 --out runs/ares_compare
    python scripts/ares_compare.py --algorithm grpo --seed 1 --out runs/ares_compare
    python scripts/ares_compare.py --algorithm aepo --seed 0 --out runs/ares_compare
    python scripts/ares_compare.py --algorithm aepo --seed 1 --out runs/ares_compare
    python scripts/ares_compare.py --baseline-only --out runs/ares_compare
    python scripts/ares_compare.py --summarize --out runs/ares_compare   # summary.md, summary.json, training_by_level.png

``--quick`` shrinks everything to the tiny random model (seconds; for checking the script). The cost of the
real runs on this machine and on a GPU: docs/experiments-budget.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vlkit.cache import atomic_write_json, atomic_write_text  # noqa: E402  (after the path insert; standard library only)

ALGORITHMS = ("grpo", "aepo")
COMPARISONS = (("aepo", "grpo"), ("grpo", "baseline"), ("aepo", "baseline"))  # (A, B): A minus B
NAMES = {"grpo": "GRPO", "aepo": "AEPO (ARES)", "baseline": "base model"}


# ------------------------------------------------------------------------------------------ problems
def held_out_problems(n: int, levels: list[int], seed: int, exclude: set[str]) -> list:
    """``n`` distinct generated problems, none of whose questions is in ``exclude``, taken round-robin over
    ``levels`` (a level that runs out of distinct problems, like level 1's 81 sums, leaves its share to the
    others); ordered by level, then by generation order."""
    from vlkit.data.reasoning import generate_arithmetic_problems

    pools: dict[int, list] = {lv: [] for lv in levels}
    seen = set(exclude)
    for problem in generate_arithmetic_problems(20 * n + 2000, levels, seed):  # ~0.1 s per 3,000 problems
        if problem.question not in seen:
            seen.add(problem.question)
            pools[problem.level].append(problem)
    chosen: dict[int, list] = {lv: [] for lv in levels}
    taken = 0
    while taken < n and any(len(chosen[lv]) < len(pools[lv]) for lv in levels):
        for lv in levels:
            if taken < n and len(chosen[lv]) < len(pools[lv]):
                chosen[lv].append(pools[lv][len(chosen[lv])])
                taken += 1
    return [p for lv in levels for p in chosen[lv]]


def evaluate_problems(model, problems: list, batch_size: int) -> list[dict]:
    """One greedy answer per problem: ``index``, ``prompt_id``, ``level``, ``correct`` (0/1), ``length`` (tokens up
    to and including EOS) and ``entropy`` (mean full-vocabulary token entropy along the answer, nats)."""
    import torch

    from vlkit.data.reasoning import ReasoningDataset, collate_reasoning
    from vlkit.data.verifier import check_answer
    from vlkit.functional.entropy import token_entropy
    from vlkit.models.policy import decode_completions

    dataset = ReasoningDataset(problems)
    rows = []
    for start in range(0, len(dataset), batch_size):
        batch = collate_reasoning([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
        roll = model.generate(batch["prompt"], None, group_size=1, temperature=0.0)
        mask = roll["completion_mask"]  # (B, T)
        texts = decode_completions(model.bundle.tokenizer, roll["completion_ids"], mask)
        lengths = mask.sum(1)  # (B,)
        with torch.no_grad():
            entropy = token_entropy(roll["logits"], model.hparams.entropy_chunk_size)  # (B, T)
        mean_entropy = (entropy * mask).sum(1) / lengths.clamp(min=1)  # (B,)
        for i, text in enumerate(texts):
            rows.append({"index": start + i, "prompt_id": int(batch["prompt_id"][i]), "level": int(batch["level"][i]),
                         "correct": float(check_answer(text, batch["answer"][i], batch["answer_type"][i])),
                         "length": int(lengths[i]), "entropy": float(mean_entropy[i])})
    return rows


def by_level(rows: list[dict]) -> dict[str, float]:
    """``acc``, ``length``, ``entropy`` overall and ``<key>_level<L>`` per level (means over ``rows``)."""
    out: dict[str, float] = {"problems": float(len(rows))}
    groups = {"": rows, **{f"_level{lv}": [r for r in rows if r["level"] == lv] for lv in sorted({r["level"] for r in rows})}}
    for suffix, group in groups.items():
        for key, field in (("acc", "correct"), ("length", "length"), ("entropy", "entropy")):
            out[f"{key}{suffix}"] = sum(r[field] for r in group) / max(len(group), 1)
    return out


# ------------------------------------------------------------------------------------------ one run
def run(args) -> dict:
    """Train one algorithm with one seed (or, with ``--baseline-only``, only evaluate the packaged model) and
    write ``<out>/<algorithm>/seed<seed>/`` (or ``<out>/baseline/``): ``per_problem.json`` and ``result.json``."""
    import lightning as L
    import torch

    from vlkit.data.reasoning import ReasoningDataModule
    from vlkit.methods.ares import LitARES
    from vlkit.models.language import LanguageModelSettings

    torch.set_num_threads(args.threads)
    out = Path(args.out) / ("baseline" if args.baseline_only else f"{args.algorithm}/seed{args.seed}")
    L.seed_everything(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_name = "tiny-random-lm" if args.quick else args.model
    aepo = args.algorithm == "aepo"
    model = LitARES(
        language_model=LanguageModelSettings(model_name=model_name, lora_r=16, lora_alpha=32),
        algorithm=args.algorithm,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.lr,
        eval_temperature=0.0,  # greedy evaluation for every run
        # GRPO baseline: accuracy reward, constant KL, symmetric clip, no dual clip, no filtering;
        # AEPO: the authors' defaults (clip 0.2/0.3, dual clip 3, per-bucket KL, accuracy filtering)
        dynamic_kl=aepo,
        filter_groups=aepo,
        clip_high=0.3 if aepo else 0.2,
        dual_clip=3.0 if aepo else None,
        plot_dir=str(out),
        max_grad_norm=1.0,  # authors' grad-norm clip
        seed=args.seed,
    )
    dm = ReasoningDataModule(train_size=args.steps * args.prompts_per_batch, val_size=0, test_size=0, levels=args.levels,
                             prompts_per_batch=args.prompts_per_batch, seed=args.data_seed)
    dm.setup("fit")
    train_questions = {p.question for p in dm.train_set.problems}
    test = held_out_problems(args.test_size, args.levels, args.data_seed + 2, train_questions)
    probe = held_out_problems(args.probe_size * len(args.levels), args.levels, args.data_seed + 3,
                              train_questions | {p.question for p in test})
    result: dict = {"algorithm": "baseline" if args.baseline_only else args.algorithm, "args": vars(args),
                    "device": device, "threads": args.threads}
    if not args.baseline_only:
        probes: list[dict] = []

        class LevelProbe(L.Callback):
            """Greedy answers to the probe set before training and every ``--probe-every`` rollouts."""

            def record(self, pl_module, step: int) -> None:
                probes.append({"step": step, **by_level(evaluate_problems(pl_module, probe, args.eval_batch_size))})

            def on_train_start(self, trainer, pl_module):
                self.record(pl_module, 0)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if (batch_idx + 1) % args.probe_every == 0 or batch_idx + 1 == args.steps:
                    self.record(pl_module, batch_idx + 1)

        trainer = L.Trainer(accelerator="auto", devices=1, max_steps=args.steps, max_epochs=1,
                            logger=False, callbacks=[LevelProbe()],  # the signals: MetricHistory's ares_history.json
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1)
        t0 = time.time()
        trainer.fit(model, dm)
        result["train_s"] = time.time() - t0
        result["probes"] = probes
        result["history"] = json.loads((out / "ares_history.json").read_text())["history"]  # MetricHistory's rows
        result["controller"] = model.controller_state()
    model.to(device)
    t0 = time.time()
    rows = evaluate_problems(model, test, args.eval_batch_size)
    result["test_s"] = time.time() - t0
    result["test"] = by_level(rows)
    atomic_write_json(out / "per_problem.json", rows, indent=None)
    atomic_write_json(out / "result.json", result, indent=1)
    return result


# ------------------------------------------------------------------------------------------ summary
def load_runs(out_dir: Path) -> dict[str, dict[int, dict]]:
    """``{"baseline": {0: result}, "grpo": {seed: result}, "aepo": {...}}``, each result with its ``rows``
    (per problem) added; runs not found are absent."""
    runs: dict[str, dict[int, dict]] = {}
    found = [("baseline", 0, out_dir / "baseline")] + [
        (alg, int(p.name[len("seed"):]), p) for alg in ALGORITHMS for p in sorted((out_dir / alg).glob("seed*"))]
    for alg, seed, folder in found:
        if (folder / "result.json").is_file() and (folder / "per_problem.json").is_file():
            result = json.loads((folder / "result.json").read_text())
            result["rows"] = json.loads((folder / "per_problem.json").read_text())
            runs.setdefault(alg, {})[seed] = result
    return runs


def per_problem_means(seeds: dict[int, dict], field: str) -> tuple[list[int], list[int], list[float]]:
    """(prompt ids, levels, the mean of ``field`` over the seeds) per held-out problem, in the runs' order;
    a ValueError when the seeds did not answer the same problems."""
    first = next(iter(seeds.values()))["rows"]
    ids = [r["prompt_id"] for r in first]
    for seed, run in seeds.items():
        if [r["prompt_id"] for r in run["rows"]] != ids:
            raise ValueError(f"seed {seed} answered other held-out problems than seed {next(iter(seeds))}: "
                             "runs compared per problem need the same --test-size, --levels and --data-seed")
    means = [sum(run["rows"][i][field] for run in seeds.values()) / len(seeds) for i in range(len(ids))]
    return ids, [r["level"] for r in first], means


def summarize(out_dir: Path, n_boot: int = 10000) -> dict:
    """Paired comparisons per problem (overall and per level, accuracy and length), written to
    ``summary.json`` and ``summary.md``; the training curves by level and bucket to ``training_by_level.png``."""
    from vlkit.functional.stats import paired_bootstrap

    runs = load_runs(out_dir)
    if not any(alg in runs for alg in ALGORITHMS):
        raise FileNotFoundError(f"no result.json + per_problem.json under {out_dir}/{{grpo,aepo}}/seed*/")
    summary: dict = {"runs": {alg: sorted(seeds) for alg, seeds in runs.items()}, "comparisons": []}
    for a, b in COMPARISONS:
        if a not in runs or b not in runs:
            continue
        for field in ("correct", "length"):
            ids_a, levels, values_a = per_problem_means(runs[a], field)
            ids_b, _, values_b = per_problem_means(runs[b], field)
            if ids_a != ids_b:
                raise ValueError(f"{a} and {b} answered other held-out problems: compare runs of one protocol")
            for bucket in ["all"] + sorted(set(levels)):
                keep = [i for i, lv in enumerate(levels) if bucket == "all" or lv == bucket]
                pa, pb = [values_a[i] for i in keep], [values_b[i] for i in keep]
                diff = paired_bootstrap(pa, pb, n_boot=n_boot)._asdict()
                summary["comparisons"].append({
                    "a": a, "b": b, "seeds_a": len(runs[a]), "seeds_b": len(runs[b]), "metric": field,
                    "bucket": bucket, "mean_a": sum(pa) / len(pa), "mean_b": sum(pb) / len(pb), **diff})
    atomic_write_json(out_dir / "summary.json", summary, indent=1)
    atomic_write_text(out_dir / "summary.md", markdown(summary, runs) + "\n")
    plot_training(runs, out_dir / "training_by_level.png")
    return summary


def markdown(summary: dict, runs: dict[str, dict[int, dict]]) -> str:
    """The per-run table, then the paired table (accuracy in percent, length in tokens)."""
    from vlkit.report import mean_std, percent

    levels = sorted({r["level"] for seeds in runs.values() for run in seeds.values() for r in run["rows"]})
    lines = ["| model | seeds | held-out problems | acc % | " + " | ".join(f"acc L{lv} %" for lv in levels)
             + " | length (tokens) | train wall |", "|---" * (6 + len(levels)) + "|"]
    for alg in ("baseline", *ALGORITHMS):
        if alg not in runs:
            continue
        tests = [run["test"] for run in runs[alg].values()]
        n = len(tests)

        def spread(key: str, rate: bool = True) -> str:
            values = [t.get(key, float("nan")) for t in tests]
            mean = sum(values) / n
            std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
            return mean_std(mean, std, n, decimals=1, rate=rate)

        wall = [run.get("train_s") for run in runs[alg].values() if run.get("train_s")]
        lines.append(f"| {NAMES[alg]} | {n} | {int(tests[0]['problems'])} | {spread('acc')} | "
                     + " | ".join(spread(f"acc_level{lv}") for lv in levels)
                     + f" | {spread('length', rate=False)} | {f'{sum(wall) / len(wall) / 60:.1f} min' if wall else '-'} |")
    lines += ["", "| paired difference (per held-out problem) | level | problems | Δ accuracy pp [95 % CI] | p | "
                  "Δ length tokens [95 % CI] | p |", "|---|---|---|---|---|---|---|"]
    rows: dict[tuple, dict] = {}
    for c in summary["comparisons"]:
        rows.setdefault((c["a"], c["b"], c["bucket"]), {})[c["metric"]] = c
    for (a, b, bucket), metrics in rows.items():
        acc, length = metrics["correct"], metrics["length"]
        sign = lambda v, f: ("+" if v > 0 else "") + f(v)  # noqa: E731
        pp = lambda v: sign(v, percent)  # noqa: E731
        tokens = lambda v: sign(v, lambda x: f"{x:.1f}")  # noqa: E731
        lines.append(f"| {NAMES[a]} ({acc['seeds_a']} seeds) − {NAMES[b]} ({acc['seeds_b']}) | {bucket} | {acc['n']} | "
                     f"{pp(acc['mean'])} [{pp(acc['low'])}, {pp(acc['high'])}] | {acc['p_value']:.3g} | "
                     f"{tokens(length['mean'])} [{tokens(length['low'])}, {tokens(length['high'])}] | {length['p_value']:.3g} |")
    return "\n".join(lines)


def plot_training(runs: dict[str, dict[int, dict]], path: Path) -> Path | None:
    """Length and entropy of the probe answers per level, and length and HWE tokens of the training rollouts
    per ARES bucket, over training steps: one line per (algorithm, seed)."""
    from vlkit.callbacks import plot_metric_history

    steps: dict[int, dict] = {}
    panels: dict[str, list[str]] = {}
    for alg in ALGORITHMS:
        for seed, run in sorted(runs.get(alg, {}).items()):
            label = f"{alg} s{seed}"
            for probe in run.get("probes", []):
                row = steps.setdefault(probe["step"], {"step": probe["step"]})
                for key, value in probe.items():
                    if "_level" in key and not key.startswith("acc"):
                        what, level = key.split("_level")
                        panel = f"probe {what} L{level}"
                        row[f"{label} {panel}"] = value
                        panels.setdefault(panel, []).append(f"{label} {panel}")
            for h in run.get("history", []):
                row = steps.setdefault(h["step"], {"step": h["step"]})
                for bucket in ("easy", "medium", "hard"):
                    for key, what in (("length", "length"), ("hwe_count", "HWE tokens")):
                        if f"train/{key}_{bucket}" in h:
                            panel = f"rollouts {what} ({bucket})"
                            row[f"{label} {panel}"] = h[f"train/{key}_{bucket}"]
                            panels.setdefault(panel, []).append(f"{label} {panel}")
    if not panels:
        return None
    panels = {title: sorted(set(keys)) for title, keys in sorted(panels.items())}
    return plot_metric_history([steps[s] for s in sorted(steps)], panels, path, x="step", columns=4)


def main(argv=None):
    """Parse the options (``--help``) and run one training, the baseline or the summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", choices=ALGORITHMS, default="aepo")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=40, help="rollout batches of training")
    p.add_argument("--prompts-per-batch", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="difficulty levels (train and held out)")
    p.add_argument("--test-size", type=int, default=500, help="distinct held-out problems")
    p.add_argument("--probe-size", type=int, default=8, help="probe problems per level, answered during training")
    p.add_argument("--probe-every", type=int, default=10, help="rollouts between two probes")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0, help="LoRA init, rollout sampling and batch order")
    p.add_argument("--data-seed", type=int, default=0, help="training, held-out and probe problems (keep it fixed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline-only", action="store_true", help="only evaluate the untrained model (<out>/baseline/)")
    p.add_argument("--out", default="runs/ares_compare")
    p.add_argument("--summarize", action="store_true", help="compare every run under --out (nothing is trained)")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the paired intervals")
    p.add_argument("--quick", action="store_true", help="tiny random model, 2 steps, 10 problems (checks the script)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.test_size, args.probe_size, args.probe_every = 2, 10, 1, 1
        args.eval_batch_size, args.max_new_tokens, args.n_boot = 10, 8, 1000
    if args.summarize:
        summarize(Path(args.out), args.n_boot)
        print((Path(args.out) / "summary.md").read_text())
        return
    r = run(args)
    print(json.dumps({k: r[k] for k in ("algorithm", "test", "train_s", "test_s") if k in r}, indent=1))


if __name__ == "__main__":
    main()
