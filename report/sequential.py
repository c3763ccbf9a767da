"""Always-valid (anytime-valid) confidence sequences for a head-to-head win probability.

A judgment of arm A against arm B scores ``x`` = 1 (A won), 0.5 (tie) or 0 (B won); the win
probability is ``p = E[x]`` (ties count half). A fixed-horizon interval is only valid at the one
sample size chosen in advance: looked at every day and stopped at the first day it excludes 0.5,
it declares false winners far more often than its level says. A *confidence sequence* holds at
every sample size at once: ``P(for all n: p in C_n) >= 1 - alpha``, so the report may be read
(and acted on) as often as anyone likes.

The sequence is the two-sided **normal-mixture boundary** (Robbins 1970; Howard, Ramdas,
McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Ann. Statist. 49(2)). With ``S_n = sum_i (x_i - p)`` and ``x_i`` in [0, 1], each increment is
sub-Gaussian with variance proxy ``sigma^2 = 1/4`` (Hoeffding's lemma), so for every ``lambda``
``exp(lambda S_n - lambda^2 V_n / 2)`` with ``V_n = sigma^2 n`` is a nonnegative supermartingale.
Mixing ``lambda ~ N(0, 1/rho)`` gives the supermartingale

    M_n = sqrt(rho / (V_n + rho)) * exp(S_n^2 / (2 (V_n + rho))),

and Ville's inequality, ``P(exists n: M_n >= 1/alpha) <= alpha``, gives, with probability at
least ``1 - alpha`` simultaneously for all ``n``,

    |S_n| < sqrt((V_n + rho) * log((V_n + rho) / (rho * alpha^2))),

i.e. ``C_n = p_hat_n -/+ sqrt((V_n + rho) log((V_n + rho) / (rho alpha^2))) / n``, clipped to
[0, 1]. The running intersection of the ``C_n`` is a confidence sequence too (it contains ``p``
whenever all of them do), so an interval only narrows and a winner once declared stays declared.
Coverage holds for any ``rho > 0``; ``rho`` only decides at which sample size the boundary is
tightest: :func:`mixture_rho` tunes it to ``TUNED_AT`` judgments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIGMA2 = 0.25
"""Variance proxy of an observation in [0, 1] (Hoeffding's lemma)."""
TUNED_AT = 200
"""The sample size at which the boundary is made tightest."""
MAX_NEEDED = 10_000_000
"""Beyond this many judgments an estimate of how many are still needed is not worth stating."""


def mixture_rho(alpha: float, tuned_at: int = TUNED_AT) -> float:
    """The mixture precision that makes the boundary nearly tightest at ``tuned_at`` judgments:
    ``rho = V / (2 log(1/alpha) + log(1 + 2 log(1/alpha)))`` with ``V = sigma^2 * tuned_at`` (the
    tuning form Howard et al. 2021 give for normal mixtures; at alpha = 0.05 and 200 judgments the
    radius is within 0.01 % of the best rho's, checked numerically)."""
    log_inv = math.log(1.0 / alpha)
    return SIGMA2 * tuned_at / (2.0 * log_inv + math.log(1.0 + 2.0 * log_inv))


def radius(n: np.ndarray | int, alpha: float, rho: float | None = None) -> np.ndarray:
    """Half-width of ``C_n`` on the scale of the mean, for ``n`` judgments (infinite at 0)."""
    rho = mixture_rho(alpha) if rho is None else rho
    count = np.asarray(n, dtype=float)
    v = SIGMA2 * count + rho
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(v * np.log(v / (rho * alpha * alpha))) / count
    return np.where(count > 0, width, np.inf)


@dataclass(frozen=True)
class Sequence:
    """The confidence sequence after the last judgment: the running intersection of every ``C_n``."""

    n: int
    estimate: float | None
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return self.low > value or self.high < value


def confidence_sequence(scores: np.ndarray, alpha: float, rho: float | None = None) -> Sequence:
    """The sequence over ``scores`` (values in [0, 1], in the order they were judged)."""
    x = np.asarray(scores, dtype=float)
    if len(x) == 0:
        return Sequence(0, None, 0.0, 1.0)
    n = np.arange(1, len(x) + 1)
    means = np.cumsum(x) / n
    half = radius(n, alpha, rho)
    low = float(np.max(np.clip(means - half, 0.0, 1.0)))
    high = float(np.min(np.clip(means + half, 0.0, 1.0)))
    if low > high:  # only possible when the truth is already excluded somewhere: keep the latest interval
        low = float(max(0.0, means[-1] - half[-1]))
        high = float(min(1.0, means[-1] + half[-1]))
    return Sequence(len(x), float(means[-1]), low, high)


def ever_excludes(scores: np.ndarray, truth: float, alpha: float, rho: float | None = None) -> bool:
    """Whether some ``C_n`` over ``scores`` misses ``truth`` (what the coverage guarantee bounds by alpha)."""
    x = np.asarray(scores, dtype=float)
    n = np.arange(1, len(x) + 1)
    means = np.cumsum(x) / n
    return bool(np.any(np.abs(means - truth) >= radius(n, alpha, rho)))


def judgments_needed(estimate: float | None, n: int, alpha: float, rho: float | None = None) -> int | None:
    """How many more judgments until ``C_n`` would exclude 0.5 if the win rate stayed at ``estimate``
    (the smallest ``N >= n`` with ``radius(N) < |estimate - 0.5|``, less ``n``); None when the arms
    look even or more than :data:`MAX_NEEDED` would be needed."""
    if estimate is None:
        return None
    gap = abs(estimate - 0.5)
    if gap <= 0 or radius(MAX_NEEDED, alpha, rho) >= gap:
        return None
    low, high = max(n, 1), MAX_NEEDED  # the radius falls with N beyond a few judgments: bisect
    if radius(low, alpha, rho) < gap:
        return 0
    while high - low > 1:
        middle = (low + high) // 2
        if radius(middle, alpha, rho) < gap:
            high = middle
        else:
            low = middle
    return high - n
