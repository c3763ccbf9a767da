"""The report's section per comparative experiment: head-to-head win rates and a winner statement.

An experiment's judgments are the comparisons (judged pairs, :mod:`prefpair.report.load`) whose
feedback carries its ``experiment_id`` and whose two candidates come from two different arms.
Per pair of arms the win probability (ties count half) gets an always-valid confidence sequence
(:mod:`prefpair.report.sequential`), at level ``1 - alpha / pairs`` so that every statement of
the experiment holds at once (Bonferroni). A winner is declared only when its sequence excludes
0.5 against every other arm; otherwise the section says "no winner yet" and estimates how many
more judgments the leading arm would need if the observed win rates held.

Definitions (name, arms, metadata) come from the experiments topic when Kafka is configured
(:func:`definitions_from_topic`), or from a JSON file (``--experiments``: what ``prefpair
experiments list --json``, ``GET /v1/experiments`` or ``PreferenceLogger.list_experiments`` gives);
an experiment id seen in the log without a definition is shown with the models it compared.
"""

from __future__ import annotations

import json
import logging
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from prefpair.config import Settings
from prefpair.errors import ConfigError, KafkaUnavailableError
from prefpair.event_topics import EventTopicError, read_topic
from prefpair.kafka import resolve_bootstrap
from prefpair.report import sequential
from prefpair.report.exceptions import ReportInputError
from prefpair.report.load import LogData
from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.experiments import Experiment, latest_definitions

log = logging.getLogger(__name__)

TOPIC_TIMEOUT_S = 15.0

METHOD = (
    "always-valid confidence sequence (two-sided normal mixture, Robbins 1970 / Howard et al. 2021) on the "
    "win probability, ties counted half, running intersection; level split over the pairs of arms (Bonferroni)"
)


def definitions_from_topic(settings: Settings, timeout: float = TOPIC_TIMEOUT_S) -> list[Experiment] | None:
    """The definitions on ``settings.experiments_topic``; None when no Kafka is configured (no bootstrap
    servers and no local broker running) or it cannot be read, which is logged: the report goes on
    without names and arms, showing each experiment of the log with the models it compared."""
    try:
        resolve_bootstrap(settings)
    except ConfigError:
        return None
    try:
        return latest_definitions(r.value for r in read_topic(settings, settings.experiments_topic, timeout))
    except (KafkaUnavailableError, EventTopicError) as exc:
        log.warning("experiment definitions not read from %s: %s", settings.experiments_topic, exc)
        return None


