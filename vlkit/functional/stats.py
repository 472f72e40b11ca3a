"""Paired statistics: does model A beat model B on the *same* rows (test users, held-out problems)?

Two models scored on the same n rows give per-row values a_i and b_i (a hit, an NDCG, a correct answer,
a response length). Their difference is decided on the paired differences d_i = a_i - b_i, not on two
per-model intervals: rows that both models find easy or hard cancel, so a paired interval is much narrower
than the overlap of two separate ones (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 13-16; Dror et al., *The Hitchhiker's Guide to Testing Statistical Significance in NLP*, ACL 2018).

- :func:`paired_bootstrap`: mean of d with a percentile bootstrap interval (rows resampled with
  replacement, ``n_boot`` times) and, as a cross-check, the two-sided p-value of a paired sign-flip
  permutation test (:func:`paired_sign_flip_pvalue`).
- :func:`paired_t_interval`: the closed-form paired t interval mean(d) +- t_{n-1} s_d / sqrt(n), a second
  cross-check (for large n it equals the normal interval the bootstrap converges to).
- :func:`student_t_quantile`: the Student-t quantile it needs (exact for 1 and 2 degrees of freedom, the
  Cornish-Fisher expansion of Abramowitz & Stegun 26.7.5 otherwise; measured against scipy for q in
  [0.005, 0.995]: error below 5e-2 at 3 degrees of freedom, 1e-4 from 10, 1e-6 from 30).

Shapes: a, b and d are (n,) vectors over the same rows, in the same order. Everything runs in float64
on the CPU with a seeded ``torch.Generator``: the same inputs and seed give the same interval.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int, check_probability

__all__ = [
    "PairedDifference",
    "paired_bootstrap",
    "paired_sign_flip_pvalue",
    "paired_t_interval",
    "student_t_quantile",
]

_MAX_DRAWS_PER_CHUNK = 1 << 22  # bootstrap index draws held at once (32 MiB of int64), whatever n and n_boot


class PairedDifference(NamedTuple):
    """The paired difference of two models on the same rows (``._asdict()`` gives a JSON-ready dict).

    Attributes:
        mean: mean over rows of a_i - b_i (> 0: the first model is higher).
        low: lower end of the ``ci`` interval of the mean difference.
        high: upper end of the interval.
        p_value: two-sided p-value of "no difference" (paired sign-flip permutation test).
        n: the number of paired rows.
    """

    mean: float
    low: float
    high: float
    p_value: float
    n: int


def _differences(a, b) -> Tensor:
    """(n,) float64 d = a - b on the CPU, after checking that a and b are finite vectors of one length."""
    a = torch.as_tensor(a).detach().to("cpu", torch.float64)
    b = torch.as_tensor(b).detach().to("cpu", torch.float64)
    if a.dim() != 1 or a.shape != b.shape or a.numel() == 0:
        raise ConfigError(f"a and b must be non-empty (n,) vectors over the same rows, got shapes {tuple(a.shape)} "
                          f"and {tuple(b.shape)}", argument="a")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ConfigError("a and b must hold finite per-row values, got NaN or inf", argument="a")
    return a - b  # (n,)


def _check_ci(ci) -> None:
    check_probability("ci", ci, open_low=True, open_high=True)


def student_t_quantile(q: float, dof: int) -> float:
    """The ``q`` quantile of Student's t with ``dof`` degrees of freedom.

    Exact for ``dof`` 1 (Cauchy: tan(pi (q - 1/2))) and 2 ((2q - 1) / sqrt(2 q (1 - q))); otherwise the
    Cornish-Fisher expansion in 1/dof around the normal quantile z (Abramowitz & Stegun 26.7.5, four terms):
    for q in [0.005, 0.995] its error is below 5e-2 at dof 3, 4e-3 at dof 5, 1e-4 from dof 10 and 1e-6 from
    dof 30 (against ``scipy.stats.t.ppf``; a paired interval over hundreds of rows is exact to print precision).

    Args:
        q: the probability, in (0, 1).
        dof: degrees of freedom, an int >= 1.
    """
    check_probability("q", q, open_low=True, open_high=True)
    check_int("dof", dof, low=1)
    if dof == 1:
        return math.tan(math.pi * (q - 0.5))
    if dof == 2:
        return (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    z = float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


def paired_t_interval(a, b, ci: float = 0.95) -> tuple[float, float, float]:
    """Mean of d = a - b and its paired t interval mean +- t_{n-1, (1+ci)/2} s_d / sqrt(n).

    Args:
        a: (n,) per-row values of the first model.
        b: (n,) per-row values of the second model on the same rows.
        ci: the interval's coverage, in (0, 1).

    Returns:
        ``(mean, low, high)``; with one row, or rows whose differences are all equal, low = high = mean.
    """
    _check_ci(ci)
    d = _differences(a, b)  # (n,)
    n = d.numel()
    mean = float(d.mean())
    if n == 1:
        return mean, mean, mean
    half = student_t_quantile((1 + ci) / 2, n - 1) * float(d.std(unbiased=True)) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_sign_flip_pvalue(a, b, n_flips: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of "a and b do not differ" by a paired sign-flip (permutation) test.

    Under the null hypothesis each d_i = a_i - b_i is as likely to be -d_i (the two models' labels swap
    row by row), so the observed |mean(d)| is compared with |mean(s * d)| for random signs s in {-1, +1}^n.
    When 2^n <= ``n_flips`` every sign vector is enumerated and the p-value is exact,
    #{s: |mean(s d)| >= |mean(d)|} / 2^n; otherwise ``n_flips`` random sign vectors give
    (1 + #{...}) / (1 + n_flips) (Phipson & Smyth 2010: never 0). Identical models give p = 1.

    Args:
        a: (n,) per-row values of the first model.
        b: (n,) per-row values of the second model on the same rows.
        n_flips: random sign vectors when 2^n is larger, an int >= 1.
        seed: the generator's seed, an int.
    """
    check_int("n_flips", n_flips, low=1)
    check_int("seed", seed)
    d = _differences(a, b)  # (n,)
    n = d.numel()
    observed = abs(float(d.mean()))
    tolerance = 1e-12 * max(1.0, observed)  # the observed sign vector must count itself despite rounding
    exact = n < 63 and (1 << n) <= n_flips
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n)
    total = (1 << n) if exact else n_flips
    at_least = 0
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        if exact:  # row j of the chunk: the bits of its index give the signs
            codes = torch.arange(start, stop, dtype=torch.int64).unsqueeze(1)  # (c, 1)
            bits = (codes >> torch.arange(n, dtype=torch.int64)) & 1  # (c, n)
        else:
            bits = torch.randint(0, 2, (stop - start, n), generator=generator, dtype=torch.uint8)  # (c, n)
        signs = 1.0 - 2.0 * bits.to(torch.float64)  # (c, n) in {-1, +1}
        flipped = (signs @ d).abs() / n  # (c,) |mean(s * d)|
        at_least += int((flipped >= observed - tolerance).sum())
    return at_least / total if exact else (1 + at_least) / (1 + n_flips)


