"""Checkpoints the kit writes and reads: which class wrote them, and a load that unpickles nothing unsafe.

Two halves, one concern:

* **Writing.** Every ``Lit*`` module calls :func:`record_class` from its ``on_save_checkpoint`` hook, so
  a checkpoint says which class wrote it::

      def on_save_checkpoint(self, checkpoint: dict) -> None:
          record_class(checkpoint, self)      # checkpoint["vlkit_class"] = "vlkit.methods.ares.LitARES"

* **Reading.** :func:`load_checkpoint` is the one way the kit opens a checkpoint file. It calls
  ``torch.load(path, map_location="cpu", weights_only=True)`` (tensors, containers and plain Python values
  only; never arbitrary objects), and turns every failure into a :class:`~vlkit.errors.ConfigError` that
  names the argument and the file: a missing file, a file torch cannot read, a pickle that needs a class
  outside the allow-list, something that is not a dict with a ``state_dict``, or a checkpoint of another
  class ("checkpoint 'x.ckpt' is a LitTFUPT checkpoint; expected a LitARES checkpoint").

  With ``expected`` (a ``Lit*`` class, or a tuple of them) the recorded class must be one of them. A
  checkpoint written before the class was recorded is judged by its contents instead: with a module
  *instance* its ``state_dict`` keys must equal the instance's keys; with a class, its ``hyper_parameters``
  keys must be arguments of the class's ``__init__``.

When flat ``__init__`` arguments move into a typed settings group (``LitTFUP``'s ``cache``, ``LitARES``'s
``language_model``), the class overrides ``load_from_checkpoint`` and passes on
:func:`regrouped_hyperparameters`: a checkpoint of the flat layout then loads with its values regrouped.

Values a checkpoint needs beyond torch's default allow-list (a kit dataclass in ``hyper_parameters``, for
example) are registered once with :func:`allow_classes` by the module that defines them; the load then
accepts exactly those classes, through ``torch.serialization.safe_globals``.

A run sharded with FSDP (Lightning's ``ModelParallelStrategy``, or ``FSDPStrategy`` with
``state_dict_type="sharded"``) writes a *folder* instead of a file: each rank's shards
(``torch.distributed.checkpoint``) and ``meta.pt``. :func:`consolidate_checkpoint` turns it into one ordinary
checkpoint file that loads on one process (``load_checkpoint``, ``trainer.fit(ckpt_path=...)`` to resume,
``Lit*.load_from_checkpoint``); from a shell: ``python -m vlkit.checkpoints consolidate FOLDER [--output FILE]``.

This module imports torch only inside the functions, so ``import vlkit`` stays fast; any layer may use it.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

from vlkit.errors import ConfigError

__all__ = [
    "CLASS_KEY",
    "class_path",
    "record_class",
    "recorded_class",
    "allow_classes",
    "allowed_globals",
    "load_checkpoint",
    "group_flat_hyperparameters",
    "regrouped_hyperparameters",
    "unknown_hyperparameters",
    "consolidate_checkpoint",
]

CLASS_KEY = "vlkit_class"

# classes (beyond torch's own allow-list) that a kit checkpoint may contain; see allow_classes
_ALLOWED: list[Any] = []


def class_path(obj: Any) -> str:
    """``"<module>.<QualName>"`` of a class, or of an instance's class."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _short(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def record_class(checkpoint: dict, module: Any) -> dict:
    """Write ``module``'s class path into ``checkpoint[CLASS_KEY]`` (call it from ``on_save_checkpoint``).

    Returns the checkpoint, so it can end a hook in one line."""
    checkpoint[CLASS_KEY] = class_path(module)
    return checkpoint


def recorded_class(checkpoint: dict) -> str | None:
    """The class path a checkpoint recorded (None for checkpoints written before the kit recorded it)."""
    value = checkpoint.get(CLASS_KEY)
    return value if isinstance(value, str) else None


