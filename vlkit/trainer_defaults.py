"""The kit's Trainer defaults: Lightning without the lines a kit user cannot act on.

Every Trainer Lightning builds prints an advertising tip (``💡 Tip: ... litlogger``) and the hardware
inventory (``GPU available: False, used: False``, ``TPU available: ...``, ``HPU available: ...``,
``LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]``); ``make quickstart`` showed them six times. With
torch >= 2.14, Lightning's own ``CombinedLoader`` (``lightning/pytorch/utilities/_pytree.py``) also builds
a ``LeafSpec``, which torch marks deprecated: a ``FutureWarning`` on every run that no kit user can fix;
likewise peft, wrapping a transformers model with LoRA (ARES, MiniOneRec), reads the deprecated
``is_gradient_checkpointing`` property (``peft/peft_model.py``), a transformers ``FutureWarning``. Neither
comes from the kit's code. :func:`quiet_lightning` drops exactly these messages (filters on Lightning's
loggers and two warnings filters matched on the message), and nothing else: epoch summaries, "GPU available but not used" and every
other warning stay. The third line the issue named, "No seed found", is answered at its cause: the CLI
seeds 0 unless the config sets ``seed_everything`` (the seed Lightning picked anyway, now without the
warning), and ``vlkit.fewshot`` seeds every run with its own seed.

The kit calls it wherever it builds a Trainer: ``vlkit`` (and so ``python -m recsys.experiments``, which
runs the CLI in-process), ``vlkit.fewshot.evaluate`` (and so ``make quickstart`` and the notebooks) and
the demos. A notebook that builds its own ``L.Trainer`` calls it once. Standard library only: it touches
the loggers by name and imports no Lightning.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["QUIET_PREFIXES", "quiet_lightning"]

# the start of each log line dropped
QUIET_PREFIXES = (
    "💡 Tip:",  # litlogger / litmodels advertising (logger_connector, callback_connector)
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "IPU available:",
    "LOCAL_RANK:",  # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"
)
# the loggers Lightning's rank-zero helpers and its CUDA accelerator write through (the helpers' logger is
# whichever of the first three was imported last, so all three get the filter)
_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)
# FutureWarnings raised inside libraries for their own calls (not the kit's code): torch 2.14 deprecates
# LeafSpec, which Lightning's CombinedLoader still builds; peft reads transformers' deprecated property
_LIBRARY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`is_gradient_checkpointing` is deprecated",
)


class _DropPrefixes(logging.Filter):
    """Drops log records whose message starts with one of :data:`QUIET_PREFIXES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a tip or hardware line, True for everything else."""
        return not str(record.getMessage()).lstrip().startswith(QUIET_PREFIXES)


_FILTER = _DropPrefixes()


def quiet_lightning() -> None:
    """Silence Lightning's tips, hardware lines and the two library FutureWarnings (see the module docstring).

    Safe to call any number of times, before or after Lightning is imported."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message in _LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
