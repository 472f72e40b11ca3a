import json
from pathlib import Path

import pytest
import torch

from recsys.data.sequences import AMAZON18_ROOT
from recsys.functional.quantize import append_dedup_level, codebook_usage, collision_rate, sinkhorn_assign


def test_sinkhorn_balances_crowded_points():
    # 8 points at 0.0..0.7 on a line, 4 codes at 0, 1, 2, 3: nearest-code assignment crowds code 0 (6 points);
    # the balanced transport plan (2 points per code) keeps the order: the optimal monotone matching
    points = torch.arange(8) * 0.1
    centres = torch.arange(4).float()
    d = (points[:, None] - centres[None]) ** 2
    assert d.argmin(1).tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert sinkhorn_assign(d, epsilon=0.003, iterations=200).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_dedup_level_numbers_collisions():
    codes = torch.tensor([[0, 1], [0, 1], [2, 2], [0, 1]])
    out = append_dedup_level(codes)
    assert out[:, 2].tolist() == [0, 1, 0, 2]
    assert collision_rate(out) == 0.0
    assert append_dedup_level(torch.tensor([[0], [1]])).shape == (2, 1)  # unique: no extra level


def test_usage_stats_by_hand():
    codes = torch.tensor([[0, 1], [0, 1], [1, 1]])
    s = codebook_usage(codes, [4, 4])
    # 3 items, 2 unique IDs -> collision rate 1 - 2/3; level 0 uses {0,1}, level 1 uses {1}
    assert s["collision_rate"] == pytest.approx(1 / 3)
    assert s["items_in_collisions"] == 2 and s["level0_used"] == 2 and s["level1_used"] == 1
    assert s["level0_use_frac"] == 0.5


@pytest.mark.skipif(not (AMAZON18_ROOT / "Industrial_and_Scientific").exists(), reason="shared data absent")
def test_released_ids_collide_as_documented():
    # reference notes B.1: Industrial 3,686 items -> 3,670 unique IDs, 31 items in collisions, level 1 uses 48/256
    raw = json.loads((AMAZON18_ROOT / "Industrial_and_Scientific" / "sid_index_minionerec.json").read_text())
    codes = torch.tensor([[int(t.split("_")[1][:-1]) for t in v] for v in raw.values()])
    s = codebook_usage(codes, [256] * 3)
    assert (s["items"], s["unique_ids"], s["items_in_collisions"], s["level0_used"]) == (3686, 3670, 31, 48)