def allow_classes(*classes: Any) -> None:
    """Let :func:`load_checkpoint` unpickle these classes too (e.g. a dataclass the kit puts in
    ``hyper_parameters``). Only the kit's own plain-data classes belong here: a class whose unpickling runs
    code would reopen what ``weights_only=True`` closes."""
    for cls in classes:
        if cls not in _ALLOWED:
            _ALLOWED.append(cls)


def allowed_globals():
    """A context manager under which every ``torch.load(..., weights_only=True)`` (Lightning's own loads of
    ``--ckpt_path`` and ``load_from_checkpoint`` included) also accepts the classes of :func:`allow_classes`."""
    import torch

    return torch.serialization.safe_globals(list(_ALLOWED))


def _expected_classes(expected: Any) -> tuple[list[type], Any]:
    """(classes, instance or None) from ``expected``: a class, an instance, or a tuple of classes."""
    if expected is None:
        return [], None
    if isinstance(expected, tuple):
        return [c if isinstance(c, type) else type(c) for c in expected], None
    if isinstance(expected, type):
        return [expected], None
    return [type(expected)], expected


def _init_arguments(cls: type) -> set[str] | None:
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None  # accepts anything: nothing to compare against
    return {p.name for p in parameters if p.name != "self"}


def unknown_hyperparameters(checkpoint: dict, cls: type) -> list[str]:
    """The saved ``hyper_parameters`` that are not ``__init__`` arguments of ``cls`` (sorted; [] when the
    class takes ``**kwargs`` or the checkpoint saved none): a checkpoint of an older version of the class
    whose arguments were renamed or moved, which rebuilding the class from its hyperparameters cannot load."""
    hparams = checkpoint.get("hyper_parameters")
    known = _init_arguments(cls)
    if not isinstance(hparams, dict) or known is None:
        return []
    return sorted(str(k) for k in hparams if str(k) not in known and not str(k).startswith("_"))


def group_flat_hyperparameters(hparams: dict, groups: dict[str, type]) -> dict:
    """``hparams`` in the grouped shape: the fields of each settings dataclass in ``groups`` (group name ->
    dataclass) that an older checkpoint kept flat are moved into that group as a dict; a group ``hparams``
    already holds is kept as it is (stray flat fields beside it are dropped). Pure: no file is read."""
    import dataclasses

    out = dict(hparams)
    for group, settings_class in groups.items():
        flat = {f.name: out.pop(f.name) for f in dataclasses.fields(settings_class) if f.name in out}
        if flat and group not in out:
            out[group] = flat
    return out


def regrouped_hyperparameters(checkpoint_path: Any, groups: dict[str, type]) -> dict[str, dict]:
    """Settings groups rebuilt from the flat hyperparameters of a checkpoint written before those arguments
    moved into typed groups: ``{"cache": {"alpha": 0.5, ...}}`` (each group's dataclass fields that the
    checkpoint holds at the top level), for a ``load_from_checkpoint`` override to pass on as arguments.

    ``{}`` for a checkpoint that already holds the groups, holds none of their fields, or is not a local file
    torch reads with ``weights_only=True`` (Lightning's own load then says what is wrong with it).
    """
    import torch

    if not isinstance(checkpoint_path, (str, Path)) or not Path(checkpoint_path).is_file():
        return {}
    try:
        with torch.serialization.safe_globals(list(_ALLOWED)):
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file is Lightning's to report, with its own message
        return {}
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict):
        return {}
    grouped = group_flat_hyperparameters(hparams, groups)
    return {group: grouped[group] for group in groups if group not in hparams and group in grouped}


