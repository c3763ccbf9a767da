"""Numeric core of the report, numpy only: logistic (Bradley-Terry) fits, online Elo,
cluster bootstrap and cluster-robust intervals, Cohen's and Fleiss' kappa.

Pairs about one item are not independent: a ranking yields several pairs, and several raters
(an annotator and a second one, a user and a judge) look at the same prompt and candidates. So
intervals resample, or sum scores over, whole items (*clusters*: every pair of one request)
rather than single pairs or single judgments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from prefpair.report.config import ELO_BASE, ELO_INIT, ELO_SCALE

ELO_PER_LOGIT = ELO_SCALE / math.log(ELO_BASE)  # Bradley-Terry logits to the Elo scale


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


# --------------------------------------------------------------------------- logistic fits
@dataclass(frozen=True)
class LogisticFit:
    coef: np.ndarray
    cov: np.ndarray  # cluster-robust (sandwich) when clusters were given, else the inverse Hessian

    def ci(self, z: float) -> tuple[np.ndarray, np.ndarray]:
        se = np.sqrt(np.clip(np.diag(self.cov), 0, None))
        return self.coef - z * se, self.coef + z * se


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    l2: float = 0.01,
    clusters: np.ndarray | None = None,
    max_iter: int = 100,
) -> LogisticFit:
    """Maximum likelihood of ``P(y=1) = sigmoid(x @ coef)`` with fractional targets (a tie is
    y = 0.5) and a small L2 penalty, by Newton's method (the likelihood is concave)."""
    n, p = x.shape
    w = np.ones(n) if weight is None else weight
    coef = np.zeros(p)
    penalty = l2 * np.eye(p)
    hessian = penalty
    for _ in range(max_iter):
        prob = sigmoid(x @ coef)
        gradient = x.T @ (w * (y - prob)) - l2 * coef
        hessian = (x * (w * prob * (1 - prob))[:, None]).T @ x + penalty
        step = np.linalg.solve(hessian, gradient)
        coef = coef + step
        if float(np.max(np.abs(step), initial=0.0)) < 1e-9:
            break
    bread = np.linalg.inv(hessian)
    if clusters is None:
        return LogisticFit(coef, bread)
    residual = (w * (y - sigmoid(x @ coef)))[:, None] * x
    count = int(clusters.max(initial=-1)) + 1
    per_cluster = np.zeros((count, p))
    np.add.at(per_cluster, clusters, residual)
    meat = per_cluster.T @ per_cluster
    used = len(np.unique(clusters))
    scale = used / (used - 1) if used > 1 else 1.0
    return LogisticFit(coef, scale * bread @ meat @ bread)


