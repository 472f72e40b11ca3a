"""Unit tests of vlkit.functional.aepo: the loss against a hand-computed clipped surrogate, the reward
shaping order and range checks, group filtering, and the 80/20, Clip-Cov and KL-Cov token selections."""

import math

import pytest
import torch

from vlkit.functional.aepo import (
    accuracy_group_mask,
    aepo_loss,
    clip_cov_mask,
    kl_cov_indices,
    shaped_rewards,
    token_covariance,
    top_entropy_mask,
)


def _lp(ratios, old=-1.0):
    old_lp = torch.full((1, len(ratios)), old)
    return old_lp + torch.log(torch.tensor([ratios])), old_lp


def test_loss_matches_hand_computed_clipped_surrogate():
    # eps_low 0.2, eps_high 0.3, dual clip 3, one token per case:
    # A=+1, r=1.5: -min(1.5, 1.3) = -1.3      A=+1, r=0.5: -min(0.5, 0.8) = -0.5
    # A=-1, r=1.5: -min(-1.5, -1.3) = 1.5     A=-1, r=5:   -min(-5, -1.3) = 5, dual clip caps at 3
    lp, old = _lp([1.5, 0.5, 1.5, 5.0])
    lp = lp.view(4, 1)
    old = old.view(4, 1)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    mask = torch.ones(4, 1)
    loss, stats = aepo_loss(lp, old, adv, mask)
    assert loss.item() == pytest.approx((-1.3 - 0.5 + 1.5 + 3.0) / 4)
    # clipped tokens: r = 1.5 > 1.3 (twice) and r = 5; r = 0.5 < 0.8
    assert stats["clip_frac"].item() == pytest.approx(1.0)
    # masked tokens do not count (token-mean over the mask)
    loss, _ = aepo_loss(lp, old, adv, torch.tensor([[1.0], [1.0], [0.0], [0.0]]))
    assert loss.item() == pytest.approx((-1.3 - 0.5) / 2)


def test_on_policy_gradient_and_kl_term():
    # on-policy (ratio 1): d loss / d logp_t = -A_i / N for every valid token (N = 3 here)
    lp = torch.zeros(2, 2, requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = aepo_loss(lp, lp.detach(), adv, mask)
    loss.backward()
    assert torch.allclose(lp.grad, torch.tensor([[-2 / 3, -2 / 3], [1 / 3, 0.0]]))
    # k3 KL with log pi - log pi_ref = ln 2: e^{-ln 2} + ln 2 - 1 = 0.5 + ln 2 - 1, times the per-sequence coef
    lp = torch.zeros(2, 1)
    ref = torch.full((2, 1), -math.log(2.0))
    k3 = 0.5 + math.log(2.0) - 1.0
    loss, stats = aepo_loss(lp, lp, torch.zeros(2), torch.ones(2, 1), ref, kl_coef=torch.tensor([0.1, 0.3]))
    assert loss.item() == pytest.approx((0.1 * k3 + 0.3 * k3) / 2)
    assert stats["kl"].item() == pytest.approx(k3)


def test_shaped_rewards_checks_and_values():
    correct = torch.tensor([1.0, 0.0])
    b = torch.tensor([0, 0])
    r = shaped_rewards(correct, torch.tensor([3.0, 0.0]), torch.zeros(3), b, torch.full((3,), 0.5))
    # easy: 1 - 1/6 (see test_entropy) and 0 + 0.15
    assert r.tolist() == pytest.approx([1 - 1 / 6, 0.15])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        shaped_rewards(torch.tensor([1.5, 0.0]), torch.zeros(2), torch.zeros(3), b, torch.ones(3))
    with pytest.raises(ValueError, match="buckets"):
        shaped_rewards(correct, torch.zeros(2), torch.zeros(3), torch.tensor([0, 3]), torch.ones(3))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        shaped_rewards(correct, torch.zeros(3), torch.zeros(3), b, torch.ones(3))


def test_accuracy_filter_keeps_mixed_groups_only():
    correct = torch.tensor([1, 1, 0, 0, 0, 0, 1, 1, 1.0])
    assert accuracy_group_mask(correct, 3).tolist() == [True] * 3 + [False] * 6
    with pytest.raises(ValueError, match="group_size"):
        accuracy_group_mask(correct, 1)


def test_top_entropy_mask_keeps_top_fifth():
    ent = torch.arange(1.0, 11.0).view(2, 5)
    # 0.8 quantile of 1..10 = 1 + 0.8 * 9 = 8.2: tokens 9 and 10
    m = top_entropy_mask(ent, torch.ones(2, 5), 0.2)
    assert m.flatten().nonzero().flatten().tolist() == [8, 9]
    # the selection restricts the policy-gradient part of the loss
    lp = torch.zeros(2, 5, requires_grad=True)
    loss, stats = aepo_loss(lp, lp.detach(), torch.tensor([1.0, 1.0]), torch.ones(2, 5),
                            token_selection="top_entropy", entropy=ent)
    loss.backward()
    assert (lp.grad != 0).flatten().nonzero().flatten().tolist() == [8, 9]
    assert stats["selected_frac"].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="entropy"):
        aepo_loss(lp, lp.detach(), torch.ones(2), torch.ones(2, 5), token_selection="top_entropy")


def test_covariance_selections():
    # Cov_t = (A_t - mean A)(logp_t - mean logp): A = (1, 1, -1, -1) broadcast, logp = (3, 0, 0, -3) -> mean 0, 0
    lp = torch.tensor([[3.0, 0.0], [0.0, -3.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    cov = token_covariance(lp, adv, mask)
    assert cov.tolist() == [[3.0, 0.0], [0.0, 3.0]]
    # KL-Cov: top max(1, int(0.25 * 4)) = 1 token by Cov (ties: one of the two 3s)
    chosen = kl_cov_indices(cov, mask, k_ratio=0.25)
    assert chosen.sum().item() == 1 and cov[chosen].item() == 3.0
    # Clip-Cov: eligible = Cov in [1, 5] -> the two 3s; with ratio 0.5 both are detached
    detach = clip_cov_mask(cov, mask, clip_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert detach.tolist() == [[True, False], [False, True]]
    lpg = lp.clone().requires_grad_(True)
    loss, _ = aepo_loss(lpg, lp, adv, mask, token_selection="clip_cov", cov_clip_ratio=0.5)
    loss.backward()
    # detached tokens get no gradient; the others -A/N
    assert torch.allclose(lpg.grad, torch.tensor([[0.0, -0.25], [0.25, 0.0]]))
    # KL-Cov on-policy: loss value unchanged (|logp - old| = 0), gradient -A/N + coef * sign(0) = -A/N
    lpg = lp.clone().requires_grad_(True)
    loss_kc, _ = aepo_loss(lpg, lp, adv, mask, token_selection="kl_cov", kl_cov_ratio=0.25)
    loss_all, _ = aepo_loss(lp, lp, adv, mask)
    assert loss_kc.item() == pytest.approx(loss_all.item())
    with pytest.raises(ValueError, match="token_selection"):
        aepo_loss(lp, lp, adv, mask, token_selection="nope")
