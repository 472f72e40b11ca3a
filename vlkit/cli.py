"""Command line: ``vlkit fit|validate|test|predict --config ...`` and ``vlkit demo``.

LightningCLI in subclass mode: configs name the LightningModule and LightningDataModule by
``class_path``, so this file imports no method and no data module.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI


class VlkitCLI(LightningCLI):
    """LightningCLI with the kit's defaults (config saved next to the logs, overwritten on rerun)."""


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "demo":
        import argparse

        parser = argparse.ArgumentParser(prog="vlkit demo", description="One Gradio app with a tab per method.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=7860)
        ns = parser.parse_args(argv[1:])
        from demos.app import launch  # heavy import (gradio) only here

        launch(host=ns.host, port=ns.port)
        return
    VlkitCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=argv if args is not None else None,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
