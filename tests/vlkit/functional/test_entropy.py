"""Unit tests of vlkit.functional.entropy on hand-derivable inputs (derivations in comments)."""

import math

import pytest
import torch

from vlkit.functional.entropy import (
    EASY,
    HARD,
    MEDIUM,
    bucket_mean,
    bucket_targets,
    difficulty_buckets,
    hierarchical_entropy_reward,
    huber,
    hwe_token_mask,
    response_entropy_threshold,
    token_entropy,
    update_entropy_alpha,
    update_hwe_threshold,
    update_kl_controller,
    window_entropy,
)


def test_token_entropy_hand_value_and_reference():
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert token_entropy(logits).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    # uniform over V: ln V, whatever the offset
    assert token_entropy(torch.full((2, 3, 7), 4.2)).allclose(torch.full((2, 3), math.log(7)))
    # chunking does not change the result; independent reference: torch.distributions
    z = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    ref = torch.distributions.Categorical(logits=z).entropy()
    assert token_entropy(z, chunk_size=1).allclose(ref, atol=1e-5)
    assert token_entropy(z, chunk_size=1000).allclose(ref, atol=1e-5)
    assert token_entropy(z.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(z, chunk_size=0)


def test_window_entropy_following_tokens_padded_with_mean():
    h = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    m = torch.ones_like(h)
    # authors: window t+1..t+2; slots past the end take the response mean (3):
    # t0 (2+3)/2, t1 (3+4)/2, t2 (4+5)/2, t3 (5+3)/2, t4 (3+3)/2
    assert window_entropy(h, m, window=2).tolist() == [[2.5, 3.5, 4.5, 4.0, 3.0]]
    # paper: window t..t+1: t4 = (5 + 3)/2
    assert window_entropy(h, m, window=2, include_current=True).tolist() == [[1.5, 2.5, 3.5, 4.5, 4.0]]
    # right padding: response [1, 2, 3] (mean 2), padded positions give 0
    h2 = torch.tensor([[1.0, 2.0, 3.0, 9.0, 9.0]])
    m2 = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    # t0 (2+3)/2, t1 (3+2)/2, t2 (2+2)/2
    assert window_entropy(h2, m2, window=2).tolist() == [[2.5, 2.5, 2.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="window"):
        window_entropy(h, m, window=0)


def test_response_threshold_is_numpy_style_percentile():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [7.0, 0.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    # 95th percentile of 1..5: index 0.95 * 4 = 3.8 -> 4 + 0.8 * (5 - 4) = 4.8; a single value is its own
    assert response_entropy_threshold(w, m).tolist() == pytest.approx([4.8, 7.0])
    assert torch.isnan(response_entropy_threshold(w, torch.zeros_like(m))).all()


def test_hwe_threshold_initialises_then_decays():
    # unset (-1): the batch median of (1, 3, 2) = 2
    tau = update_hwe_threshold(torch.tensor(-1.0), torch.tensor([1.0, 3.0, 2.0]))
    assert tau.item() == 2.0
    # then 0.99 * 2 + 0.01 * median(4, 4) = 2.02, NaN (empty responses) ignored
    tau = update_hwe_threshold(tau, torch.tensor([4.0, 4.0, float("nan")]))
    assert tau.item() == pytest.approx(2.02)
    assert update_hwe_threshold(tau, torch.tensor([float("nan")])).item() == pytest.approx(2.02)


def test_hwe_token_mask_with_and_without_triggers():
    win = torch.tensor([[0.5, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert hwe_token_mask(win, mask, 2.0).tolist() == [[False, True, True, False]]
    tokens = torch.tensor([[7, 7, 8, 7]])
    # only the sampled trigger token 7 with a hot window: position 1
    assert hwe_token_mask(win, mask, 2.0, tokens, torch.tensor([7])).tolist() == [[False, True, False, False]]
    with pytest.raises(ValueError, match="token_ids"):
        hwe_token_mask(win, mask, 2.0, None, torch.tensor([7]))


def test_difficulty_buckets_edges():
    # G = 3: 2/3 correct is easy (edge inclusive), 1/3 medium, 0/3 hard, 3/3 easy
    correct = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1.0])
    expected = [EASY] * 3 + [MEDIUM] * 3 + [HARD] * 3 + [EASY] * 3
    assert difficulty_buckets(correct, 3).tolist() == expected
    # G = 4: 2/4 = 0.5 is medium, 1/4 hard
    assert difficulty_buckets(torch.tensor([1, 1, 0, 0, 1, 0, 0, 0.0]), 4).tolist() == [MEDIUM] * 4 + [HARD] * 4
    with pytest.raises(ValueError, match="group_size"):
        difficulty_buckets(torch.ones(5), 2)


def test_targets_and_alpha():
    counts = torch.tensor([2.0, 4.0, 5.6, 5.6])  # easy, easy, hard, hard
    buckets = torch.tensor([EASY, EASY, HARD, HARD])
    sums, n = bucket_mean(counts, buckets)
    assert sums.tolist() == pytest.approx([6.0, 0.0, 11.2]) and n.tolist() == [2.0, 0.0, 2.0]
    # easy mean 3 -> 3, hard mean 5.6 -> 6, medium absent keeps its previous 7
    targets = bucket_targets(sums, n, previous=torch.tensor([0.0, 7.0, 0.0]))
    assert targets.tolist() == [3.0, 7.0, 6.0]
    # alpha: easy += 0.05 * (3 - 3) = 0.5; hard += 0.05 * (6 - 5.6) = 0.52; medium untouched
    alpha = update_entropy_alpha(torch.full((3,), 0.5), sums, n, targets)
    assert alpha.tolist() == pytest.approx([0.5, 0.5, 0.52])
    # clipping to [0, 2]
    assert update_entropy_alpha(torch.full((3,), 1.99), sums * 100, n, targets).tolist()[0] == 2.0


def test_huber_is_continuous():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    # kappa = 2: 0, 1/4, 1 (= 2 - 1, continuous), 3 - 1
    assert huber(x, 2.0).tolist() == [0.0, 0.25, 1.0, 2.0]


def test_reward_reproduces_the_shipped_recipe_numbers():
    # What the authors' recipe effectively trained with (everything scored as easy, target 0, alpha 0.5):
    # m = max(1, 0.15 * 1) = 1; correct with n HWE: -min(0.5, Huber(n - 1, 2) / 3 * 0.5)
    # n = 2: Huber(1) = 1/4 -> -1/24; n = 3: Huber(2) = 1 -> -1/6; n = 4: Huber(3) = 2 -> -1/3; n = 5: -0.5
    n = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    b = torch.zeros(6, dtype=torch.long)
    r = hierarchical_entropy_reward(n, torch.zeros(3), b, torch.ones(6), torch.full((3,), 0.5))
    assert r.tolist() == pytest.approx([0.0, 0.0, -1 / 24, -1 / 6, -1 / 3, -0.5])
    # wrong answers: 0.6 * 0.5 * sigma_2(max(n - 1, 0)): n = 0 -> 0.3 * 0.5 = 0.15
    r = hierarchical_entropy_reward(n, torch.zeros(3), b, torch.zeros(6), torch.full((3,), 0.5))
    assert r[0].item() == pytest.approx(0.15)
    assert r[5].item() == pytest.approx(0.3 / (1 + math.exp(-4 / 2)))


def test_reward_medium_and_hard():
    alpha = torch.full((3,), 0.5)
    targets = torch.tensor([0.0, 4.0, 10.0])
    # medium, target 4: m = max(1, 0.25 * 4) = 1; n = 8 or 0: |delta| - m = 3, Huber(3, 3) = 1.5,
    # 1.5 / (1 + 3) * 0.5 = 0.1875 (symmetric); n = 5 is inside the band: 0
    r = hierarchical_entropy_reward(torch.tensor([8.0, 0.0, 5.0]), targets, torch.full((3,), MEDIUM), torch.ones(3), alpha)
    assert r.tolist() == pytest.approx([-0.1875, -0.1875, 0.0])
    # medium wrong, n = 8: 0.8 * 0.5 * sigma_2.5(8 - 4 - 1 = 3)
    r = hierarchical_entropy_reward(torch.tensor([8.0]), targets, torch.tensor([MEDIUM]), torch.zeros(1), alpha)
    assert r.item() == pytest.approx(0.4 / (1 + math.exp(-3 / 2.5)))
    # hard, target 10: m = 3.5, cap = 0.5 * 1.2 = 0.6
    # n = 10: delta = 0 >= -3.5 -> +0.6 sigma_3(3.5); n = 5: delta = -5 < -3.5 ->
    # -0.5 * Huber(1.5, 4) / 7.5 * 0.6 = -0.5 * 0.28125 / 7.5 * 0.6 = -0.01125
    r = hierarchical_entropy_reward(torch.tensor([10.0, 5.0]), targets, torch.full((2,), HARD), torch.ones(2), alpha)
    assert r.tolist() == pytest.approx([0.6 / (1 + math.exp(-3.5 / 3)), -0.01125])
    # hard wrong, n = 20: + 0.6 sigma_3(20 - 10 - 3.5)
    r = hierarchical_entropy_reward(torch.tensor([20.0]), targets, torch.tensor([HARD]), torch.zeros(1), alpha)
    assert r.item() == pytest.approx(0.6 / (1 + math.exp(-6.5 / 3)))


def test_kl_controller_step():
    target = 0.01
    kl_ema = torch.full((3,), target)
    # easy batch KL 0.11: K = 0.97 * 0.01 + 0.03 * 0.11 = 0.013, e = 0.3, E = 0.03 * 0.3 = 0.009,
    # log beta = 0.05 * 0.009 = 4.5e-4. Medium at the target: e = 0 inside the dead band: unchanged.
    # Hard absent: unchanged.
    sums = torch.tensor([0.11 * 2, 0.01 * 3, 0.0])
    counts = torch.tensor([2.0, 3.0, 0.0])
    k, e, lb = update_kl_controller(kl_ema, torch.zeros(3), torch.zeros(3), sums, counts, target)
    assert k.tolist() == pytest.approx([0.013, 0.01, 0.01])
    assert e.tolist() == pytest.approx([0.009, 0.0, 0.0])
    assert lb.tolist() == pytest.approx([4.5e-4, 0.0, 0.0])
    # the error is clipped at 0.2 per step, and beta stays within [1e-4, 1e2]
    k, e, lb = update_kl_controller(kl_ema, torch.ones(3), torch.zeros(3), sums, counts, target)
    assert lb[0].item() == pytest.approx(0.05 * 0.2)
    _, _, lb = update_kl_controller(kl_ema, torch.ones(3), torch.full((3,), math.log(100.0)), sums, counts, target)
    assert lb[0].item() == pytest.approx(math.log(100.0))
    # update_beta=False only moves the KL average (the authors update beta every N micro-batches)
    k2, e2, lb2 = update_kl_controller(kl_ema, torch.zeros(3), torch.zeros(3), sums, counts, target, update_beta=False)
    assert k2.tolist() == pytest.approx([0.013, 0.01, 0.01]) and e2.abs().sum() == 0 and lb2.abs().sum() == 0
    with pytest.raises(ValueError, match="target"):
        update_kl_controller(kl_ema, torch.zeros(3), torch.zeros(3), sums, counts, 0.0)


def test_hwe_threshold_median_averages_the_two_middle_values_like_np_median():
    # Issue 10 (3): the authors take np.median, which for an even count is the mean of the two middle
    # values. Sorted (1, 2, 3, 10): middle values 2 and 3 -> 2.5 (torch.median would give the lower, 2).
    tau = update_hwe_threshold(torch.tensor(-1.0), torch.tensor([10.0, 1.0, 3.0, 2.0]))
    assert tau.item() == 2.5
    # decay step: 0.99 * 2.5 + 0.01 * median(0, 1, 5, 7, NaN) = 2.475 + 0.01 * (1 + 5) / 2 = 2.505;
    # the NaN (an empty response) is dropped first, leaving the even count 4
    tau = update_hwe_threshold(tau, torch.tensor([7.0, float("nan"), 0.0, 5.0, 1.0]))
    assert tau.item() == pytest.approx(2.505, abs=1e-6)
    # an odd count keeps the single middle value: median(4, 1, 9) = 4
    assert update_hwe_threshold(torch.tensor(-1.0), torch.tensor([4.0, 1.0, 9.0])).item() == 4.0
