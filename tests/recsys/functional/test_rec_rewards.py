import math

import pytest
import torch

from recsys.functional.rewards import hybrid_reward, rank_penalty


def test_rank_penalty_g16_matches_the_authors_numbers():
    # normaliser sum_{j<16} 1/log2(j+2) = 6.1060; a miss at rank 0 costs 1/6.106 = 0.1638, at rank 15 0.25/6.106 = 0.0409
    norm = sum(1 / math.log2(j + 2) for j in range(16))
    assert norm == pytest.approx(6.106, abs=1e-3)
    hits = torch.zeros(1, 16, dtype=torch.bool)
    hits[0, 3] = True
    r = rank_penalty(hits)
    assert r[0, 3].item() == 0.0
    assert r[0, 0].item() == pytest.approx(-1 / norm, abs=1e-6)
    assert r[0, 15].item() == pytest.approx(-(1 / math.log2(17)) / norm, abs=1e-6)


def test_hybrid_reward_groups():
    hits = torch.tensor([[False, True, False], [False, False, False]])
    r = hybrid_reward(hits)
    # group 0: norm = 1 + 1/log2(3) + 1/log2(4) = 1 + 0.63093 + 0.5 = 2.13093
    norm = 1 + 1 / math.log2(3) + 0.5
    assert r[0].tolist() == pytest.approx([-1 / norm, 1.0, -0.5 / norm], abs=1e-6)
    # group 1: nobody hits -> all 0 (the authors zero hard groups)
    assert r[1].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="hits must be"):
        rank_penalty(torch.zeros(3, dtype=torch.bool))