def paired_bootstrap(a, b, n_boot: int = 10000, seed: int = 0, ci: float = 0.95,
                     n_flips: int = 10000) -> PairedDifference:
    """Mean paired difference of two models on the same rows, its bootstrap interval and a p-value.

    The rows are resampled with replacement ``n_boot`` times; the interval is the percentile interval of
    the resampled means of d = a - b (quantiles (1 - ci)/2 and (1 + ci)/2, linear interpolation). Two
    identical models give mean 0 and a zero-width interval; a constant shift d_i = c gives c and [c, c];
    on large n the interval approaches the normal one, mean +- z s_d / sqrt(n) (all three are tested).
    The p-value is :func:`paired_sign_flip_pvalue`'s (same seed).

    Args:
        a: (n,) per-row values of the first model (a tensor or a sequence of numbers).
        b: (n,) per-row values of the second model on the same rows, in the same order.
        n_boot: bootstrap resamples, an int >= 1 (10,000: the interval's ends move by about 1 % of its
            half-width from seed to seed).
        seed: the generator's seed, an int (the same inputs and seed give the same interval).
        ci: the interval's coverage, in (0, 1).
        n_flips: random sign vectors of the permutation test, an int >= 1.

    Returns:
        a :class:`PairedDifference` (mean, low, high, p_value, n).
    """
    check_int("n_boot", n_boot, low=1)
    check_int("seed", seed)
    _check_ci(ci)
    d = _differences(a, b)  # (n,)
    n = d.numel()
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n)
    means = []
    for start in range(0, n_boot, chunk):
        rows = torch.randint(0, n, (min(chunk, n_boot - start), n), generator=generator)  # (c, n) resampled rows
        means.append(d[rows].mean(dim=1))  # (c,)
    means = torch.cat(means)  # (n_boot,)
    low, high = torch.quantile(means, torch.tensor([(1 - ci) / 2, (1 + ci) / 2], dtype=torch.float64)).tolist()
    mean = float(d.mean())
    if float(d.max() - d.min()) == 0.0:  # every resample is the same constant: no rounding noise in the ends
        low = high = mean
    return PairedDifference(mean, low, high, paired_sign_flip_pvalue(a, b, n_flips, seed), n)
