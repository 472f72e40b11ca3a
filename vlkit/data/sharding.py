"""Evaluation rows split across ranks without padding, so every row is scored exactly once.

Under a multi-process strategy (Lightning's DDP or FSDP), Lightning gives every loader that lacks one a
``torch.utils.data.DistributedSampler``, which *pads* the last shard by repeating rows so that every rank
runs the same number of batches. That is right for training and wrong for evaluation: with 5 rows on 2
ranks, row 0 is scored twice and the metric is computed over 6 rows. The evaluation loaders of the kit's
DataModules therefore bring their own :func:`evaluation_sampler`: Lightning's
``UnrepeatedDistributedSampler`` (rank r gets rows r, r + W, r + 2W, ...; the shards differ in length by
at most one row). Lightning keeps a loader's own ``DistributedSampler`` as it is, so this works with the
default ``Trainer(use_distributed_sampler=True)``.

Uneven shards are safe in evaluation: no ``validation_step``/``test_step`` of the kit runs a collective per
batch (metrics are torchmetrics states reduced at epoch end, logged values reduced with ``sync_dist``);
DistributedDataParallel syncs buffers only on the first evaluation batch, which every rank runs because
each needs at least one row (checked here).
"""

from __future__ import annotations

from collections.abc import Sized

import torch
from torch.utils.data import Sampler

from vlkit.errors import ConfigError

__all__ = ["evaluation_sampler", "world_size"]


def world_size() -> int:
    """The number of processes of the initialised default process group (1 when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def evaluation_sampler(dataset: Sized) -> Sampler | None:
    """The sampler of an evaluation loader: an in-order, non-padding shard of ``dataset`` for this rank
    under a multi-process run, None (the loader's plain in-order sampler) on one process.

    Args:
        dataset: the evaluation rows (anything with ``len``).

    Returns:
        ``lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler(dataset, shuffle=False)``
        when a process group of more than one rank is initialised, else None.

    Raises:
        ConfigError: fewer rows than ranks (a rank without a batch would stall the others).
    """
    ranks = world_size()
    if ranks == 1:
        return None
    if len(dataset) < ranks:
        raise ConfigError(f"evaluation needs at least one row per rank: got {len(dataset)} rows for {ranks} ranks "
                          f"(use fewer devices or more evaluation rows)", argument="devices")
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)
