"""``make quickstart``: zero-shot, TFUP, TFUP-T (strict and paper-compatible) and the labelled
Tip-Adapter reference on Fashion-MNIST with the offline backbone.

Writes ``results/quickstart.json`` (every row), ``results/quickstart.md`` (the summary table) and
``results/quickstart_per_class.png`` (accuracy per class of each method). Evaluated on a seeded subset of
``--subset-size`` test images (default 2,000 of 10,000) so the whole run stays within minutes on 2 CPU
cores; the features are cached, so a second run skips the image encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plot_per_class(rows: list[dict], classnames: list[str], path: Path) -> None:
    """Bar chart of per-class accuracy, one bar group per class and one bar per row holding predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from vlkit.fewshot import per_class_accuracy
    from vlkit.report import percent

    shown = [r for r in rows if "predictions" in r]
    width = 0.8 / max(1, len(shown))
    fig, ax = plt.subplots(figsize=(11, 4))
    x = np.arange(len(classnames))
    for i, row in enumerate(shown):
        acc = [100 * a for a in per_class_accuracy(row["predictions"], len(classnames))]  # percent
        ax.bar(x + i * width, acc, width, label=f"{row['method']} ({percent(row['accuracy'])} %)")
    ax.set_xticks(x + width * (len(shown) - 1) / 2, classnames, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 118)
    ax.set_title(f"Fashion-MNIST, {rows[0]['backbone']}, {rows[0]['n_test']} test images: accuracy per class")
    ax.legend(fontsize=8, ncol=len(shown), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the quick start (see the module docstring) and return its result rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="offline-lite0-minilm")
    parser.add_argument("--subset-size", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--shots", type=int, default=16, help="labelled shots of the Tip-Adapter reference")
    parser.add_argument("--out", default="results")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache root (default: $VLKIT_CACHE or ~/.cache/vlkit, reused across runs)")
    args = parser.parse_args(argv)

    import torch

    from vlkit import fewshot
    from vlkit.report import seconds

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(backbone=args.backbone, subset_size=args.subset_size, cache_dir=args.cache_dir, return_predictions=True)
    start = time.perf_counter()
    rows: list[dict] = []
    plan = [
        ("zeroshot", dict(seeds=[args.seeds[0]])),  # deterministic: no seed dependence
        ("tfup", dict(seeds=[args.seeds[0]])),
        ("tfup-t", dict(seeds=args.seeds, max_epochs=args.epochs)),
        ("tfup-t", dict(seeds=args.seeds, max_epochs=args.epochs, selection="paper-test-best")),
        ("tip-adapter", dict(seeds=args.seeds, shots=args.shots)),
    ]
    for method, extra in plan:
        print(f"[quickstart] {method} {extra}", flush=True)
        rows += fewshot.evaluate(method=method, **common, **extra)
    summary = fewshot.summarize(rows)
    # accuracy in percent, "± std (n seeds)" when n > 1, seconds rounded (vlkit.report)
    table = fewshot.to_markdown(summary, ["method", "mode", "shots", "seeds", "accuracy", "seconds"])
    total = time.perf_counter() - start
    header = (
        f"Fashion-MNIST test subset of {rows[0]['n_test']} images (seeded), backbone {args.backbone}; "
        f"shots = labelled images per class (0 = unsupervised); total {seconds(total)} s\n\n"
    )
    print(header + table)
    (out / "quickstart.md").write_text(header + table + "\n")
    serialisable = [{k: v for k, v in r.items() if k != "predictions"} for r in rows]
    (out / "quickstart.json").write_text(json.dumps({"rows": serialisable, "summary": summary, "seconds": total}, indent=1))
    from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES

    first = {}
    for r in rows:
        if r["mode"] == "strict":
            first.setdefault(r["method"], r)
    plot_per_class(list(first.values()), FASHION_MNIST_CLASSNAMES, out / "quickstart_per_class.png")
    print(f"[quickstart] wrote {out / 'quickstart.json'}, {out / 'quickstart.md'}, {out / 'quickstart_per_class.png'}")
    return rows


if __name__ == "__main__":
    main()
