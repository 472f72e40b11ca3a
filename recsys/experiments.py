"""The full MiniOneRec pipeline on one data set, stage by stage through the ``vlkit`` CLI and the YAML
configs: RQ-VAE IDs -> SASRec baseline -> MiniOneRec SFT -> MiniOneRec RL, each tested on the same split.

    python -m recsys.experiments --dataset amazon18-industrial --out runs/minionerec [--trainer.x=... overrides]

Writes ``<out>/<dataset>/results.json`` after every stage (metrics of every test, wall times), so a run
cut short keeps what it finished. Model selection uses the validation split only (checkpoint with the
best ``val/ndcg@10``); the test split is evaluated once per stage.
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
CONFIG_STEM = {"amazon18-industrial": "amazon18-industrial", "amazon18-office": "amazon18-office", "movielens": "movielens"}
STAGES = ("rqvae", "sasrec", "sft", "rl")  # in the order they run

__all__ = ["STAGES", "parse_stages", "run_stage", "read_metrics", "best_checkpoint", "markdown_table", "main"]


def _overlay(tmp: Path, command: str, monitor: str | None, patience: int | None) -> Path:
    callbacks = ["    - class_path: vlkit.callbacks.ParameterDrift\n"]
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
        "  enable_checkpointing: true\n  callbacks:\n" + "".join(callbacks)
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
              patience: int | None = None) -> dict[str, float]:
    """``vlkit <command> --config <config>`` in-process with a CSV logger, the drift callback and (when
    ``monitor`` is given) best-checkpointing / early stopping on it; returns the logged metrics."""
    from vlkit.cli import main

    if (tmp / command).exists():
        shutil.rmtree(tmp / command)  # stale checkpoints or metrics of an earlier run must never be read
    tmp.mkdir(parents=True, exist_ok=True)
    overlay = _overlay(tmp, command, monitor, patience)
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
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"--stages must be a comma-separated list of {', '.join(STAGES)}, got {text!r} "
                          f"(unknown: {', '.join(repr(s) for s in unknown)})", argument="stages")
    return stages


def _check_stage_inputs(stages: list[str], root: Path) -> None:
    """Stages that read an earlier stage's output need it on disk (or that stage in this run)."""
    from vlkit.errors import ConfigError

    if {"sft", "rl"} & set(stages) and "rqvae" not in stages and not (root / "sid_index.json").exists():
        raise ConfigError(f"--stages {','.join(stages)} needs semantic IDs: add 'rqvae' to --stages or run it first "
                          f"(no {root / 'sid_index.json'})", argument="stages")
    if "rl" in stages and "sft" not in stages and not (root / "sft" / "fit" / "version_0" / "checkpoints").is_dir():
        raise ConfigError(f"--stages rl starts from the SFT checkpoint: add 'sft' to --stages or run it first "
                          f"(no checkpoint under {root / 'sft'})", argument="stages")


