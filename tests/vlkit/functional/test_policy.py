import pytest
import torch

from vlkit.functional.policy import aggregate_tokens, clipped_surrogate, group_advantages, kl_penalty


def test_group_advantages_hand_values():
    # group [1, 0]: mean 0.5, std 0.5 -> [+1, -1]; group [1, 1]: all equal -> 0
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)
    assert torch.allclose(adv, torch.tensor([1.0, -1.0, 0.0, 0.0]), atol=1e-5)
    centred = group_advantages(torch.tensor([3.0, 1.0]), 2, scale="none")
    assert torch.allclose(centred, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.ones(3), 1)


def test_clipped_surrogate_hand_values():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))  # ratios 1.5, 0.5, 1.0
    # A = +1: -min(r, clip(r, .8, 1.2)) = [-1.2, -0.5, -1.0]
    assert torch.allclose(clipped_surrogate(new, old, torch.tensor([1.0])), torch.tensor([[-1.2, -0.5, -1.0]]), atol=1e-6)
    # A = -1: max(r, clip(r)) = [1.5, 0.8, 1.0]; dual clip c = 1.4 caps the first at 1.4
    assert torch.allclose(clipped_surrogate(new, old, torch.tensor([-1.0])), torch.tensor([[1.5, 0.8, 1.0]]), atol=1e-6)
    assert torch.allclose(
        clipped_surrogate(new, old, torch.tensor([-1.0]), dual_clip=1.4), torch.tensor([[1.4, 0.8, 1.0]]), atol=1e-6
    )
    # clip-higher: eps_high = 0.28 lets the ratio 1.5 count up to 1.28
    assert torch.allclose(
        clipped_surrogate(new, old, torch.tensor([1.0]), clip_high=0.28)[0, 0], torch.tensor(-1.28), atol=1e-6
    )


def test_kl_estimators():
    lp, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    # k1 = log(0.5/0.25) = ln 2; k2 = (ln 2)^2 / 2; k3 = r - ln r - 1 with r = 0.5 -> 0.5 + ln 2 - 1
    ln2 = torch.log(torch.tensor(2.0))
    assert torch.allclose(kl_penalty(lp, ref, "k1"), ln2.view(1, 1))
    assert torch.allclose(kl_penalty(lp, ref, "k2"), (ln2**2 / 2).view(1, 1))
    assert torch.allclose(kl_penalty(lp, ref, "k3"), (0.5 + ln2 - 1).view(1, 1))
    assert kl_penalty(lp, lp, "k3").abs().max() < 1e-7


def test_token_aggregation_modes():
    values = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.isclose(aggregate_tokens(values, mask, "token-mean"), torch.tensor(2.0))  # (1+3+2)/3
    assert torch.isclose(aggregate_tokens(values, mask, "seq-mean-token-mean"), torch.tensor(2.0))  # (2+2)/2
    assert torch.isclose(aggregate_tokens(values, mask, "seq-mean-token-sum"), torch.tensor(3.0))  # (4+2)/2