def read_definitions(path: Path | None) -> list[Experiment]:
    """Experiment definitions from a JSON file: a list, or an object with an ``items`` list."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportInputError("experiments", f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError("experiments", f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ReportInputError("experiments", f"{path} holds no list of experiments")
    found = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "id" in item and "experiment_id" not in item:  # GET /v1/experiments
            item = {"experiment_id": item["id"], "created_ms": item.get("created_at_ms"),
                    **{k: item[k] for k in ("name", "arms", "description", "metadata") if k in item}}  # fmt: skip
        try:
            found.append(Experiment.parse(item))
        except ValidationError as exc:
            raise ReportInputError("experiments", f"{path}: item {index}: {exc}") from None
    return found


def experiments(data: LogData, definitions: list[Experiment], confidence: float) -> list[dict[str, Any]]:
    """One entry per experiment, defined or seen in the log, ordered by creation then id."""
    rows = data.rows(
        "SELECT experiment_id, a_model, b_model, score_a FROM comparisons "
        "WHERE experiment_id IS NOT NULL ORDER BY created_ms, feedback_id, a_id, b_id"
    )
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(str(row["experiment_id"]), []).append(row)
    defined = {e.experiment_id: e for e in definitions}
    ids = [e.experiment_id for e in definitions] + sorted(set(by_id) - set(defined))
    return [_experiment(i, defined.get(i), by_id.get(i, []), 1.0 - confidence) for i in ids]


def _experiment(
    experiment_id: str, definition: Experiment | None, rows: list[dict[str, Any]], alpha: float
) -> dict[str, Any]:
    if definition is not None:
        arms = list(definition.arms)
        arm_of = definition.arm_of
    else:
        arms = sorted({str(r["a_model"]) for r in rows} | {str(r["b_model"]) for r in rows})

        def arm_of(model: str) -> str | None:
            return model if model in arms else None

    pairs = list(combinations(arms, 2))
    pair_alpha = alpha / max(1, len(pairs))
    scores: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    outside = 0
    for row in rows:
        a, b = arm_of(str(row["a_model"])), arm_of(str(row["b_model"]))
        if a is None or b is None or a == b:
            outside += 1
            continue
        if (a, b) in scores:
            scores[(a, b)].append(float(row["score_a"]))
        else:
            scores[(b, a)].append(1.0 - float(row["score_a"]))
    pair_rows = [_pair(a, b, np.asarray(scores[(a, b)]), pair_alpha) for a, b in pairs]
    winner = _winner(arms, pair_rows)
    entry: dict[str, Any] = {
        "experiment_id": experiment_id,
        "name": definition.name if definition else experiment_id,
        "defined": definition is not None,
        "description": definition.description if definition else None,
        "arms": arms,
        "created_ms": definition.created_ms if definition else None,
        "metadata": dict(definition.metadata) if definition else {},
        "judgments": sum(p["judgments"] for p in pair_rows),
        "judgments_outside_arms": outside,
        "alpha": alpha,
        "pair_alpha": pair_alpha,
        "method": METHOD,
        "pairs": pair_rows,
        "winner": winner,
    }
    entry["judgments_needed"] = None if winner else _needed(arms, pair_rows)
    entry["statement"] = _statement(entry)
    return entry


def _pair(a: str, b: str, scores: np.ndarray, alpha: float) -> dict[str, Any]:
    cs = sequential.confidence_sequence(scores, alpha)
    decided = a if cs.low > 0.5 else b if cs.high < 0.5 else None
    return {
        "arm_a": a,
        "arm_b": b,
        "judgments": len(scores),
        "wins_a": int(np.sum(scores == 1.0)),
        "wins_b": int(np.sum(scores == 0.0)),
        "ties": int(np.sum(scores == 0.5)),
        "win_rate_a": cs.estimate,
        "ci_low": cs.low,
        "ci_high": cs.high,
        "better": decided,
        "judgments_needed": None if decided else sequential.judgments_needed(cs.estimate, cs.n, alpha),
    }


def _beats(pair: dict[str, Any], arm: str) -> bool:
    return bool(pair["better"] == arm)


def _winner(arms: list[str], pairs: list[dict[str, Any]]) -> str | None:
    for arm in arms:
        mine = [p for p in pairs if arm in (p["arm_a"], p["arm_b"])]
        if mine and all(_beats(p, arm) for p in mine):
            return arm
    return None


def _leader(arms: list[str], pairs: list[dict[str, Any]]) -> str | None:
    """The arm with the highest mean observed win rate over its pairs (None without judgments)."""
    best, best_rate = None, -1.0
    for arm in arms:
        rates = [
            p["win_rate_a"] if p["arm_a"] == arm else 1.0 - p["win_rate_a"]
            for p in pairs
            if arm in (p["arm_a"], p["arm_b"]) and p["win_rate_a"] is not None
        ]
        if rates and float(np.mean(rates)) > best_rate:
            best, best_rate = arm, float(np.mean(rates))
    return best


def _needed(arms: list[str], pairs: list[dict[str, Any]]) -> int | None:
    """More judgments per undecided pair of the leading arm until it would win all (the largest)."""
    leader = _leader(arms, pairs)
    if leader is None:
        return None
    needs = []
    for pair in pairs:
        if leader not in (pair["arm_a"], pair["arm_b"]) or _beats(pair, leader):
            continue
        rate = pair["win_rate_a"] if pair["arm_a"] == leader else 1.0 - pair["win_rate_a"]
        if pair["better"] is not None or rate <= 0.5 or pair["judgments_needed"] is None:
            return None  # it lost or ties a pair: no count of judgments makes it the winner
        needs.append(int(pair["judgments_needed"]))
    return max(needs) if needs else None


def _statement(entry: dict[str, Any]) -> str:
    level = f"{(1 - entry['alpha']) * 100:g} %"
    if entry["winner"] is not None:
        return (
            f"Winner: {entry['winner']} beats every other arm (always-valid {level} confidence sequences over "
            f"{entry['judgments']} judgments exclude an even win rate; valid however often this is looked at)."
        )
    if entry["judgments"] == 0:
        return "No winner yet: no judgments between its arms."
    if entry["judgments_needed"] is not None:
        return (
            f"No winner yet: the {level} confidence sequences still include an even win rate. About "
            f"{entry['judgments_needed']} more judgments per pair would settle it if the observed win rates hold."
        )
    return (
        f"No winner yet: the {level} confidence sequences still include an even win rate, and at the observed "
        "win rates no number of judgments would settle it (the arms look even)."
    )
