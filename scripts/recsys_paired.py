"""Rebuild the recommendation tables from saved results, without training or evaluating anything.

Reads every ``<out>/<dataset>/results.json`` and each ranking stage's ``<stage>/row_ranks.json`` (the test
rows' target ranks that ``python -m recsys.experiments`` saves), recomputes the paired differences between
every two stages on their common test rows (HR@10 / NDCG@10, 95 % bootstrap interval, sign-flip p-value;
``recsys.experiments.paired_differences``), stores them under each stage's ``paired`` in ``results.json``
and prints the markdown tables of the README (``recsys.experiments.markdown_table``):

    python scripts/recsys_paired.py --out runs/minionerec
    python scripts/recsys_paired.py --out runs/minionerec --dataset amazon18-industrial --n-boot 20000

The same inputs, ``--n-boot`` and ``--seed`` give the same numbers. The ARES comparison rebuilds its tables the
same way: ``python scripts/ares_compare.py --summarize --out runs/ares_compare``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rebuild(out: Path, datasets: list[str] | None = None, n_boot: int = 10000, seed: int = 0) -> str:
    """Recompute and store the paired differences of every data set under ``out``; return the tables."""
    from recsys.experiments import RANKED_STAGES, markdown_table, paired_differences
    from vlkit.cache import atomic_write_text

    folders = [out / d for d in datasets] if datasets else sorted(p.parent for p in out.glob("*/results.json"))
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"no {path}: run python -m recsys.experiments --dataset {folder.name} --out {out} first")
        results = json.loads(path.read_text())
        paired = paired_differences(folder, [s for s in RANKED_STAGES if s in results], n_boot=n_boot, seed=seed)
        for stage in results:
            if stage in RANKED_STAGES:
                results[stage].pop("paired", None)
                if stage in paired:
                    results[stage]["paired"] = paired[stage]
        atomic_write_text(path, json.dumps(results, indent=1, sort_keys=True))
    return markdown_table(out, tuple(f.name for f in folders))


def main(argv=None) -> None:
    """Parse the options (``--help``) and print the rebuilt tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/minionerec", help="the --out folder of python -m recsys.experiments")
    p.add_argument("--dataset", action="append", help="only this data set (repeatable; default: every results.json)")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    args = p.parse_args(argv)
    print(rebuild(Path(args.out), args.dataset, args.n_boot, args.seed))


if __name__ == "__main__":
    main()