def load_checkpoint(
    path: str | Path,
    expected: Any = None,
    argument: str = "checkpoint",
    *,
    name: str | None = None,
) -> dict:
    """Load a checkpoint file safely (``weights_only=True``, on the CPU) and check what wrote it.

    Args:
        path: the checkpoint file.
        expected: None (any checkpoint with a ``state_dict``), a ``Lit*`` class, a tuple of classes (any of
            them), or a module instance (its class; old checkpoints without a recorded class are then
            checked key by key against the instance's ``state_dict``).
        argument: the argument name used in error messages (``checkpoint``, ``init_checkpoint``, ...).
        name: how messages call the file (default: ``path`` as given). Servers pass the bare file name
            so that no server path reaches a visitor.

    Returns:
        The checkpoint dict (``state_dict``, ``hyper_parameters`` if saved, ``vlkit_class`` if recorded).

    Raises:
        ConfigError: the file is missing, unreadable, needs unpickling of a class outside the allow-list,
            is not a checkpoint dict with a ``state_dict``, or was written by another class.
    """
    import torch

    shown = repr(name if name is not None else str(path))
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{argument} must be an existing checkpoint file, got {shown} (no such file)", argument=argument)
    try:
        with torch.serialization.safe_globals(list(_ALLOWED)):
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message names the offending global (e.g. "Unsupported global: GLOBAL foo.Bar")
        detail = next((line.strip() for line in str(error).splitlines() if "global" in line.lower()), "")
        if not detail:  # no class named: not a torch.save file at all (a text file, a truncated download)
            raise ConfigError(
                f"{argument} {shown} is not a readable torch checkpoint (not a file written by torch.save)",
                argument=argument,
            ) from None
        raise ConfigError(
            f"{argument} {shown} holds objects other than tensors and plain values, which the kit refuses to "
            f"unpickle (weights_only=True){': ' + detail if detail else ''}",
            argument=argument,
        ) from None
    except Exception as error:  # noqa: BLE001 - a corrupt file can break the unpickler anywhere (KeyError, ...)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        if name is not None:  # keep server paths out of messages shown to visitors
            first = first.replace(str(path), name).replace(str(file.resolve()), name)
        raise ConfigError(f"{argument} {shown} is not a readable torch checkpoint ({first})", argument=argument) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(
            f"{argument} {shown} must hold a checkpoint dict, got a {type(checkpoint).__name__}", argument=argument
        )
    if not isinstance(checkpoint.get("state_dict"), dict):
        keys = sorted(str(k) for k in checkpoint)[:5]
        raise ConfigError(
            f"{argument} {shown} must be a Lightning checkpoint with a 'state_dict', got a dict with keys {keys}",
            argument=argument,
        )
    _check_class(checkpoint, expected, argument, shown)
    return checkpoint


def _check_class(checkpoint: dict, expected: Any, argument: str, shown: str) -> None:
    classes, instance = _expected_classes(expected)
    if not classes:
        return
    wanted = [class_path(c) for c in classes]
    wanted_text = " or ".join(_short(w) for w in wanted)
    # a class that moved lists where it lived before (``former_class_paths``): its old checkpoints still load
    wanted += [old for c in classes for old in getattr(c, "former_class_paths", ())]
    recorded = recorded_class(checkpoint)
    if recorded is not None:
        if recorded not in wanted:
            raise ConfigError(
                f"{argument} {shown} is a {_short(recorded)} checkpoint; expected a {wanted_text} checkpoint",
                argument=argument,
            )
        return
    # written before the class was recorded: judge by the contents
    if instance is not None and hasattr(instance, "state_dict"):
        own = set(instance.state_dict())
        theirs = set(checkpoint["state_dict"])
        if own != theirs:
            missing, unexpected = sorted(own - theirs), sorted(theirs - own)
            raise ConfigError(
                f"{argument} {shown} does not hold {wanted_text} weights: {len(missing)} missing "
                f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})",
                argument=argument,
            )
        return
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict) and hparams:
        for cls in classes:
            known = _init_arguments(cls)
            if known is None or set(map(str, hparams)) <= known:
                return
        extra = sorted(set(map(str, hparams)) - (_init_arguments(classes[0]) or set()))
        raise ConfigError(
            f"{argument} {shown} is not a {wanted_text} checkpoint: its hyperparameters {extra[:3]} are not "
            f"arguments of {wanted_text}",
            argument=argument,
        )


