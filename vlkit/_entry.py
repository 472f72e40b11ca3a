"""The ``vlkit`` console script: answers ``--help``, ``--version`` and ``demo`` without torch or Lightning.

Importing Lightning takes as long as the whole help is worth (10 s on a busy 2-core machine), so the
script's front door is this module, which imports only the standard library and ``vlkit`` (itself light):

- ``vlkit``, ``vlkit -h``, ``vlkit --help``: the subcommands (:data:`SUBCOMMANDS`: Lightning's four and
  ``demo``) and where to read more;
- ``vlkit --version``: the kit's version and those of torch and Lightning, read from the installed
  package metadata (nothing imported);
- ``vlkit demo ...``: ``demos.__main__.main``, the one parser ``python -m demos`` uses (so both take the
  same options); gradio is imported only once the options are checked.

Everything else (``vlkit fit --config ...``, ``vlkit fit --help``, ``vlkit -c cfg.yaml test``) goes to
:func:`vlkit.cli.main`, the LightningCLI.
"""

from __future__ import annotations

import sys
from importlib import metadata

__all__ = ["SUBCOMMANDS", "help_text", "version_text", "main"]

# name -> one line; the first four are LightningCLI's subcommands (a test checks they match)
SUBCOMMANDS = {
    "fit": "Train a model: `vlkit fit --config configs/vlkit/tfup/fashion_mnist_tfupt.yaml`.",
    "validate": "One evaluation epoch over the validation set.",
    "test": "One evaluation epoch over the test set: `vlkit test --config configs/vlkit/tfup/tiny_tfup.yaml`.",
    "predict": "Run inference on the data and return the predictions.",
    "demo": "Serve the Gradio app with a tab per method (same options as `python -m demos`).",
}


def version_text() -> str:
    """``vlkit 0.1.0 (torch 2.x, lightning 2.y, python 3.z)`` from the installed metadata, nothing imported."""
    from vlkit import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"vlkit {__version__} (torch {installed('torch')}, lightning {installed('lightning')}, python {python})"


def help_text(prog: str = "vlkit") -> str:
    """The top-level help: usage, the subcommands with one line each, and the global options."""
    width = max(len(name) for name in SUBCOMMANDS) + 4
    lines = [
        f"usage: {prog} [-h] [--version] [-c CONFIG] [--print_config[=flags]] {{{','.join(SUBCOMMANDS)}}} ...",
        "",
        "Adapting vision-language models (TFUP, ProAPO, RePRI, ARES) and generative recommendation (MiniOneRec),",
        "on Lightning: a config names the method and its data by class_path.",
        "",
        "subcommands (add --help after one for its options, e.g. `vlkit fit --help`):",
        *(f"  {name:<{width}}{line}" for name, line in SUBCOMMANDS.items()),
        "",
        "options:",
        "  -h, --help            show this help message and exit",
        "  --version             print the versions of vlkit, torch and Lightning and exit",
        "  -c CONFIG, --config CONFIG",
        "                        a YAML config (before or after the subcommand; may be repeated)",
        "  --print_config[=flags]",
        "                        print the full config after all other arguments and exit",
        "  --debug               show the traceback of a configuration error instead of one line",
        "",
        "Methods, their configs and results: README.md; the arguments of one class with their descriptions:",
        "`vlkit fit --model.help LitTFUP` (or any class_path); the kit's Lit modules: `vlkit fit --help`.",
    ]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """``vlkit ...``: help, version and ``demo`` here; any other command line to :func:`vlkit.cli.main`."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv:  # a subcommand is required: say so, as argparse would
        print(help_text() + "\n\nerror: expected a subcommand", file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help"):
        print(help_text())
        return
    if argv[0] == "--version":
        print(version_text())
        return
    if argv[0] == "demo":
        from demos.__main__ import main as demo_main

        demo_main([a for a in argv[1:] if a != "--debug"], prog="vlkit demo")
        return
    from vlkit.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