def bradley_terry(
    a: np.ndarray,
    b: np.ndarray,
    score_a: np.ndarray,
    models: int,
    weight: np.ndarray | None = None,
    l2: float = 0.01,
) -> np.ndarray:
    """Strengths (logits, mean zero) from pairs ``a`` vs ``b`` (model indices), aggregated into
    one row per (a, b, outcome) cell so the fit costs the same for any number of pairs."""
    w = np.ones(len(a)) if weight is None else weight
    cell = (a * models + b) * 3 + np.rint(score_a * 2).astype(np.int64)
    cells, inverse = np.unique(cell, return_inverse=True)
    cell_weight = np.bincount(inverse, weights=w, minlength=len(cells))
    ca, cb, cy = (cells // 3) // models, (cells // 3) % models, (cells % 3) / 2.0
    x = np.zeros((len(cells), models))
    x[np.arange(len(cells)), ca] += 1.0
    x[np.arange(len(cells)), cb] -= 1.0
    coef = fit_logistic(x, cy, cell_weight, l2=l2).coef
    return np.asarray(coef - coef.mean())


def cluster_weights(clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-pair weights of one bootstrap round that draws as many clusters as there are, with
    replacement: each pair counts as often as its cluster was drawn."""
    if len(clusters) == 0:
        return np.zeros(0)
    _, dense = np.unique(clusters, return_inverse=True)
    count = int(dense.max()) + 1
    draws = rng.multinomial(count, np.full(count, 1.0 / count))
    return np.asarray(draws[dense], dtype=float)


def bootstrap_bradley_terry(
    a: np.ndarray,
    b: np.ndarray,
    score_a: np.ndarray,
    clusters: np.ndarray,
    models: int,
    rounds: int,
    rng: np.random.Generator,
    l2: float = 0.01,
) -> np.ndarray:
    """``rounds`` x ``models`` strengths over cluster-bootstrap resamples."""
    out = np.empty((rounds, models))
    for r in range(rounds):
        out[r] = bradley_terry(a, b, score_a, models, cluster_weights(clusters, rng), l2)
    return out


# --------------------------------------------------------------------------- Elo
def online_elo(a: np.ndarray, b: np.ndarray, score_a: np.ndarray, models: int, k: float) -> np.ndarray:
    """FastChat's online Elo: one update per pair in the given (time) order, ties as half."""
    rating = np.full(models, ELO_INIT)
    for i, j, s in zip(a.tolist(), b.tolist(), score_a.tolist(), strict=True):
        expected = 1.0 / (1.0 + ELO_BASE ** ((rating[j] - rating[i]) / ELO_SCALE))
        rating[i] += k * (s - expected)
        rating[j] -= k * (s - expected)
    return rating


def bootstrap_elo(
    a: np.ndarray,
    b: np.ndarray,
    score_a: np.ndarray,
    clusters: np.ndarray,
    models: int,
    k: float,
    rounds: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """FastChat's Elo bootstrap, resampling whole clusters instead of single pairs: each round
    draws clusters with replacement and plays their pairs in a random order. All rounds run
    at once (one vectorised update per step across the rounds); rounds that drew fewer pairs
    idle at the end."""
    rating = np.full((rounds, models), ELO_INIT)
    if len(a) == 0 or rounds == 0:
        return rating
    plays = []  # per round: indices of the pairs drawn, in the order they are played
    for _ in range(rounds):
        drawn = np.repeat(np.arange(len(a)), cluster_weights(clusters, rng).astype(np.int64))
        plays.append(rng.permutation(drawn))
    steps = max(len(p) for p in plays)
    picks = np.full((steps, rounds), -1, dtype=np.int64)
    for r, play in enumerate(plays):
        picks[: len(play), r] = play
    rows = np.arange(rounds)
    for step in range(steps):
        pick = picks[step]
        active = pick >= 0
        pick = np.where(active, pick, 0)
        i, j, s = a[pick], b[pick], score_a[pick]
        expected = 1.0 / (1.0 + ELO_BASE ** ((rating[rows, j] - rating[rows, i]) / ELO_SCALE))
        delta = np.where(active, k * (s - expected), 0.0)
        rating[rows, i] += delta
        rating[rows, j] -= delta
    return rating


# --------------------------------------------------------------------------- means and kappas
@dataclass(frozen=True)
class Proportion:
    """A mean of per-pair scores (1 win, 0.5 tie, 0 loss) with a cluster-robust interval."""

    value: float | None
    low: float | None
    high: float | None
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def cluster_mean(values: np.ndarray, clusters: np.ndarray, z: float) -> Proportion:
    """Mean with a cluster-robust (ratio-estimator) normal interval."""
    n = len(values)
    if n == 0:
        return Proportion(None, None, None, 0)
    mean = float(values.mean())
    _, inverse = np.unique(clusters, return_inverse=True)
    groups = int(inverse.max()) + 1
    residual = np.bincount(inverse, weights=values - mean, minlength=groups)
    if groups < 2:
        return Proportion(mean, None, None, n)
    se = math.sqrt(groups / (groups - 1) * float(np.sum(residual**2))) / n
    return Proportion(mean, max(0.0, mean - z * se), min(1.0, mean + z * se), n)


def cohen_kappa(first: list[str], second: list[str]) -> tuple[float | None, float | None]:
    """Raw agreement and Cohen's kappa of two raters over the same items (None when undefined)."""
    if not first:
        return None, None
    labels = sorted(set(first) | set(second))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for u, v in zip(first, second, strict=True):
        table[index[u], index[v]] += 1
    n = table.sum()
    observed = float(np.trace(table) / n)
    expected = float((table.sum(axis=1) @ table.sum(axis=0)) / n**2)
    kappa = None if expected >= 1.0 else (observed - expected) / (1.0 - expected)
    return observed, kappa


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa for items x categories rating counts; items may have different numbers of
    raters (each needs at least two)."""
    raters = counts.sum(axis=1)
    keep = raters >= 2
    counts, raters = counts[keep], raters[keep]
    if len(counts) == 0:
        return None
    per_item = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    observed = float(per_item.mean())
    share = counts.sum(axis=0) / raters.sum()
    expected = float((share**2).sum())
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)
