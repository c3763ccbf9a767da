"""The report's sections as JSON-ready dicts: ratings, bias checks, agreement, feedback health.

Every number the HTML page shows comes from these dicts, and they are written as is to
``report.json``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import numpy as np

from prefpair.report.config import ELO_INIT, ReportConfig
from prefpair.report.load import Comparisons, LogData, read_dead_letters, read_drop_counts
from prefpair.report.stats import (
    ELO_PER_LOGIT,
    bootstrap_bradley_terry,
    bootstrap_elo,
    bradley_terry,
    cluster_mean,
    cohen_kappa,
    fit_logistic,
    fleiss_kappa,
    online_elo,
    sigmoid,
    z_value,
)
from prefpair.schemas import resolution
from prefpair.storage import S3Options

# Length ratio (longer / shorter) buckets of the stratified length check.
LENGTH_RATIO_EDGES = (1.0, 1.1, 1.25, 1.5, 2.0, math.inf)
LATENCY_PERCENTILES = (50, 90, 99)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2 * 100
    return np.percentile(values, tail, axis=0), np.percentile(values, 100 - tail, axis=0)


def _f(value: Any) -> float | None:
    """A float for JSON: None for missing or non-finite values."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def rating_pairs(comps: Comparisons, config: ReportConfig) -> Comparisons:
    """The comparisons that rate models: between two different models, from pairwise and
    ranking judgments (and score pairs when asked)."""
    mask = comps.a_model != comps.b_model
    if not config.score_pairs_in_ratings:
        mask &= comps.origin != "score"
    return comps.select(mask)


