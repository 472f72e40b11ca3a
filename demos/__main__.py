"""``python -m demos``: the one app with a tab per method (same as ``vlkit demo``)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demos", description="One Gradio app with a tab per method.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-file-size", default="10mb", help="largest upload, e.g. 5mb")
    parser.add_argument("--tabs", nargs="+", default=None, help="subset of tabs: tfup proapo repri minionerec ares")
    parser.add_argument("--tfup-backbone", default="offline-lite0-minilm")
    parser.add_argument("--tfup-subset-size", type=int, default=1000)
    parser.add_argument("--minionerec-checkpoint", default=None)
    parser.add_argument("--concurrency-limit", type=int, default=2)
    ns = parser.parse_args(argv)
    from demos.app import launch  # gradio is imported here, not at `python -m demos --help`

    launch(
        host=ns.host, port=ns.port, max_file_size=ns.max_file_size, tabs=ns.tabs, tfup_backbone=ns.tfup_backbone,
        tfup_subset_size=ns.tfup_subset_size, minionerec_checkpoint=ns.minionerec_checkpoint,
        concurrency_limit=ns.concurrency_limit,
    )


if __name__ == "__main__":
    main()
