"""Command line: ``vlkit fit|validate|test|predict --config ...`` and ``vlkit demo``.

LightningCLI in subclass mode: configs name the LightningModule and LightningDataModule by
``class_path``, so this file imports no method and no data module.

User errors print as one line and exit with status 2: a :class:`~vlkit.errors.ConfigError` raised while
the classes are built or before the run starts (``error: model.init_args.lr must be > 0, got -0.1``, its
argument prefixed with the config key that holds it), and a ``--ckpt_path`` written by another class or
by no kit module at all (checked before Lightning opens it). jsonargparse's own parse errors keep their
usage line and also exit 2. ``--debug`` (anywhere on the command line) or ``VLKIT_DEBUG=1`` shows the
traceback instead. Checkpoints are loaded with ``weights_only=True``.

Help explains the kit: ``vlkit fit --help`` lists the kit's Lit modules and DataModules as known subclasses
and ``--model.help LitTFUP`` (a short name works) prints each argument's description from the class's
Google-style docstring (jsonargparse reads it through docstring-parser). For that, and only when help is
asked, the ``methods`` and ``data`` modules of the distribution's import packages are imported by name
(:func:`import_kit_classes`); a run imports only the classes its config names.

The kit's Trainer defaults apply to every run (:func:`vlkit.trainer_defaults.quiet_lightning`: no
advertising tip, no hardware lines) and the seed is 0 unless the config sets ``seed_everything`` (what
Lightning picked anyway, without its "No seed found" warning). ``vlkit --help``, ``vlkit --version`` and
``vlkit demo`` are answered by ``vlkit._entry`` (the console script) without importing this module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from vlkit.checkpoints import allowed_globals, load_checkpoint, unknown_hyperparameters
from vlkit.errors import ConfigError
from vlkit.trainer_defaults import quiet_lightning

__all__ = ["VlkitCLI", "find_config_error", "import_kit_classes", "main"]

# ckpt_path values Lightning resolves itself: no file of that name to check
_LIGHTNING_CKPT_NAMES = ("best", "last", "hpc")


def find_config_error(error: BaseException | None) -> ConfigError | None:
    """The kit's ConfigError behind ``error``: ``error`` itself or one among its causes and contexts.

    jsonargparse re-raises a ConfigError from a class ``__init__`` inside its own "Does not validate
    against any of the Union subtypes" error; the original stays in the exception chain."""
    queue, seen = [error], set()
    while queue:
        current = queue.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConfigError):
            return current
        queue += [current.__cause__, current.__context__]
    return None


def _component_of(error: BaseException) -> str | None:
    """``"model"`` or ``"data"``: the innermost LightningModule / LightningDataModule method in the
    traceback of ``error`` (the class whose code raised it), or None."""
    found, tb = None, error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, LightningModule):
            found = "model"
        elif isinstance(owner, LightningDataModule):
            found = "data"
        tb = tb.tb_next
    return found


def _class_from_path(path: Any) -> type | None:
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


class VlkitArgumentParser(LightningArgumentParser):
    """LightningArgumentParser that lets a ConfigError raised while parsing (a class ``__init__`` run by
    jsonargparse) through as itself, instead of burying its message in jsonargparse's union text."""

    def error(self, message: str, ex: Exception | None = None):
        """Raise the ConfigError behind a parse failure as itself; otherwise jsonargparse's usual error."""
        config_error = find_config_error(ex)
        if config_error is not None:
            raise config_error
        return super().error(message, ex)


