"""Paired statistics (vlkit.functional.stats) against hand-derived cases and closed-form references."""

import math

import pytest
import torch

from vlkit.errors import ConfigError
from vlkit.functional.stats import (
    paired_bootstrap,
    paired_sign_flip_pvalue,
    paired_t_interval,
    student_t_quantile,
)


def test_identical_models_differ_by_exactly_zero_with_a_zero_width_interval():
    hits = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    result = paired_bootstrap(hits, hits.clone(), n_boot=2000)
    assert (result.mean, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.p_value == 1.0  # every sign vector reaches |mean| >= 0
    assert result.n == 7
    assert paired_t_interval(hits, hits) == (0.0, 0.0, 0.0)


def test_a_constant_shift_is_recovered_exactly():
    b = torch.rand(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = b + 0.25  # d_i = 0.25 for every row (to float64 rounding of b + 0.25 - b)
    result = paired_bootstrap(a, b, n_boot=1000)
    assert result.mean == pytest.approx(0.25, abs=1e-12)
    assert result.low == result.high == pytest.approx(0.25, abs=1e-12)
    # only the all-plus and all-minus sign vectors reach |mean| = 0.25: p = (1 + 0) / (1 + 10000) with
    # 2^50 vectors sampled 10,000 times (the chance to draw one of the two is 2^-49 per draw)
    assert result.p_value == pytest.approx(1 / 10001)
    swapped = paired_bootstrap(b, a, n_boot=1000)  # the order of the models only flips the sign
    assert swapped.mean == pytest.approx(-0.25, abs=1e-12) and swapped.high == pytest.approx(-0.25, abs=1e-12)


def test_sign_flip_pvalue_is_exact_on_small_n():
    # d = (1, 2): the 4 sign vectors give means 1.5, -0.5, 0.5, -1.5 -> |.| >= 1.5 twice -> p = 2/4
    assert paired_sign_flip_pvalue([1.0, 2.0], [0.0, 0.0]) == 0.5
    # d = (1, 1, 1, -1): mean 0.5; 16 vectors, |mean| >= 0.5 when the signed sum is +-2 or +-4:
    # sum(s * d) = +-4 (2 vectors) or +-2 (8 vectors: flip exactly one of the four) -> 10/16
    assert paired_sign_flip_pvalue([1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]) == 10 / 16


def test_bootstrap_interval_matches_the_normal_interval_on_large_n():
    n = 4000
    g = torch.Generator().manual_seed(0)
    b = torch.rand(n, generator=g)
    a = b + 0.1 + torch.randn(n, generator=g, dtype=torch.float64).float()  # d ~ N(0.1, 1)
    d = (a.double() - b.double())
    half = 1.959964 * float(d.std()) / math.sqrt(n)  # the closed-form normal interval's half-width
    result = paired_bootstrap(a, b, n_boot=10000, seed=3, n_flips=1000)
    assert result.mean == pytest.approx(float(d.mean()), abs=1e-12)
    # percentile ends move by ~1.4 % of the half-width with 10,000 resamples (MC error of a 2.5 % quantile)
    assert result.low == pytest.approx(float(d.mean()) - half, abs=0.05 * half)
    assert result.high == pytest.approx(float(d.mean()) + half, abs=0.05 * half)
    mean, low, high = paired_t_interval(a, b)  # t with 3999 dof ~ z: the same interval to 1e-4 relative
    assert (high - low) / 2 == pytest.approx(half, rel=1e-3)
    assert result.p_value == pytest.approx(1 / 1001)  # mean 0.1, se 0.016: no sign vector of 1000 comes near


def test_bootstrap_is_seeded_and_the_interval_contains_the_mean():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(300, generator=g), torch.rand(300, generator=g)
    first, again = paired_bootstrap(a, b, n_boot=500, seed=7), paired_bootstrap(a, b, n_boot=500, seed=7)
    assert first == again
    assert first.low < first.mean < first.high


def test_student_t_quantile_against_known_values():
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)  # tan(0.475 pi)
    assert student_t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)  # 0.95 / sqrt(2 * 0.975 * 0.025)
    assert student_t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)  # printed t tables
    assert student_t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    assert student_t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    # scipy.stats.t.ppf(q, dof), 6 decimals (an independent implementation: the regularised incomplete beta)
    reference = {5: (-2.570582, 1.475884, 4.032143), 12: (-2.178813, 1.356217, 3.054540),
                 100: (-1.983972, 1.290075, 2.625891)}
    for dof, values in reference.items():
        for q, value in zip((0.025, 0.9, 0.995), values):
            assert student_t_quantile(q, dof) == pytest.approx(value, abs=4e-3 if dof == 5 else 1e-4)


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="same rows"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ConfigError, match="same rows"):
        paired_bootstrap([], [])
    with pytest.raises(ConfigError, match="finite"):
        paired_bootstrap([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ConfigError, match="ci must be"):
        paired_bootstrap([1.0], [0.0], ci=1.0)
    with pytest.raises(ConfigError, match="n_boot must be"):
        paired_bootstrap([1.0], [0.0], n_boot=0)
