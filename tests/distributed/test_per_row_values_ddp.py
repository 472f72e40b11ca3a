"""``vlkit.callbacks.PerRowValues`` under DDP on 2 CPU processes: the saved per-row ranks (beam search and exact
ranking) are those of 1 process, each of the 13 rows once, sorted by row, and they give the logged metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recsys.functional.metrics import hit_at_k

WORKER = Path(__file__).with_name("_per_row_worker.py")


@pytest.mark.slow  # ~80 s here: two interpreters start, each imports Lightning and transformers
def test_per_row_ranks_are_gathered_from_every_rank(ddp, tmp_path):
    two = ddp.run("minionerec_rows", tmp_path / "two", 2, worker=WORKER)
    one = ddp.run("minionerec_rows", tmp_path / "one", 1, worker=WORKER)[0]
    saved_two = json.loads((tmp_path / "two" / "row_ranks.json").read_text())
    saved_one = json.loads((tmp_path / "one" / "row_ranks.json").read_text())
    # rank 0 held rows 0, 2, 4, ... and rank 1 rows 1, 3, ...: gathered and sorted, the file is the 1-process one
    assert saved_two == saved_one
    assert saved_one["test"]["rows"] == list(range(13)) and saved_one["test_exact"]["rows"] == list(range(7))
    for key, prefix in (("test", ""), ("test_exact", "exact_")):
        ranks = torch.tensor(saved_two[key]["values"]).long()
        assert hit_at_k(ranks, 5).mean().item() == two[0]["metrics"][f"test/{prefix}hr@5"] == one["metrics"][f"test/{prefix}hr@5"]