def main(argv: list[str] | None = None) -> dict:
    """Run the chosen stages (see the module docstring); a bad ``--stages`` exits 2 with a one-line error."""
    from vlkit.errors import ConfigError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon18-industrial", choices=sorted(CONFIG_STEM))
    parser.add_argument("--out", default="runs/minionerec")
    parser.add_argument("--stages", default="rqvae,sasrec,sft,rl")
    parser.add_argument("--report", action="store_true", help="only print the markdown table of <out>/*/results.json")
    args, extra = parser.parse_known_args(argv)
    if args.report:
        print(markdown_table(args.out))
        return {}
    args.extra = extra  # any other --key=value goes to every fit and test, e.g. --trainer.max_time=00:00:01:00
    stem = CONFIG_STEM[args.dataset]
    root = Path(args.out) / args.dataset
    try:  # before any directory is made or any stage starts
        stages = parse_stages(args.stages)
        _check_stage_inputs(stages, root)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    results: dict = json.loads(results_path.read_text()) if results_path.exists() else {}
    sid_path = root / "sid_index.json"

    def record(name: str, metrics: dict, start: float) -> None:
        results[name] = {"wall_s": round(time.time() - start, 1), **_clean(metrics)}
        atomic_write_text(results_path, json.dumps(results, indent=1, sort_keys=True))  # a kill keeps the last whole file
        print(f"[{name}] {results[name]}", flush=True)

    if "rqvae" in stages:
        t = time.time()
        cfg = CONFIGS / "rqvae" / f"{stem}_minilm.yaml"
        run_stage("fit", cfg, root / "rqvae", f"--model.init_args.sid_path={sid_path}", *args.extra)
        m = run_stage("test", cfg, root / "rqvae", f"--model.init_args.sid_path={sid_path}",
                      f"--ckpt_path={best_checkpoint(root / 'rqvae')}", *args.extra)
        record("rqvae", m, t)
    if "sasrec" in stages:
        t = time.time()
        cfg = CONFIGS / "sasrec" / f"{stem}_baseline.yaml"
        run_stage("fit", cfg, root / "sasrec", *args.extra, monitor="val/ndcg@10", patience=5)
        record("sasrec", run_stage("test", cfg, root / "sasrec", f"--ckpt_path={best_checkpoint(root / 'sasrec')}",
                                    *args.extra), t)
    if "sft" in stages:
        t = time.time()
        cfg = CONFIGS / "minionerec" / f"{stem}_sft.yaml"
        sid = [f"--model.init_args.sid_path={sid_path}"]
        run_stage("fit", cfg, root / "sft", *sid, *args.extra, monitor="val/ndcg@10", patience=3)
        record("sft", run_stage("test", cfg, root / "sft", *sid, f"--ckpt_path={best_checkpoint(root / 'sft')}",
                                 *args.extra), t)
    if "rl" in stages:
        t = time.time()
        cfg = CONFIGS / "minionerec" / f"{stem}_rl.yaml"
        sid = [f"--model.init_args.sid_path={sid_path}",
               f"--model.init_args.init_checkpoint={best_checkpoint(root / 'sft')}"]
        run_stage("fit", cfg, root / "rl", *sid, *args.extra, monitor="val/ndcg@10")
        record("rl", run_stage("test", cfg, root / "rl", *sid, f"--ckpt_path={best_checkpoint(root / 'rl')}",
                                *args.extra), t)
    return results


def markdown_table(out: str | Path = "runs/minionerec", datasets: tuple[str, ...] = ("amazon18-industrial", "movielens")) -> str:
    """The README table from ``results.json`` files: HR@10 / NDCG@10 (+- 95 % half-width) per stage."""
    lines = ["| data | model | HR@10 (beam) | NDCG@10 (beam) | HR@10 (exact) | NDCG@10 (exact) | test rows (beam/exact) | wall |",
             "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        path = Path(out) / ds / "results.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        for stage, name in (("sasrec", "SASRec (full ranking)"), ("sft", "MiniOneRec SFT"), ("rl", "MiniOneRec SFT+RL")):
            if stage not in res:
                continue
            r = res[stage]
            cell = lambda k: f"{r[k]:.4f} ± {r.get(k + '_ci', float('nan')):.4f}" if k in r else "-"
            rows = f"{int(r.get('test/rows', 0))}/{int(r.get('test/exact_rows', 0))}" if stage != "sasrec" else f"{int(r.get('test/rows', 0))} (exact)"
            exact_hr = cell("test/exact_hr@10") if stage != "sasrec" else cell("test/hr@10")
            exact_ndcg = cell("test/exact_ndcg@10") if stage != "sasrec" else cell("test/ndcg@10")
            beam_hr = cell("test/hr@10") if stage != "sasrec" else "-"
            beam_ndcg = cell("test/ndcg@10") if stage != "sasrec" else "-"
            lines.append(f"| {ds} | {name} | {beam_hr} | {beam_ndcg} | {exact_hr} | {exact_ndcg} | {rows} | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