# --------------------------------------------------------------------------- 1. ratings
def ratings(comps: Comparisons, config: ReportConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Bradley-Terry and Elo ratings with bootstrap intervals, and the observed win-rate matrix."""
    pairs = rating_pairs(comps, config)
    models = sorted(set(pairs.a_model.tolist()) | set(pairs.b_model.tolist()))
    k = len(models)
    summary: dict[str, Any] = {
        "comparisons": len(pairs),
        "judgments": len(np.unique(pairs.judgment)),
        "items": len(np.unique(pairs.item)),
        "models": models,
        "score_pairs": config.score_pairs_in_ratings,
        "bootstrap_rounds": config.bootstrap_rounds,
        "confidence": config.confidence,
        "elo_k": config.elo_k,
        "table": [],
        "win_rate_matrix": {"models": models, "win_rate": [], "count": []},
    }
    if k < 2:
        return summary
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[m] for m in pairs.a_model], dtype=np.int64)
    b = np.array([index[m] for m in pairs.b_model], dtype=np.int64)
    s = pairs.score_a
    strengths = bradley_terry(a, b, s, k, l2=config.bt_prior)
    elo = online_elo(a, b, s, k, config.elo_k)
    rounds = config.bootstrap_rounds
    bt_low = bt_high = elo_low = elo_high = elo_median = np.full(k, np.nan)
    if rounds > 0:
        boot_bt = bootstrap_bradley_terry(a, b, s, pairs.item, k, rounds, rng, config.bt_prior)
        bt_low, bt_high = _percentiles(ELO_INIT + ELO_PER_LOGIT * boot_bt, config.confidence)
        boot_elo = bootstrap_elo(a, b, s, pairs.item, k, config.elo_k, rounds, rng)
        elo_low, elo_high = _percentiles(boot_elo, config.confidence)
        elo_median = np.median(boot_elo, axis=0)
    score_sum = np.zeros((k, k))
    count = np.zeros((k, k))
    np.add.at(score_sum, (a, b), s)
    np.add.at(score_sum, (b, a), 1 - s)
    np.add.at(count, (a, b), 1)
    np.add.at(count, (b, a), 1)
    wins = np.bincount(a, weights=(s == 1), minlength=k) + np.bincount(b, weights=(s == 0), minlength=k)
    ties = np.bincount(a, weights=(s == 0.5), minlength=k) + np.bincount(b, weights=(s == 0.5), minlength=k)
    games = count.sum(axis=1)
    bt_rating = ELO_INIT + ELO_PER_LOGIT * strengths
    bt_rank = {m: r for r, m in enumerate(sorted(range(k), key=lambda i: -bt_rating[i]), start=1)}
    elo_rank = {m: r for r, m in enumerate(sorted(range(k), key=lambda i: -elo[i]), start=1)}
    for i, model in enumerate(models):
        summary["table"].append(
            {
                "model": model,
                "comparisons": int(games[i]),
                "wins": int(wins[i]),
                "ties": int(ties[i]),
                "losses": int(games[i] - wins[i] - ties[i]),
                "win_rate": _f(score_sum[i].sum() / games[i]) if games[i] else None,
                "bt_strength": _f(strengths[i]),
                "bt_rating": _f(bt_rating[i]),
                "bt_ci_low": _f(bt_low[i]),
                "bt_ci_high": _f(bt_high[i]),
                "bt_rank": bt_rank[i],
                "elo": _f(elo[i]),
                "elo_median": _f(elo_median[i]),
                "elo_ci_low": _f(elo_low[i]),
                "elo_ci_high": _f(elo_high[i]),
                "elo_rank": elo_rank[i],
            }
        )
    lc = controlled_fit(pairs, config).get("lc_win_rate") or {}
    for row in summary["table"]:
        row["lc_win_rate"] = lc.get(row["model"])
    summary["table"].sort(key=lambda row: row["bt_rank"])
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(count > 0, score_sum / np.where(count > 0, count, 1), np.nan)
    summary["win_rate_matrix"]["win_rate"] = [[_f(v) for v in row] for row in matrix]
    summary["win_rate_matrix"]["count"] = count.astype(int).tolist()
    return summary


# --------------------------------------------------------------------------- 2. bias checks
def _place_term(comps: Comparisons) -> np.ndarray:
    """+1 when a was shown before b, -1 after, 0 when unknown."""
    known = ~np.isnan(comps.a_place) & ~np.isnan(comps.b_place)
    return np.where(known, np.sign(comps.b_place - comps.a_place), 0.0)


def _length_term(comps: Comparisons) -> np.ndarray:
    """log(len_a / len_b); 0 when a length is unknown or zero."""
    known = (comps.a_length > 0) & (comps.b_length > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known, np.log(np.where(known, comps.a_length / comps.b_length, 1.0)), 0.0)


def controlled_fit(comps: Comparisons, config: ReportConfig) -> dict[str, Any]:
    """Bradley-Terry with covariates: strength(a) - strength(b) + position * place_term +
    length * log(len_a / len_b). Position and length effects hold the models fixed; the model
    strengths are length- and position-controlled. Intervals are cluster-robust (sandwich) over
    requests."""
    models = sorted(set(comps.a_model.tolist()) | set(comps.b_model.tolist()))
    index = {m: i for i, m in enumerate(models)}
    n, k = len(comps), len(models)
    out: dict[str, Any] = {"n": n, "position_logit": None, "length_logit": None}
    if n < 10:
        return out
    place, length = _place_term(comps), _length_term(comps)
    x = np.zeros((n, k + 2))
    rows = np.arange(n)
    np.add.at(x, (rows, np.array([index[m] for m in comps.a_model])), 1.0)
    np.add.at(x, (rows, np.array([index[m] for m in comps.b_model])), -1.0)
    x[:, k], x[:, k + 1] = place, length
    fit = fit_logistic(x, comps.score_a, l2=config.bt_prior, clusters=comps.item)
    low, high = fit.ci(z_value(config.confidence))
    if np.any(place != 0):
        out["position_logit"] = {"value": _f(fit.coef[k]), "ci_low": _f(low[k]), "ci_high": _f(high[k])}
    if np.any(length != 0):
        gap = float(np.mean(np.abs(length[length != 0])))
        out["length_logit"] = {"value": _f(fit.coef[k + 1]), "ci_low": _f(low[k + 1]), "ci_high": _f(high[k + 1])}
        # Predicted win rate of the longer answer at the mean length gap, same model, same place.
        out["controlled_longer_win_rate"] = {
            "value": _f(sigmoid(np.array(fit.coef[k + 1] * gap))),
            "ci_low": _f(sigmoid(np.array(low[k + 1] * gap))),
            "ci_high": _f(sigmoid(np.array(high[k + 1] * gap))),
            "mean_abs_log_length_ratio": gap,
        }
    strengths = fit.coef[:k] - fit.coef[:k].mean()
    out["model_strengths"] = {m: _f(strengths[i]) for i, m in enumerate(models)}
    if k >= 2:  # length-controlled win rate: mean predicted win rate against every other model
        diff = strengths[:, None] - strengths[None, :]
        lc = (sigmoid(diff).sum(axis=1) - 0.5) / (k - 1)
        out["lc_win_rate"] = {m: _f(lc[i]) for i, m in enumerate(models)}
    return out


def position_check(comps: Comparisons, z: float) -> dict[str, Any]:
    """Win rate of the candidate shown first (of the two), ties as half."""
    place = _place_term(comps)
    mask = place != 0
    first_score = np.where(place > 0, comps.score_a, 1 - comps.score_a)[mask]
    return {"first_shown_win_rate": cluster_mean(first_score, comps.item[mask], z).as_dict()}


def length_check(comps: Comparisons, z: float) -> dict[str, Any]:
    """Win rate of the longer answer, overall and by how much longer it is."""
    term = _length_term(comps)
    mask = term != 0
    longer_score = np.where(term > 0, comps.score_a, 1 - comps.score_a)[mask]
    ratio = np.exp(np.abs(term[mask]))
    clusters = comps.item[mask]
    buckets = []
    for lo, hi in itertools.pairwise(LENGTH_RATIO_EDGES):
        inside = (ratio >= lo) & (ratio < hi)
        label = f"{lo:.2f}-{hi:.2f}x" if math.isfinite(hi) else f">={lo:.2f}x"
        buckets.append({"ratio_bucket": label, **cluster_mean(longer_score[inside], clusters[inside], z).as_dict()})
    return {"longer_win_rate": cluster_mean(longer_score, clusters, z).as_dict(), "by_length_ratio": buckets}


def time_edges(timestamps: np.ndarray, buckets: int) -> np.ndarray:
    """Equal-width bucket edges (epoch ms) covering ``timestamps``."""
    lo, hi = float(timestamps.min()), float(timestamps.max())
    return np.linspace(lo, hi if hi > lo else lo + 1, buckets + 1)


def chosen_length_trend(comps: Comparisons, config: ReportConfig) -> dict[str, Any]:
    """Mean length of the chosen and the rejected answer over time (decisive judgments)."""
    decisive = (comps.score_a != 0.5) & (comps.a_length > 0) & (comps.b_length > 0)
    if not np.any(decisive):
        return {"points": [], "slope_chars_per_day": None, "chosen_longer_share": None}
    c = comps.select(decisive)
    chosen = np.where(c.score_a == 1, c.a_length, c.b_length)
    rejected = np.where(c.score_a == 1, c.b_length, c.a_length)
    edges = time_edges(c.created_ms, config.time_buckets)
    bucket = np.clip(np.searchsorted(edges, c.created_ms, side="right") - 1, 0, len(edges) - 2)
    points = []
    for i in range(len(edges) - 1):
        inside = bucket == i
        if np.any(inside):
            points.append(
                {
                    "start_ms": int(edges[i]),
                    "n": int(inside.sum()),
                    "chosen_mean_length": _f(chosen[inside].mean()),
                    "rejected_mean_length": _f(rejected[inside].mean()),
                    "chosen_longer_share": _f((chosen[inside] > rejected[inside]).mean()),
                }
            )
    days = (c.created_ms - c.created_ms.min()) / 86_400_000
    slope = float(np.polyfit(days, chosen, 1)[0]) if np.ptp(days) > 0 else None
    return {
        "points": points,
        "slope_chars_per_day": _f(slope),
        "chosen_longer_share": _f((chosen > rejected).mean()),
    }


def origin_counts(comps: Comparisons) -> dict[str, int]:
    """Pairs by where they come from: ``pairwise`` choices, pairs of a ``ranking``, pairs
    implied by two scores of one source (``score``) (or ``dataset`` pairs)."""
    origins, counts = np.unique(comps.origin.astype(str), return_counts=True)
    return {str(o): int(c) for o, c in zip(origins, counts, strict=True)}


def bias(comps: Comparisons, config: ReportConfig) -> dict[str, Any]:
    """Position and length checks and the chosen-length trend, overall and per source type.

    "Overall" covers the judgments that rate models: pairs implied by two scores (reward
    models, thumbs on two candidates) only when ``score_pairs_in_ratings``; what it leaves out
    is counted in its ``left_out``. Each source type gets its own block with every pair of that
    source, score pairs included; ``by_origin`` counts what each block holds."""
    z = z_value(config.confidence)

    def one(group: Comparisons) -> dict[str, Any]:
        fit = controlled_fit(group, config)
        return {
            "comparisons": len(group),
            "by_origin": origin_counts(group),
            "position": {**position_check(group, z), "controlled_logit": fit["position_logit"]},
            "length": {
                **length_check(group, z),
                "controlled_logit": fit["length_logit"],
                "controlled_longer_win_rate": fit.get("controlled_longer_win_rate"),
            },
            "controlled_fit": {k: fit.get(k) for k in ("model_strengths", "lc_win_rate")},
            "chosen_length_trend": chosen_length_trend(group, config),
        }

    per_source = {
        source: one(comps.select(comps.source_type == source)) for source in sorted(set(comps.source_type.tolist()))
    }
    rates = np.ones(len(comps), dtype=bool) if config.score_pairs_in_ratings else comps.origin != "score"
    overall = one(comps.select(rates))
    left = comps.select(~rates)
    overall["left_out"] = {
        "comparisons": len(left),
        "by_origin": origin_counts(left),
        "by_source": {
            str(k): int(v) for k, v in zip(*np.unique(left.source_type.astype(str), return_counts=True), strict=True)
        },
    }
    return {"confidence": config.confidence, "overall": overall, "per_source": per_source}


# --------------------------------------------------------------------------- 3. agreement
def _verdicts(comps: Comparisons, by: np.ndarray) -> dict[tuple[str, str, str], dict[str, str]]:
    """item (request, lower id, higher id) -> rater -> "first" / "tie" / "second" (the lower id
    wins, a tie, the higher id wins); a rater's several judgments of one item are averaged."""
    sums: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for request, a_id, b_id, score, rater in zip(
        comps.request_id.tolist(),
        comps.a_id.tolist(),
        comps.b_id.tolist(),
        comps.score_a.tolist(),
        by.tolist(),
        strict=True,
    ):
        lo_wins = score if a_id < b_id else 1 - score
        sums[(request, min(a_id, b_id), max(a_id, b_id))][rater].append(lo_wins)
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for item, raters in sums.items():
        out[item] = {}
        for rater, scores in raters.items():
            mean = sum(scores) / len(scores)
            out[item][rater] = "first" if mean > 0.5 else "second" if mean < 0.5 else "tie"
    return out


CATEGORIES = ("first", "tie", "second")


def agreement(comps: Comparisons) -> dict[str, Any]:
    """Raw agreement and Cohen's kappa between source types on the same pairs, and between
    raters (``source_id``) of one source type on the same pairs (pooled pairwise Cohen's kappa
    and Fleiss' kappa)."""
    by_type = _verdicts(comps, comps.source_type)
    types = sorted(set(comps.source_type.tolist()))
    between_sources = []
    for s1, s2 in itertools.combinations(types, 2):
        first = [v[s1] for v in by_type.values() if s1 in v and s2 in v]
        second = [v[s2] for v in by_type.values() if s1 in v and s2 in v]
        observed, kappa = cohen_kappa(first, second)
        between_sources.append(
            {"source_a": s1, "source_b": s2, "items": len(first), "agreement": _f(observed), "kappa": _f(kappa)}
        )
    between_raters = []
    for source in types:
        group = comps.select(comps.source_type == source)
        items = {i: v for i, v in _verdicts(group, group.source_key).items() if len(v) >= 2}
        raters = {r for v in items.values() for r in v}
        left: list[str] = []
        right: list[str] = []
        for verdicts in items.values():
            for r1, r2 in itertools.combinations(sorted(verdicts), 2):
                left += [verdicts[r1], verdicts[r2]]  # both orders: a symmetric table
                right += [verdicts[r2], verdicts[r1]]
        observed, kappa = cohen_kappa(left, right)
        counts = np.array([[sum(1 for x in v.values() if x == c) for c in CATEGORIES] for v in items.values()])
        between_raters.append(
            {
                "source_type": source,
                "items": len(items),
                "raters": len(raters),
                "rater_pairs": len(left) // 2,
                "agreement": _f(observed),
                "kappa": _f(kappa),
                "fleiss_kappa": _f(fleiss_kappa(counts)) if len(items) else None,
            }
        )
    return {"categories": list(CATEGORIES), "between_sources": between_sources, "between_raters": between_raters}


# --------------------------------------------------------------------------- 4. health
def health(data: LogData, config: ReportConfig, s3: S3Options | None = None) -> dict[str, Any]:
    """Volume by source over time, coverage, latency, orphans, dead letters, compile drops (their
    files read from a path or ``s3://``, reached with ``s3``)."""
    events = data.rows("SELECT op, count(*) AS n FROM feedback_raw GROUP BY op ORDER BY op")
    inferences = int(data.scalar("SELECT count(DISTINCT request_id) FROM inference_raw") or 0)
    covered = int(
        data.scalar(
            "SELECT count(DISTINCT i.request_id) FROM inference_raw i SEMI JOIN live l ON l.request_id = i.request_id"
        )
        or 0
    )
    live_by_source = data.rows(
        "SELECT source_type, count(*) AS feedback, count(DISTINCT request_id) AS requests "
        "FROM live GROUP BY source_type ORDER BY source_type"
    )
    deleted = int(data.scalar(f"SELECT count(*) FROM feedback_status WHERE status = '{resolution.DELETED}'") or 0)
    volume = data.rows(
        "SELECT f.feedback_timestamp_ms AS ts, coalesce(m.any_source_type, 'UNKNOWN') AS source_type "
        "FROM feedback_raw f JOIN feedback_status m USING (feedback_id)"
    )
    latency_rows = data.rows("SELECT source_type, created_ms - inference_timestamp_ms AS latency_ms FROM live")
    orphans = data.rows("SELECT reason, count(*) AS n FROM orphans_raw GROUP BY reason ORDER BY n DESC")
    dead_letters = read_dead_letters(config.dead_letters, s3)
    drops = read_drop_counts(config.manifest, s3)
    return {
        "feedback_events": {row["op"]: int(row["n"]) for row in events},
        "feedback_live": sum(int(r["feedback"]) for r in live_by_source),
        "feedback_deleted": deleted,
        "by_source": [{k: (int(v) if k != "source_type" else v) for k, v in r.items()} for r in live_by_source],
        "coverage": {
            "inferences": inferences,
            "with_feedback": covered,
            "share": _f(covered / inferences) if inferences else None,
        },
        "volume": _volume(volume, config),
        "latency": _latency(latency_rows),
        "orphans": {
            "total": sum(int(r["n"]) for r in orphans),
            "by_reason": {r["reason"]: int(r["n"]) for r in orphans},
        },
        "dead_letters": dead_letters,
        "compile_drop_counts": drops,
    }


def _volume(rows: list[dict[str, Any]], config: ReportConfig) -> dict[str, Any]:
    if not rows:
        return {"bucket_start_ms": [], "by_source": {}}
    ts = np.array([r["ts"] for r in rows], dtype=float)
    sources = np.array([r["source_type"] for r in rows], dtype=object)
    edges = time_edges(ts, config.time_buckets)
    bucket = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, len(edges) - 2)
    by_source = {
        source: np.bincount(bucket[sources == source], minlength=len(edges) - 1).astype(int).tolist()
        for source in sorted(set(sources.tolist()))
    }
    return {
        "bucket_start_ms": [int(e) for e in edges[:-1]],
        "bucket_ms": int(edges[1] - edges[0]),
        "by_source": by_source,
    }


