"""MiniOneRec's rewards for beam-search rollouts (``minionerec_trainer.py``, ``reward_type=ranking``).

For a group of G beams in rank order k = 0..G-1 for one prompt with target y:

    r_rule(k) = 1[beam_k = y]
    r_rank(k) = 0                                            if no beam of the group hits y
              = 0                                            for the hitting beam
              = -(1 / log2(k + 2)) / sum_{j<G} 1/log2(j + 2)  for a miss at rank k, when some beam hits
    R = w_rule * r_rule + w_rank * r_rank   (the authors use w_rule = w_rank = 1)

For G = 16 the normaliser is 6.1060, so a miss costs 0.164 at rank 0 and 0.040 at rank 15.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_number

__all__ = ["rank_penalty", "hybrid_reward"]


def rank_penalty(hits: Tensor) -> Tensor:
    """r_rank for (n_prompts, G) boolean hits in beam-rank order -> (n_prompts, G) float."""
    if hits.dim() != 2 or hits.shape[1] == 0:
        raise ConfigError(f"hits must be (n_prompts, G) with G >= 1, got shape {tuple(hits.shape)}", argument="hits")
    if hits.dtype != torch.bool:
        raise ConfigError(f"hits must be a bool tensor, got {hits.dtype}", argument="hits")
    G = hits.shape[1]
    discount = 1.0 / torch.log2(torch.arange(G, device=hits.device, dtype=torch.float32) + 2.0)  # (G,)
    penalty = -discount / discount.sum()  # (G,)
    any_hit = hits.any(dim=1, keepdim=True)  # (n_prompts, 1)
    return torch.where(any_hit & ~hits, penalty.unsqueeze(0), torch.zeros_like(penalty).unsqueeze(0))


def hybrid_reward(hits: Tensor, rule_weight: float = 1.0, rank_weight: float = 1.0) -> Tensor:
    """R = w_rule * 1[hit] + w_rank * r_rank, (n_prompts, G) -> (n_prompts, G)."""
    check_number("rule_weight", rule_weight)
    check_number("rank_weight", rank_weight)
    return rule_weight * hits.float() + rank_weight * rank_penalty(hits)
