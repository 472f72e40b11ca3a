"""Evaluation state that torchmetrics lacks a class for, as torchmetrics metrics reduced across ranks.

``torchmetrics`` covers accuracy, recall, IoU, means and concatenation; what it lacks is a table of sums kept
per group (ARES' count, correct answers, length and HWE tokens per generator level). :class:`GroupedSums`
holds that table as one ``dist_reduce_fx="sum"`` state, so N ranks compute what 1 rank does on the same rows.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from vlkit.errors import ConfigError, check_int

__all__ = ["GroupedSums"]


class GroupedSums(Metric):
    """Per-group sums of per-row values: ``sums[g, f] = sum over rows i with group_i = g of values[i, f]``,
    summed over ranks at :meth:`compute`.

    Args:
        num_groups: G, the number of groups (group ids in [0, G)).
        num_values: F, the values kept per row.
    """

    full_state_update = False

    def __init__(self, num_groups: int, num_values: int) -> None:
        super().__init__()
        check_int("num_groups", num_groups, low=1)
        check_int("num_values", num_values, low=1)
        self.sums: Tensor
        self.add_state("sums", default=torch.zeros(num_groups, num_values, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, groups: Tensor, values: Tensor) -> None:
        """Add rows: ``groups`` (B,) long ids in [0, G), ``values`` (B, F)."""
        if groups.dim() != 1 or values.dim() != 2 or values.shape != (groups.shape[0], self.sums.shape[1]):
            raise ConfigError(f"groups must be (B,) and values (B, {self.sums.shape[1]}), got {tuple(groups.shape)} and "
                              f"{tuple(values.shape)}", argument="values")
        if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= self.sums.shape[0]):
            raise ConfigError(f"groups must hold ids in [0, {self.sums.shape[0]}), got [{int(groups.min())}, "
                              f"{int(groups.max())}]", argument="groups")
        self.sums.index_add_(0, groups.to(self.sums.device), values.to(self.sums))  # (G, F)

    def compute(self) -> Tensor:
        """(G, F) the sums over every row seen (on every rank)."""
        return self.sums
