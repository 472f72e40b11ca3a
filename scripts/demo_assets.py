"""Build the trained models the demo app shows by default, once, into the kit's cache (``make demo-assets``).

    python scripts/demo_assets.py                          # MiniOneRec on Amazon Industrial + SmolLM2 (~10 min, 2 CPU cores)
    python scripts/demo_assets.py --only minionerec --epochs 2 --dataset amazon18-office
    python scripts/demo_assets.py --force                  # rebuild even if a trained recommender is there

What is built and where: ``demos/assets.py`` (its module docstring). The cache root is ``$VLKIT_CACHE``
(default ``~/.cache/vlkit``); the demo reads the same place, so ``vlkit demo`` afterwards shows the trained
recommender. Prints what it trained and the kept checkpoint's validation HR@10 / NDCG@10 (the config's validation slice).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    """Parse the options, build what is missing (or everything with ``--force``), print a summary."""
    from demos.assets import DEFAULT_MINIONEREC_DATASET, build_minionerec_assets, find_minionerec_assets, prepare_smollm2
    from recsys.experiments import DATASETS

    parser = argparse.ArgumentParser(prog="python scripts/demo_assets.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", choices=["minionerec", "ares"], nargs="+", default=["minionerec", "ares"],
                        help="which assets to build")
    parser.add_argument("--dataset", default=DEFAULT_MINIONEREC_DATASET, choices=sorted(DATASETS),
                        help="the MiniOneRec tab's data set")
    parser.add_argument("--epochs", type=int, default=4, help="MiniOneRec SFT epochs (Industrial: ~90 s each on 2 CPU cores)")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="cap on the SFT wall time (a busy machine)")
    parser.add_argument("--force", action="store_true", help="rebuild the recommender even if one is cached")
    parser.add_argument("--root", default=None, help="assets folder (default: <$VLKIT_CACHE or ~/.cache/vlkit>/demo-assets)")
    args = parser.parse_args(argv)
    if "ares" in args.only:
        start = time.time()
        print(f"ARES: SmolLM2-135M-Instruct in {prepare_smollm2()} ({time.time() - start:.0f} s)", flush=True)
    if "minionerec" in args.only:
        found = None if args.force else find_minionerec_assets(args.dataset, args.root)
        if found is None:
            found = build_minionerec_assets(args.dataset, args.root, epochs=args.epochs, max_minutes=args.max_minutes)
        else:
            print("MiniOneRec: already built (use --force to rebuild)")
        val = found["validation"]
        print(f"MiniOneRec: {found['model']} on {found['dataset']}, {found['epochs']} epoch(s), "
              f"val HR@10 {100 * val.get('val/hr@10', float('nan')):.2f} %, "
              f"NDCG@10 {100 * val.get('val/ndcg@10', float('nan')):.2f} % ({int(val.get('val/rows', 0))} validation rows); "
              f"built {found['built']} in {found['wall_s']:.0f} s -> {Path(found['checkpoint']).parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
