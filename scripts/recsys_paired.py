"""Rebuild the recommendation tables from saved results, without training or evaluating anything.

Reads every ``<out>/<dataset>/results.json`` and each ranking stage's ``<stage>/row_ranks.json`` (the test
rows' target ranks that ``python -m recsys.experiments`` saves), recomputes the paired differences between
every two stages on their common test rows (HR@10 / NDCG@10, 95 % bootstrap interval, sign-flip p-value;
``recsys.experiments.paired_differences``), stores them under each stage's ``paired`` in ``results.json``
and prints the markdown tables of the README (``recsys.experiments.markdown_table``):

    python scripts/recsys_paired.py --out runs/minionerec
    python scripts/recsys_paired.py --out runs/minionerec --dataset amazon18-industrial --n-boot 20000
    python scripts/recsys_paired.py --out runs/minionerec --merge runs/minionerec_llm  # rows run elsewhere

``--merge DIR`` first copies the ranking stages of another ``--out`` folder (e.g. the SmolLM2 rows, run in their
own folder so two runners never write one ``results.json``, or on a GPU machine) into ``--out``: each stage's
``results.json`` entry and its ``row_ranks.json``. A data set is merged only when both folders hold the same
``sid_index.json`` (same item IDs, so the same catalogue and test rows); otherwise it stops with an error.

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


def merge(src: Path, out: Path, datasets: list[str] | None = None) -> list[str]:
    """Copy every ranking stage of ``src/<dataset>`` into ``out/<dataset>`` (results entry + row ranks); returns
    ``"<dataset>/<stage>"`` for each copied stage. ValueError when a data set's ``sid_index.json`` differs or is missing."""
    import shutil

    from recsys.experiments import RANKED_STAGES, ROW_RANKS_FILE
    from vlkit.cache import atomic_write_text

    copied = []
    folders = [src / d for d in datasets] if datasets else sorted(p.parent for p in src.glob("*/results.json"))
    for folder in folders:
        target = out / folder.name
        ids = [f / "sid_index.json" for f in (folder, target)]
        missing = [str(p) for p in ids if not p.is_file()]
        if missing:
            raise ValueError(f"--merge {src}: cannot check that {folder.name} used the same item IDs, missing {missing}")
        if ids[0].read_bytes() != ids[1].read_bytes():
            raise ValueError(f"--merge {src}: {ids[0]} differs from {ids[1]} (other item IDs: its rows cannot be "
                             "paired with the ones under --out)")
        theirs = json.loads((folder / "results.json").read_text())
        path = target / "results.json"
        ours = json.loads(path.read_text()) if path.is_file() else {}
        for stage, metrics in theirs.items():
            if stage not in RANKED_STAGES or not (folder / stage / ROW_RANKS_FILE).is_file():
                continue
            (target / stage).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / stage / ROW_RANKS_FILE, target / stage / ROW_RANKS_FILE)
            ours[stage] = {k: v for k, v in metrics.items() if k != "paired"}  # rebuilt against --out's stages
            copied.append(f"{folder.name}/{stage}")
        atomic_write_text(path, json.dumps(ours, indent=1, sort_keys=True))
    return copied


def main(argv=None) -> None:
    """Parse the options (``--help``) and print the rebuilt tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/minionerec", help="the --out folder of python -m recsys.experiments")
    p.add_argument("--dataset", action="append", help="only this data set (repeatable; default: every results.json)")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    p.add_argument("--merge", metavar="DIR", help="first copy the ranking stages of this other --out folder")
    args = p.parse_args(argv)
    if args.merge:
        try:
            copied = merge(Path(args.merge), Path(args.out), args.dataset)
        except ValueError as err:
            p.error(str(err))
        print(f"merged from {args.merge}: {', '.join(copied) or 'nothing'}", file=sys.stderr)
    print(rebuild(Path(args.out), args.dataset, args.n_boot, args.seed))


if __name__ == "__main__":
    main()
