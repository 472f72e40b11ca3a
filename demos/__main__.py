"""``python -m demos``: the one app with a tab per method (same as ``vlkit demo``)."""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None, prog: str = "python -m demos") -> None:
    """Parse the options and serve the app; a refused setting (a non-loopback host without --auth or
    --no-auth, a bad --auth, a missing --checkpoint-dir) exits 2 with one line, before anything is served.
    ``vlkit demo`` calls this with ``prog="vlkit demo"``."""
    parser = argparse.ArgumentParser(prog=prog, description="One Gradio app with a tab per method.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address (default 127.0.0.1: local only; any other needs --auth or --no-auth)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-file-size", default="10mb", help="largest upload, e.g. 5mb")
    parser.add_argument("--tabs", nargs="+", default=None, help="subset of tabs: tfup proapo repri minionerec ares")
    parser.add_argument("--tfup-backbone", default="offline-lite0-minilm")
    parser.add_argument("--tfup-subset-size", type=int, default=1000)
    parser.add_argument("--minionerec-checkpoint", default=None,
                        help="a LitMiniOneRec checkpoint for the MiniOneRec tab (default: the trained recommender that "
                             "`make demo-assets` built on Amazon Industrial)")
    parser.add_argument("--minionerec-untrained", action="store_true",
                        help="show an untrained tiny MiniOneRec on synthetic data instead (labelled 'untrained')")
    parser.add_argument("--concurrency-limit", type=int, default=2)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="folder whose *.ckpt files visitors may pick by name (default: none can be loaded)")
    login = parser.add_mutually_exclusive_group()
    login.add_argument("--auth", default=os.environ.get("VLKIT_DEMO_AUTH"), metavar="USER:PASSWORD",
                       help="require this login (default: $VLKIT_DEMO_AUTH, which keeps it out of `ps`)")
    login.add_argument("--no-auth", action="store_true",
                       help="serve a non-loopback --host without a login, on purpose")
    ns = parser.parse_args(argv)
    from demos._safety import check_launch
    from vlkit.errors import ConfigError, check_dir

    try:  # refuse before gradio is imported or anything is bound
        check_launch(ns.host, None if ns.no_auth else ns.auth, ns.no_auth)
        if ns.checkpoint_dir is not None:
            check_dir("checkpoint_dir", ns.checkpoint_dir)
    except ConfigError as error:
        parser.error(str(error))  # one line on stderr, exit 2
    from demos.app import launch  # gradio is imported here, not at `python -m demos --help`

    launch(
        host=ns.host, port=ns.port, max_file_size=ns.max_file_size, tabs=ns.tabs, tfup_backbone=ns.tfup_backbone,
        tfup_subset_size=ns.tfup_subset_size, minionerec_checkpoint=ns.minionerec_checkpoint,
        minionerec_untrained=ns.minionerec_untrained,
        concurrency_limit=ns.concurrency_limit, checkpoint_dir=ns.checkpoint_dir,
        auth=None if ns.no_auth else ns.auth, no_auth=ns.no_auth,
    )


if __name__ == "__main__":
    main()
