"""The kit's one result formatter: numbers in the units people read.

Rates in [0, 1] (accuracy, recall, mIoU) show as percent with two decimals (``38.93``); a mean over several
seeds shows its sample standard deviation and the count (``38.93 ± 0.41 (3 seeds)``), a single seed shows
the mean alone (a std of one run is not a spread); seconds are rounded (``580``, ``2.3``). The README
tables, ``make quickstart``, the notebooks (through ``vlkit.fewshot.to_markdown``) and the demos all print
through these functions, so a number reads the same everywhere.

    from vlkit.report import percent, mean_std, seconds, markdown_table
    percent(0.38934)                       # '38.93'
    mean_std(0.3893, 0.0041, 3)            # '38.93 ± 0.41 (3 seeds)'
    seconds(580.3)                         # '580'

The numbers themselves stay fractions in the rows and JSON files (``accuracy``, ``accuracy_mean``); only
what is printed changes. Standard library only: every layer and ``vlkit --help`` may import it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from numbers import Real

from vlkit.errors import ConfigError, check_int

__all__ = ["percent", "mean_std", "mean_and_std", "seconds", "is_rate", "column_header", "format_cell",
           "markdown_table"]

# metric names (the part after the last "/", without a _mean/_std suffix) that are rates in [0, 1]
_RATE_PREFIXES = ("acc", "miou", "fbiou")
_RATE_SUFFIXES = ("accuracy", "recall")


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a real number, got {value!r}", argument=name)
    return float(value)


def percent(fraction: float, decimals: int = 2) -> str:
    """A rate in [0, 1] as percent without the sign: ``percent(0.38934) == "38.93"``; NaN gives ``"n/a"``.

    Args:
        fraction: the rate (1.0 is 100 %).
        decimals: digits after the point, an int in [0, 6] (one or two read best).
    """
    value = _number("fraction", fraction)
    check_int("decimals", decimals, low=0, high=6)
    return "n/a" if math.isnan(value) else f"{100 * value:.{decimals}f}"


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator) of ``values``; the std of a single
    value is 0.0 (and :func:`mean_std` does not print it)."""
    numbers = [_number("values", v) for v in values]
    if not numbers:
        raise ConfigError("values must hold at least one number, got an empty sequence", argument="values")
    return statistics.fmean(numbers), (statistics.stdev(numbers) if len(numbers) > 1 else 0.0)


def mean_std(mean: float, std: float | None, n: int, decimals: int = 2, rate: bool = True, unit: str = "seeds") -> str:
    """``"38.93 ± 0.41 (3 seeds)"`` for a mean over ``n`` > 1 runs, ``"38.93"`` for one run.

    Args:
        mean: the mean (a rate in [0, 1] when ``rate``).
        std: its sample standard deviation (ignored, may be None, when ``n`` is 1).
        n: how many runs the mean is over, an int >= 1.
        decimals: digits after the point.
        rate: print ``mean`` and ``std`` as percent; False prints them as they are.
        unit: what ``n`` counts, printed after it.
    """
    check_int("n", n, low=1)
    fmt = (lambda v: percent(v, decimals)) if rate else (lambda v: f"{_number('mean', v):.{decimals}f}")
    text = fmt(mean)
    if n > 1:
        text += f" ± {fmt(_number('std', std))} ({n} {unit})"
    return text


def seconds(value: float) -> str:
    """Wall time rounded for reading: whole seconds from 10 s up (``"580"``), one decimal below (``"2.3"``)."""
    value = _number("value", value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def is_rate(column: str) -> bool:
    """Whether ``column`` names a rate in [0, 1] that prints as percent: ``accuracy``, ``test/acc``,
    ``mean_per_class_recall``, ``test/miou_repri``, ``accuracy_mean`` (NDCG and HR keep their own unit)."""
    name = column.rsplit("/", 1)[-1].removesuffix("_mean").removesuffix("_std")
    return name.startswith(_RATE_PREFIXES) or name.endswith(_RATE_SUFFIXES)


def column_header(column: str) -> str:
    """The header a column prints under: a rate gets ``" (%)"`` (``accuracy (%)``), others stay as they are."""
    return f"{column} (%)" if is_rate(column) else column


def format_cell(column: str, row: Mapping) -> str:
    """The text of ``column`` in ``row``.

    ``row[column]`` when present: a rate as percent, ``seconds*`` rounded, other floats with 4 decimals,
    anything else as ``str``. When ``row`` has no ``column`` but ``<column>_mean`` (a :func:`vlkit.fewshot.summarize`
    row), the mean over ``row["seeds"]`` runs with its ``<column>_std`` (:func:`mean_std`; seconds: the mean alone).
    """
    if column not in row and f"{column}_mean" in row:
        mean, n = row[f"{column}_mean"], int(row.get("seeds", 1) or 1)
        if column.startswith("seconds"):
            return seconds(mean)
        return mean_std(mean, row.get(f"{column}_std"), n, rate=is_rate(column))
    value = row.get(column, "")
    if isinstance(value, Real) and not isinstance(value, bool):
        if column.startswith("seconds"):
            return seconds(value)
        if is_rate(column):
            return percent(value)
        if not isinstance(value, int):
            return f"{float(value):.4f}"
    return str(value)


def _default_columns(row: Mapping) -> list[str]:
    """The row's keys, ``x_mean`` shown as one ``x`` column (with its ``x_std``), ``predictions`` left out."""
    columns = []
    for key in row:
        if key == "predictions" or (key.endswith("_std") and f"{key[:-4]}_mean" in row):
            continue
        columns.append(key[:-5] if key.endswith("_mean") else key)
    return columns


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows``, every cell through :func:`format_cell` (``""`` for no rows).

    Args:
        rows: dicts, e.g. ``vlkit.fewshot.evaluate`` or ``summarize`` rows.
        columns: the keys to show, in order (None: the first row's keys, a ``x_mean``/``x_std`` pair as one
            column ``x``). A column ``x`` reads ``x_mean``/``x_std`` from a row without ``x``.
    """
    if not rows:
        return ""
    columns = list(columns) if columns is not None else _default_columns(rows[0])
    lines = ["| " + " | ".join(column_header(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(c, row) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
