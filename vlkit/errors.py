"""The kit's one error class for user mistakes, and the checks that raise it.

Every public function, ``Lit*`` module, DataModule and demo handler validates its numbers and data with
these helpers *before* heavy work starts. A :class:`ConfigError` is a :class:`ValueError` whose message
names the argument, what was expected and what came::

    lr must be > 0, got -0.1

The CLI (``vlkit.cli``) prints it as one line, prefixed with the config path where it can tell it
(``error: model.init_args.lr must be > 0, got -0.1``), and exits 2; ``--debug`` or ``VLKIT_DEBUG=1``
shows the traceback. This module imports nothing but the standard library (tensors are checked duck-typed),
so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "check_number",
    "check_positive",
    "check_non_negative",
    "check_probability",
    "check_int",
    "check_whole_number",
    "check_int_sequence",
    "check_choice",
    "check_settings",
    "check_non_empty",
    "check_classnames",
    "check_finite_tensor",
    "check_file",
    "check_dir",
    "closest_names",
]


class ConfigError(ValueError):
    """A user error: a bad argument value, missing or wrong data, a checkpoint of another kind.

    ``argument`` is the name the user wrote (``lr``, ``alpha``, ``checkpoint``); the CLI uses it to
    point at the config key. The message always says what was expected and what came.
    """

    def __init__(self, message: str, *, argument: str | None = None):
        super().__init__(message)
        self.argument = argument


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
):
    """Check that ``value`` is a finite real number (an int if ``integer``) in the given range.

    ``low``/``high`` are inclusive bounds unless ``low_open``/``high_open``. Returns the value, so
    ``self.lr = check_number("lr", lr, low=0, low_open=True)`` reads as one line.
    """
    if value is None and allow_none:
        return value
    if integer:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        kind = "an integer"
    else:
        ok = _is_real(value) and math.isfinite(float(value))
        kind = "a finite number"
    if not ok:
        raise ConfigError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {_show(value)}", argument=name)
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ConfigError(f"{name} must be {' and '.join(bounds)}, got {_show(value)}", argument=name)
    return value


def check_positive(name: str, value: Any, *, integer: bool = False, allow_none: bool = False):
    """``value > 0`` (an int > 0 when ``integer``)."""
    return check_number(name, value, low=0, low_open=True, integer=integer, allow_none=allow_none)


def check_non_negative(name: str, value: Any, *, integer: bool = False, allow_none: bool = False):
    """``value >= 0``."""
    return check_number(name, value, low=0, integer=integer, allow_none=allow_none)


def check_probability(name: str, value: Any, *, open_low: bool = False, open_high: bool = False):
    """``value`` in [0, 1] (bounds optionally open)."""
    return check_number(name, value, low=0, high=1, low_open=open_low, high_open=open_high)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None, allow_none: bool = False):
    """An integer (not a bool, not a float) in [low, high]."""
    return check_number(name, value, low=low, high=high, integer=True, allow_none=allow_none)


def check_int_sequence(
    name: str, values: Any, *, low: int | None = None, high: int | None = None, allow_empty: bool = False
) -> tuple[int, ...]:
    """A list/tuple of integers, each in [low, high] (non-empty unless ``allow_empty``); returns a tuple.

    The error names the offending element: ``ks[1] must be >= 1, got 0``.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ConfigError(f"{name} must be a list of integers, got {_show(values)}", argument=name)
    if not values and not allow_empty:
        raise ConfigError(f"{name} must be a non-empty list of integers, got {_show(values)}", argument=name)
    for i, value in enumerate(values):
        try:
            check_int(f"{name}[{i}]", value, low=low, high=high)
        except ConfigError as err:
            raise ConfigError(str(err), argument=name) from None
    return tuple(values)