def _latency_summary(ms: np.ndarray) -> dict[str, Any]:
    if len(ms) == 0:
        return {"n": 0}
    seconds = ms / 1000.0
    out: dict[str, Any] = {
        "n": len(ms),
        "mean_s": _f(seconds.mean()),
        "min_s": _f(seconds.min()),
        "max_s": _f(seconds.max()),
        "negative": int((ms < 0).sum()),
    }
    for p in LATENCY_PERCENTILES:
        out[f"p{p}_s"] = _f(np.percentile(seconds, p))
    return out


def _latency(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles, overall and per source, and a histogram on log-spaced edges (seconds)."""
    known = [r for r in rows if r["latency_ms"] is not None]
    ms = np.array([r["latency_ms"] for r in known], dtype=float)
    sources = np.array([r["source_type"] for r in known], dtype=object)
    positive = ms[ms > 0] / 1000.0
    histogram: dict[str, Any] = {"edges_s": [], "counts": [], "not_positive": int((ms <= 0).sum())}
    if len(positive):
        lo = math.floor(math.log10(positive.min()))
        hi = max(math.ceil(math.log10(positive.max())), lo + 1)
        edges = np.logspace(lo, hi, 4 * (hi - lo) + 1)  # four bins a decade; the last bin is closed
        histogram["edges_s"] = [_f(e) for e in edges]
        histogram["counts"] = np.histogram(positive, bins=edges)[0].astype(int).tolist()
    return {
        "overall": _latency_summary(ms),
        "per_source": {s: _latency_summary(ms[sources == s]) for s in sorted(set(sources.tolist()))},
        "histogram": histogram,
    }