class VlkitCLI(LightningCLI):
    """LightningCLI with the kit's defaults (config saved next to the logs, overwritten on rerun), user
    errors as one line (see the module docstring) and checkpoints read with ``weights_only=True``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("parser_class", VlkitArgumentParser)
        kwargs.setdefault("seed_everything_default", 0)  # Lightning's pick without a seed, minus its warning
        quiet_lightning()
        try:
            super().__init__(*args, **kwargs)
        except Exception as error:
            config_error = find_config_error(error)
            if config_error is not None and not hasattr(config_error, "config_key"):
                config_error.config_key = self._config_key(config_error)
            raise

    def _config_key(self, error: ConfigError) -> str | None:
        """Where ``error.argument`` sits in the parsed config: ``model.init_args.lr``, ``data.init_args.shots``,
        ``ckpt_path``; None when the config does not hold it (or was not parsed yet)."""
        config, argument = getattr(self, "config", None), error.argument
        if config is None or not argument:
            return None
        try:
            section = config[config["subcommand"]] if config.get("subcommand") else config
            holders = [c for c in ("model", "data") if argument in (section.get(f"{c}.init_args") or {})]
            if len(holders) > 1:
                holders = [c for c in holders if c == _component_of(error)] or holders[:1]
            if holders:
                return f"{holders[0]}.init_args.{argument}"
            # a field of a typed settings group (a dataclass argument): model.init_args.search.top_k
            nested = [f"{c}.init_args.{key}" for c in ("model", "data") for key in (section.get(f"{c}.init_args") or {}).keys()
                      if key.rsplit(".", 1)[-1] == argument]
            if len(nested) == 1:
                return nested[0]
            return argument if argument in section else None
        except (KeyError, TypeError, AttributeError):
            return None

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            parser.set_defaults(weights_only=True)  # Trainer.fit/validate/test/predict(weights_only=...)
        return parser

    def _parse_ckpt_path(self) -> None:
        # Lightning opens ckpt_path here to read its hyperparameters: check what wrote it first
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._check_ckpt_path(self.config[subcommand])
        with allowed_globals():
            super()._parse_ckpt_path()

    def _check_ckpt_path(self, section) -> None:
        """A ``--ckpt_path`` file must be a checkpoint of the configured model class (one ConfigError if not)."""
        ckpt_path = section.get("ckpt_path")
        if not ckpt_path or not isinstance(ckpt_path, (str, os.PathLike)):
            return
        text = str(ckpt_path)
        if text in _LIGHTNING_CKPT_NAMES or text.startswith("registry") or "://" in text:
            return
        model_class = _class_from_path(section.get("model.class_path"))
        checkpoint = load_checkpoint(ckpt_path, model_class, argument="ckpt_path")
        unknown = unknown_hyperparameters(checkpoint, model_class) if model_class is not None else []
        if unknown:  # Lightning rebuilds the model from these: fail here, in one line, not in jsonargparse
            name = model_class.__name__
            raise ConfigError(
                f"ckpt_path {text!r} must be a checkpoint of the current {name}, got one written by an older version: "
                f"its hyperparameters {unknown[:6]} are no longer arguments of {name} (renamed or moved, e.g. into a "
                "DataModule or a settings group); re-run `vlkit fit` with the current config",
                argument="ckpt_path",
            )
        if "pytorch-lightning_version" not in checkpoint:  # what Lightning's restore reads first
            keys = sorted(str(k) for k in checkpoint)[:4]
            raise ConfigError(
                f"ckpt_path must be a Lightning checkpoint (written by `vlkit fit` or Trainer.save_checkpoint), got "
                f"{text!r}, a dict with keys {keys} and no 'pytorch-lightning_version'",
                argument="ckpt_path",
            )

    def _run_subcommand(self, subcommand: str) -> None:
        with allowed_globals():  # the kit's registered plain-data classes load under weights_only=True
            super()._run_subcommand(subcommand)


def _user_error_line(error: ConfigError) -> str:
    """``error: <message>``, the argument at the start of the message replaced by its config key."""
    message = " ".join(str(error).splitlines())
    key, argument = getattr(error, "config_key", None), error.argument
    if key and argument and key != argument:
        if message.startswith(argument) and not message[len(argument) : len(argument) + 1].isidentifier():
            message = key + message[len(argument) :]
        else:
            message = f"{key}: {message}"
    return f"error: {message}"


def kit_packages() -> list[str]:
    """The import packages of the installed ``vlkit`` distribution (``vlkit``, ``prompts_evo``, ``recsys``),
    read from its metadata; just ``["vlkit"]`` when the kit runs from a checkout that is not installed."""
    try:
        found = sorted(name for name, dists in importlib.metadata.packages_distributions().items() if "vlkit" in dists)
    except Exception:  # broken metadata of an unrelated distribution must not break the help
        found = []
    return found or ["vlkit"]


def import_kit_classes(layers: tuple[str, ...] = ("methods", "data")) -> list[str]:
    """Import every module of the kit's ``methods`` and ``data`` layers, so jsonargparse (which lists the
    imported subclasses of ``LightningModule`` / ``LightningDataModule``) shows them in ``--help`` and
    resolves short names such as ``--model.help LitTFUP``. Modules by name only, never as an import arrow
    (this module imports no method); a module whose optional dependency is missing is skipped.
    Returns the names of the modules imported."""
    imported = []
    for package in kit_packages():
        for layer in layers:
            try:
                spec = importlib.util.find_spec(f"{package}.{layer}")
            except ImportError:
                continue
            if spec is None or not spec.submodule_search_locations:
                continue
            for info in pkgutil.iter_modules(spec.submodule_search_locations):
                name = f"{package}.{layer}.{info.name}"
                try:
                    importlib.import_module(name)
                except ImportError:  # an optional dependency (e.g. a VLM stack) is missing: list the others
                    continue
                imported.append(name)
    return imported


def _asks_for_help(argv: list[str]) -> bool:
    """A subcommand's ``-h``/``--help`` or a ``--<group>.help`` option (``--model.help LitTFUP``)."""
    if not any(a in LightningCLI.subcommands() for a in argv):
        return False  # the top-level help lists no classes
    return any(a in ("-h", "--help") or a.split("=", 1)[0].endswith(".help") for a in argv)


def main(args: list[str] | None = None) -> None:
    """``vlkit <subcommand> ...``; ``args`` replaces ``sys.argv[1:]`` (tests call it in-process)."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("VLKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    argv = [a for a in argv if a != "--debug"]
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv itself when given no args
    if argv and argv[0] == "demo":
        # the same options as `python -m demos` (--host, --port, --checkpoint-dir, --auth, --no-auth, ...),
        # checked before gradio is imported; a refused setting exits 2 with one line
        from demos.__main__ import main as demo_main

        demo_main(argv[1:], prog="vlkit demo")
        return
    if _asks_for_help(argv):
        import_kit_classes()
    try:
        VlkitCLI(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=argv if args is not None else None,
            auto_configure_optimizers=False,
        )
    except Exception as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        if debug:  # the kit's error itself, with the frames that raised it (not jsonargparse's wrapper)
            raise config_error
        print(_user_error_line(config_error), file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