def check_whole_number(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """A whole number in [low, high], given as an int or an integral float (UI sliders send ``4.0``);
    returns it as an ``int``."""
    if _is_real(value) and math.isfinite(float(value)) and float(value).is_integer():
        return int(check_number(name, int(value), low=low, high=high, integer=True))
    raise ConfigError(f"{name} must be a whole number, got {_show(value)}", argument=name)


def closest_names(value: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``value`` (difflib), for "did you mean" hints."""
    known = [str(k) for k in known]
    return difflib.get_close_matches(str(value), known, n=n, cutoff=0.4)


def check_choice(name: str, value: Any, choices: Iterable[Any]):
    """``value`` is one of ``choices``; the error lists them (closest first for strings)."""
    choices = list(choices)
    if value in choices:
        return value
    hint = ""
    if isinstance(value, str):
        close = closest_names(value, [c for c in choices if isinstance(c, str)])
        if close:
            hint = f" (closest: {', '.join(close)})"
    raise ConfigError(f"{name} must be one of {choices}, got {_show(value)}{hint}", argument=name)


def check_settings(name: str, value: Any, cls: type, default: Any = None):
    """``value`` as a settings group ``cls`` (a dataclass that checks its own fields in ``__post_init__``).

    ``value`` may be a ``cls`` (returned as is), None (``default``, or ``cls()`` when no default is given), or a
    mapping of some of its fields (as a Python caller or a checkpoint's hyperparameters give it): those fields
    replace ``default``'s. A field ``cls`` lacks raises ``<name> setting must be one of [...], got 'x'`` with
    the closest names; anything else raises ``<name> must be a <cls> object or a dict of its fields``.
    """
    base = cls() if default is None else default
    if value is None:
        return base
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a {cls.__name__} object or a dict of its fields, got {type(value).__name__}",
                          argument=name)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [str(k) for k in value if k not in names]
    if unknown:
        close = closest_names(unknown[0], names)
        hint = f" (closest: {', '.join(close)})" if close else ""
        raise ConfigError(f"{name} setting must be one of {sorted(names)}, got {unknown[0]!r}{hint}", argument=name)
    return dataclasses.replace(base, **value)


def check_non_empty(name: str, value: Any, what: str = "a non-empty collection"):
    """``value`` has at least one element."""
    if value is None or (isinstance(value, Sized) and len(value) == 0):
        raise ConfigError(f"{name} must be {what}, got {_show(value)}", argument=name)
    return value


def check_classnames(classnames: Any, argument: str = "classnames") -> list[str]:
    """A non-empty list of distinct, non-empty class-name strings (raises ConfigError naming ``argument``).

    Here, below every layer, so that models (text heads, ProAPO's search) and data (prompt files) share
    one check; ``vlkit.data.prompts`` re-exports it."""
    if isinstance(classnames, str) or classnames is None:
        raise ConfigError(f"{argument} must be a list of class names, got {classnames!r}", argument=argument)
    names = list(classnames)
    if not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise ConfigError(f"{argument} must be a non-empty list of non-empty strings, got {names[:5]!r}", argument=argument)
    seen, dupes = set(), []
    for c in names:
        (dupes.append(c) if c in seen else seen.add(c))
    if dupes:
        raise ConfigError(f"{argument} must hold distinct names, got duplicate class names {sorted(set(dupes))!r}",
                          argument=argument)
    return names


def check_finite_tensor(name: str, tensor: Any):
    """Every element of a tensor (or array) is finite; the error counts the bad ones."""
    try:
        finite = tensor.isfinite() if hasattr(tensor, "isfinite") else None
    except (TypeError, RuntimeError):  # integer / bool tensors are always finite
        return tensor
    if finite is None:
        import numpy as np

        finite = np.isfinite(np.asarray(tensor))
    bad = int((~finite).sum())
    if bad:
        shape = tuple(getattr(tensor, "shape", ()))
        raise ConfigError(f"{name} must be finite, got {bad} NaN/inf value(s) in a tensor of shape {shape}", argument=name)
    return tensor


def check_file(name: str, path: Any, *, suffixes: Iterable[str] | None = None) -> Path:
    """An existing regular file (optionally with one of ``suffixes``); returns it as a Path."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ConfigError(f"{name} must be a path to a file, got {_show(path)}", argument=name)
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{name} must be an existing file, got {str(path)!r} (no such file)", argument=name)
    if suffixes is not None:
        suffixes = [s.lower() for s in suffixes]
        if p.suffix.lower() not in suffixes:
            raise ConfigError(f"{name} must be a file ending in one of {suffixes}, got {str(path)!r}", argument=name)
    return p


def check_dir(name: str, path: Any) -> Path:
    """An existing directory; returns it as a Path."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ConfigError(f"{name} must be a path to a directory, got {_show(path)}", argument=name)
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{name} must be an existing directory, got {str(path)!r} (no such directory)", argument=name)
    return p
