import pytest
import torch

import math

from vlkit.errors import ConfigError
from vlkit.functional.policy import (
    aggregate_tokens,
    clip_fractions,
    clipped_surrogate,
    completion_mask_after_eos,
    group_advantages,
    kl_penalty,
    masked_token_nll,
    position_ids_from_mask,
    sampled_token_logprobs,
)


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


def test_sampled_token_logprobs_hand_values_and_chunks():
    # one row, V = 2: logits [0, ln 3] -> softmax [1/4, 3/4]; tokens 1 then 0 -> [ln 3/4, ln 1/4]
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # (1, 2, 2)
    tokens = torch.tensor([[1, 0]])
    expected = torch.tensor([[math.log(0.75), math.log(0.25)]])
    assert torch.allclose(sampled_token_logprobs(logits, tokens), expected, atol=1e-6)
    # against log_softmax on random logits; chunking over tokens gives the same values, to the bit
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    tokens = torch.randint(0, 11, (3, 7), generator=g)
    reference = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    whole = sampled_token_logprobs(logits, tokens)
    assert torch.allclose(whole, reference, atol=1e-6)
    assert torch.equal(sampled_token_logprobs(logits, tokens, chunk_size=3), whole)
    # bf16 logits come back as float32 log-probs
    assert sampled_token_logprobs(logits.bfloat16(), tokens).dtype == torch.float32
    with pytest.raises(ConfigError, match="tokens"):
        sampled_token_logprobs(logits, tokens[:, :3])
    with pytest.raises(ConfigError, match="chunk_size must be >= 1"):
        sampled_token_logprobs(logits, tokens, chunk_size=0)


def test_position_ids_and_completion_mask():
    # left padding: positions count from each row's first real token (cumsum - 1), left padding gets 0; a
    # masked token after the text (row 3) repeats the last position (cumsum stays)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3], [0, 0, 1, 1]]
    # 1 up to and including the first EOS (id 2), 0 after it
    comp = torch.tensor([[5, 2, 9, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert completion_mask_after_eos(comp, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_masked_token_nll_hand_value():
    # V = 2, logits [0, 0] -> p = 1/2 everywhere; logits [0, ln 3] -> p(1) = 3/4. Labels: position 0 takes
    # token 1 under [0, ln 3] (-ln 3/4), position 1 is ignored, position 2 takes token 0 under [0, 0] (ln 2)
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0], [0.0, 0.0]]])  # (1, 3, 2)
    labels = torch.tensor([[1, -100, 0]])
    expected = (-math.log(0.75) + math.log(2.0)) / 2
    assert masked_token_nll(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ConfigError, match="labels"):
        masked_token_nll(logits, labels[:, :2])


def test_clip_fractions_hand_values():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0, 1.25]]))  # ratios 1.5, 0.5, 1.0, 1.25
    mask = torch.tensor([[1, 1, 1, 0]])  # the last token does not count
    # eps 0.2: low = {0.5} -> 1/3, high = {1.5} -> 1/3 (1.25 is masked)
    low, high = clip_fractions(new, old, mask, clip_low=0.2)
    assert (low.item(), high.item()) == pytest.approx((1 / 3, 1 / 3))
    # clip-higher 0.6: 1.5 stays inside -> high = 0
    low, high = clip_fractions(new, old, mask, clip_low=0.2, clip_high=0.6)
    assert (low.item(), high.item()) == pytest.approx((1 / 3, 0.0))
    # the first update of a rollout: ratio 1 everywhere -> nothing clipped
    assert [f.item() for f in clip_fractions(new, new, mask)] == [0.0, 0.0]