def consolidate_checkpoint(folder: str | Path, output: str | Path | None = None) -> Path:
    """One checkpoint file, loadable on one process, from the distributed checkpoint folder of a sharded run.

    Lightning's ``ModelParallelStrategy`` (FSDP2) saves a folder: the shards of the weights and optimizer states
    (``torch.distributed.checkpoint``, one ``.distcp`` file per rank, keys ``state_dict`` and ``optimizer_<i>``)
    and ``meta.pt`` (the rest: hyperparameters, loops, callbacks, the class that wrote it). This reads the shards
    into full tensors (``torch.distributed.checkpoint.format_utils.dcp_to_torch_save``), adds ``meta.pt``, and
    puts the optimizer states back in the layout of a one-process checkpoint (``optimizer_states``, keyed by the
    parameter's position instead of its name), then writes the file atomically. The whole model must fit in CPU
    memory. A one-process checkpoint needs no conversion the other way: ``ModelParallelStrategy`` loads a file
    and shards it (``trainer.fit(ckpt_path=file)``).

    Args:
        folder: the checkpoint folder (``trainer.save_checkpoint(path)`` or a ``ModelCheckpoint`` under a
            sharded strategy).
        output: the file to write (default: ``<folder>.consolidated.ckpt`` beside the folder).

    Returns:
        the path of the file written.

    Raises:
        ConfigError: ``folder`` is not a distributed checkpoint folder (no ``.metadata`` or no ``meta.pt``), or
            ``output`` is that folder.
    """
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from vlkit.cache import atomic_torch_save

    folder = Path(folder)
    if not (folder / ".metadata").is_file() or not (folder / "meta.pt").is_file():
        raise ConfigError(f"folder must be the checkpoint folder of a sharded run (with .metadata and meta.pt), got "
                          f"{str(folder)!r}", argument="folder")
    output = Path(output) if output is not None else folder.with_name(folder.name + ".consolidated.ckpt")
    if output.resolve() == folder.resolve():
        raise ConfigError(f"output must be a file beside the folder, got the folder itself {str(output)!r}",
                          argument="output")
    with tempfile.TemporaryDirectory(dir=output.parent if output.parent.exists() else None) as tmp:
        dcp_to_torch_save(folder, Path(tmp) / "full.pt")
        with torch.serialization.safe_globals(list(_ALLOWED)):
            checkpoint = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(list(_ALLOWED)):
        checkpoint.update(torch.load(folder / "meta.pt", map_location="cpu", weights_only=True))
    count = sum(1 for key in checkpoint if key.startswith("optimizer_") and key[len("optimizer_"):].isdigit())
    checkpoint["optimizer_states"] = [_positional_optimizer_state(checkpoint.pop(f"optimizer_{i}")) for i in range(count)]
    return atomic_torch_save(checkpoint, output)


def _positional_optimizer_state(state: dict) -> dict:
    """An optimizer state keyed by parameter name (``torch.distributed.checkpoint.state_dict``'s layout) keyed by
    position instead (``torch.optim.Optimizer.state_dict``'s): the names' order in ``param_groups`` is the
    optimizer's parameter order."""
    names = [name for group in state["param_groups"] for name in group["params"]]
    position = {name: i for i, name in enumerate(names)}
    return {
        "state": {position[name]: value for name, value in state["state"].items()},
        "param_groups": [{**group, "params": [position[name] for name in group["params"]]}
                         for group in state["param_groups"]],
    }


def _main(argv: list[str] | None = None) -> None:
    """``python -m vlkit.checkpoints consolidate FOLDER [--output FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vlkit.checkpoints",
                                     description="Checkpoint tools of the kit.")
    commands = parser.add_subparsers(dest="command", required=True)
    consolidate = commands.add_parser("consolidate", help="one checkpoint file from a sharded run's checkpoint folder")
    consolidate.add_argument("folder", help="the distributed checkpoint folder (with meta.pt)")
    consolidate.add_argument("--output", default=None, help="the file to write (default: <folder>.consolidated.ckpt)")
    args = parser.parse_args(argv)
    try:
        print(consolidate_checkpoint(args.folder, args.output))
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    _main()
