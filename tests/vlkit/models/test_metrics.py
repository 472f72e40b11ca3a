"""GroupedSums: per-group sums, and the "sum" reduction that makes N ranks report what 1 rank does."""

import pytest
import torch

from vlkit.errors import ConfigError
from vlkit.models.metrics import GroupedSums


def test_grouped_sums_by_hand_and_merged_like_two_ranks():
    groups = torch.tensor([0, 2, 2, 1, 2])
    values = torch.tensor([[1.0, 10.0], [1.0, 20.0], [1.0, 30.0], [1.0, 40.0], [1.0, 50.0]])
    one = GroupedSums(3, 2)
    one.update(groups, values)
    # group 0: row 0; group 1: row 3; group 2: rows 1, 2, 4 (20 + 30 + 50 = 100)
    expected = torch.tensor([[1.0, 10.0], [1.0, 40.0], [3.0, 100.0]], dtype=torch.float64)
    assert torch.equal(one.compute(), expected)
    # two "ranks" holding rows 0, 2, 4 and 1, 3 (the non-padding shards), merged by the metric's own
    # reduction (what the all-reduce does across processes): the 1-rank table
    rank0, rank1 = GroupedSums(3, 2), GroupedSums(3, 2)
    rank0.update(groups[0::2], values[0::2])
    rank1.update(groups[1::2], values[1::2])
    rank0.merge_state(rank1)
    assert torch.equal(rank0.compute(), expected)
    one.reset()
    assert one.sums.abs().sum() == 0


def test_grouped_sums_refuses_bad_rows():
    metric = GroupedSums(3, 2)
    with pytest.raises(ConfigError, match=r"groups must hold ids in \[0, 3\), got \[0, 3\]"):
        metric.update(torch.tensor([0, 3]), torch.ones(2, 2))
    with pytest.raises(ConfigError, match=r"values \(B, 2\)"):
        metric.update(torch.tensor([0, 1]), torch.ones(2, 3))
