"""Synthetic Parquet logs with a planted truth, written exactly as ``prefpair consume`` commits them.

:func:`write_planted_log` simulates serving traffic whose preferences follow known model
strengths (on the Bradley-Terry logit scale) plus an optional position bias (the candidate
shown earlier gets ``position_bias`` logits per place) and length bias (``length_bias`` logits
per unit of log length ratio, or its own per source type). Which source types judge how many
requests, whether they ever judge the same request, and how strongly annotators of one request
agree are planted too. The report must find what was planted, and nothing else; the same
generator feeds demos and benchmarks of the report without a broker.

:class:`SegmentWriter` commits hand-built segments from event-shaped dicts: the smallest
consumer there is, for tests that need exact rows (updates, deletes, agreement cases).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prefpair.config import DEFAULT_FEEDBACK_TOPIC, DEFAULT_INFERENCE_TOPIC
from prefpair.consumers.segments import write_segment_tables
from prefpair.schemas.log import (
    FEEDBACK_LOG,
    FEEDBACK_RENAMES,
    INFERENCE_LOG,
    INFERENCE_RENAMES,
    ORPHAN_LOG,
    SegmentName,
)

START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z: fixed, so a seed gives the same log
DAY_MS = 86_400_000
REFERENCE_LENGTH = 600  # characters; lengths are drawn around it
APP_USER, MODEL_JUDGE, HUMAN_ANNOTATOR, REWARD_MODEL = "APP_USER", "MODEL_JUDGE", "HUMAN_ANNOTATOR", "REWARD_MODEL"
# Share of requests each source type judges, unless told otherwise.
DEFAULT_SOURCE_SHARES: Mapping[str, float] = {APP_USER: 0.6, MODEL_JUDGE: 0.3, HUMAN_ANNOTATOR: 0.3, REWARD_MODEL: 0.15}
_WORDS = (
    "the answer depends on the constraints and a careful reader will notice the trade-offs "
    "evidence from several sources points the same way so measure before optimising "
)


# --------------------------------------------------------------------------- row shaping
def _default(field: pa.Field) -> Any:
    if field.nullable:
        return None
    if pa.types.is_list(field.type) or pa.types.is_map(field.type):
        return []
    raise ValueError(f"required field {field.name!r} is missing")


def _conform(value: Any, typ: pa.DataType) -> Any:
    """A Python value shaped for ``typ``: missing struct fields defaulted, maps as pairs."""
    if value is None:
        return None
    if pa.types.is_struct(typ):
        return {
            f.name: _conform(value[f.name] if f.name in value else _default(f), f.type)
            for f in (typ.field(i) for i in range(typ.num_fields))
        }
    if pa.types.is_map(typ):
        items = value.items() if isinstance(value, Mapping) else value
        return [(k, _conform(v, typ.item_type)) for k, v in items]
    if pa.types.is_list(typ):
        return [_conform(v, typ.value_type) for v in value]
    return value


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows to a table of exactly ``schema``, column by column."""
    columns = []
    for field in schema:
        values = [_conform(r[field.name] if field.name in r else _default(field), field.type) for r in rows]
        columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _renamed(event: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    return {renames.get(k, k): v for k, v in event.items()}


def _commit(log_dir: Path, name: SegmentName, tables: Mapping[str, pa.Table]) -> Path:
    """Write the segment's files under a temporary name, then rename it into place."""
    return write_segment_tables(log_dir, name, tables)


class SegmentWriter:
    """Commits consecutive segments of one partition from event-shaped dicts (fields of
    ``inference.avsc`` / ``feedback.avsc``): the smallest consumer there is.

    Offsets continue from one segment to the next; each feedback event is joined by
    ``request_id`` to an inference landed in this or an earlier segment.
    """

    def __init__(
        self,
        log_dir: Path,
        partition: int = 0,
        *,
        inference_topic: str = DEFAULT_INFERENCE_TOPIC,
        feedback_topic: str = DEFAULT_FEEDBACK_TOPIC,
    ) -> None:
        self.log_dir = log_dir
        self.partition = partition
        self.inference_topic = inference_topic
        self.feedback_topic = feedback_topic
        self.inference_next = 0
        self.feedback_next = 0
        self.landed: dict[str, dict[str, Any]] = {}

    def commit(
        self,
        inferences: Sequence[Mapping[str, Any]] = (),
        feedback: Sequence[Mapping[str, Any]] = (),
        orphans: Sequence[Mapping[str, Any]] = (),
    ) -> Path:
        """Write one segment (orphans take the feedback offsets after the joined events)."""
        inference_rows = []
        for offset, event in enumerate(inferences, start=self.inference_next):
            row = _renamed(event, INFERENCE_RENAMES)
            row |= {
                "inference_topic": self.inference_topic,
                "inference_partition": self.partition,
                "inference_offset": offset,
            }
            inference_rows.append(row)
            self.landed[event["request_id"]] = row
        offset = self.feedback_next
        feedback_rows = []
        for event in feedback:
            inference = self.landed.get(event["request_id"])
            if inference is None:
                raise ValueError(f"feedback {event['feedback_id']!r}: no inference {event['request_id']!r}")
            row = {k: v for k, v in inference.items() if k != "request_id"}
            row |= _renamed(event, FEEDBACK_RENAMES)
            row |= {
                "feedback_topic": self.feedback_topic,
                "feedback_partition": self.partition,
                "feedback_offset": offset,
                "joined_at_ms": max(row["feedback_timestamp_ms"], row["inference_timestamp_ms"]),
                "join_path": "hot",
            }
            feedback_rows.append(row)
            offset += 1
        orphan_rows = []
        for event in orphans:
            row = _renamed({k: v for k, v in event.items() if k != "reason"}, FEEDBACK_RENAMES)
            row |= {
                "feedback_topic": self.feedback_topic,
                "feedback_partition": self.partition,
                "feedback_offset": offset,
                "orphaned_at_ms": row["feedback_timestamp_ms"] + 60_000,
                "reason": event.get("reason", "no inference within the grace period"),
            }
            orphan_rows.append(row)
            offset += 1
        name = SegmentName(
            self.partition,
            self.inference_next,
            self.inference_next + len(inference_rows),
            self.feedback_next,
            offset,
        )
        path = _commit(
            self.log_dir,
            name,
            {
                "inference": _table(inference_rows, INFERENCE_LOG),
                "feedback": _table(feedback_rows, FEEDBACK_LOG),
                "orphans": _table(orphan_rows, ORPHAN_LOG),
            },
        )
        self.inference_next, self.feedback_next = name.inference_end, name.feedback_end
        return path


# --------------------------------------------------------------------------- planted traffic
def _split_model(key: str) -> tuple[str, str | None]:
    name, sep, version = key.partition(":")
    return name, (version if sep else None)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def write_planted_log(
    log_dir: Path,
    *,
    models: dict[str, float],
    n_requests: int,
    position_bias: float = 0.0,
    length_bias: float = 0.0,
    seed: int = 0,
    partitions: int = 2,
    segments_per_partition: int = 2,
    second_annotator_share: float = 0.3,
    annotators_per_item: int = 2,
    annotator_copy_share: float = 0.0,
    length_bias_by_source: Mapping[str, float] | None = None,
    source_shares: Mapping[str, float] | None = None,
    disjoint_sources: bool = False,
    delete_share: float = 0.03,
    update_share: float = 0.05,
    tie_share: float = 0.05,
    orphans: int = 3,
    days: int = 14,
) -> None:
    """Commit a log of ``n_requests`` inferences and their feedback with a planted truth.

    ``models`` maps ``"name:version"`` to a strength (logit scale). Each request shows 2-4
    candidates in a random order, with lengths drawn independently of the model. Feedback
    (``source_shares``, by default :data:`DEFAULT_SOURCE_SHARES`): an end user picks between
    the first two shown (60 % of requests), a model judge between two random candidates (30 %),
    an annotator ranks all (30 %; ``annotators_per_item`` annotators on a
    ``second_annotator_share`` of those), a reward model scores each (15 %). Each source type
    draws its requests independently, so they overlap, unless ``disjoint_sources``: then each
    request is judged by one source type at most (the shares must add up to 1 or less).

    Pairwise and ranking judgments follow Bradley-Terry / Plackett-Luce on ``strength +
    length_bias * log(len / 600) - position_bias * place``; reward-model scores see strength
    and length, not place. ``length_bias_by_source`` replaces ``length_bias`` for the source
    types it names. An annotator after the first of a request copies the first one's ranking
    with probability ``annotator_copy_share`` (raters whose verdicts are correlated beyond the
    shared truth). A few judgments are updated (a comment only) or deleted; ``orphans``
    feedback events never find an inference.
    """
    if not models:
        raise ValueError("models: give at least one model")
    shares = dict(DEFAULT_SOURCE_SHARES if source_shares is None else source_shares)
    unknown = set(shares) - set(DEFAULT_SOURCE_SHARES)
    if unknown:
        raise ValueError(f"source_shares: unknown source types {sorted(unknown)}; known: {list(DEFAULT_SOURCE_SHARES)}")
    if disjoint_sources and sum(shares.values()) > 1 + 1e-9:
        raise ValueError(f"source_shares: disjoint sources need shares that add up to 1 or less, got {shares}")
    if not 1 <= annotators_per_item <= 6:
        raise ValueError(f"annotators_per_item: between 1 and 6 (there are 6 annotators), got {annotators_per_item}")
    per_source_length = {**{s: length_bias for s in DEFAULT_SOURCE_SHARES}, **(length_bias_by_source or {})}
    rng = np.random.default_rng(seed)
    keys = list(models)
    strength = np.array([models[k] for k in keys], dtype=float)
    n = n_requests
    counts = rng.integers(2, 5, size=n)
    total = int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    model_idx = rng.integers(0, len(keys), size=total)
    lengths = np.maximum(20, rng.lognormal(math.log(REFERENCE_LENGTH), 0.45, size=total)).astype(int)
    # place of each candidate in the presentation order: a random permutation per request
    place = np.empty(total, dtype=int)
    for r in range(n):
        place[starts[r] : starts[r] + counts[r]] = rng.permutation(counts[r])
    log_length = np.log(lengths / REFERENCE_LENGTH)
    shown_utility = strength[model_idx] - position_bias * place  # before the length term of each source
    inference_ts = START_MS + np.sort(rng.integers(0, days * DAY_MS, size=n))
    base_text = _WORDS * (int(lengths.max()) // len(_WORDS) + 2)

    inferences: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    event_counter = itertools.count()

    def new_feedback(request: int, source: dict[str, Any], latency_ms: float, **judgment: Any) -> None:
        feedback_id = f"fb-{seed}-{next(event_counter):08d}"
        ts = int(inference_ts[request] + latency_ms)
        event = {
            "event_id": feedback_id + "-c",
            "feedback_id": feedback_id,
            "op": "CREATE",
            "request_id": inferences[request]["request_id"],
            "timestamp_ms": ts,
            "source": source,
            **judgment,
        }
        feedback.append(event)
        roll = rng.random()
        if roll < delete_share:
            feedback.append(
                {
                    "event_id": feedback_id + "-d",
                    "feedback_id": feedback_id,
                    "op": "DELETE",
                    "request_id": event["request_id"],
                    "timestamp_ms": ts + 60_000,
                }
            )
        elif roll < delete_share + update_share:
            feedback.append(
                {
                    "event_id": feedback_id + "-u",
                    "feedback_id": feedback_id,
                    "op": "UPDATE",
                    "request_id": event["request_id"],
                    "timestamp_ms": ts + 60_000,
                    "comment": "revised after a second look",
                }
            )

    user_draw = rng.random(n)
    judge_draw = rng.random(n)
    annotator_draw = rng.random(n)
    reward_draw = rng.random(n)
    draws = {APP_USER: user_draw, MODEL_JUDGE: judge_draw, HUMAN_ANNOTATOR: annotator_draw, REWARD_MODEL: reward_draw}
    boundaries = dict(zip(shares, np.cumsum(list(shares.values())), strict=True))

    def judges(source: str, r: int) -> bool:
        """Whether ``source`` judges request ``r``: its own draw, or one draw shared by all
        source types (cut into consecutive intervals) when they must not overlap."""
        share = shares.get(source, 0.0)
        if disjoint_sources:
            return bool(boundaries.get(source, 0.0) - share <= user_draw[r] < boundaries.get(source, 0.0))
        return bool(draws[source][r] < share)

    def utility(source: str, lo: int, hi: int) -> np.ndarray:
        """What ``source`` sees in the candidates ``lo:hi`` of one request."""
        return np.asarray(shown_utility[lo:hi] + per_source_length[source] * log_length[lo:hi])

    def several_annotators(r: int) -> bool:
        if disjoint_sources:
            return bool(annotator_draw[r] < second_annotator_share)
        return bool(annotator_draw[r] < shares.get(HUMAN_ANNOTATOR, 0.0) * second_annotator_share)

    for r in range(n):
        lo, hi = int(starts[r]), int(starts[r] + counts[r])
        ids = [f"c{i}" for i in range(hi - lo)]
        order = [ids[i] for i in np.argsort(place[lo:hi])]
        candidates = []
        for i in range(hi - lo):
            name, version = _split_model(keys[model_idx[lo + i]])
            candidates.append(
                {
                    "candidate_id": ids[i],
                    "text": base_text[: lengths[lo + i]],
                    "model_name": name,
                    "model_version": version,
                    "completion_tokens": int(lengths[lo + i] // 4),
                }
            )
        inferences.append(
            {
                "event_id": f"inf-{seed}-{r:08d}",
                "request_id": f"req-{seed}-{r:08d}",
                "timestamp_ms": int(inference_ts[r]),
                "prompt": f"Question {r}: explain something.",
                "candidates": candidates,
                "presentation_order": order,
                "user_id": f"user-{r % 97:03d}",
            }
        )

        if judges(APP_USER, r):  # the end user picks between the first two shown
            u = utility(APP_USER, lo, hi)
            first, second = int(np.argmin(place[lo:hi])), int(np.argsort(place[lo:hi])[1])
            tie = rng.random() < tie_share
            first_wins = rng.random() < _sigmoid(np.array(u[first] - u[second]))
            win, lose = (first, second) if first_wins else (second, first)
            new_feedback(
                r,
                {"type": "APP_USER", "source_id": f"user-{r % 97:03d}"},
                rng.lognormal(math.log(30_000), 1.0),
                key="preference",
                kind="PAIRWISE",
                outcome="TIE" if tie else "PREFERRED",
                chosen_id=ids[win],
                rejected_id=ids[lose],
            )
        if judges(MODEL_JUDGE, r):  # a model judge compares two random candidates
            u = utility(MODEL_JUDGE, lo, hi)
            a, b = (int(i) for i in rng.choice(hi - lo, size=2, replace=False))
            a_wins = rng.random() < _sigmoid(np.array(u[a] - u[b]))
            win, lose = (a, b) if a_wins else (b, a)
            new_feedback(
                r,
                {"type": "MODEL_JUDGE", "model": "judge-xl", "model_version": "3"},
                rng.lognormal(math.log(5_000), 0.5),
                key="judge_preference",
                kind="PAIRWISE",
                outcome="PREFERRED",
                chosen_id=ids[win],
                rejected_id=ids[lose],
            )
        if judges(HUMAN_ANNOTATOR, r):  # annotators rank all candidates (Plackett-Luce via Gumbel noise)
            u = utility(HUMAN_ANNOTATOR, lo, hi)
            annotators = rng.choice(6, size=annotators_per_item if several_annotators(r) else 1, replace=False)
            first_ranking: np.ndarray | None = None
            for annotator in annotators:
                ranked = np.argsort(-(u + rng.gumbel(size=hi - lo)))
                if first_ranking is None:
                    first_ranking = ranked
                elif annotator_copy_share > 0 and rng.random() < annotator_copy_share:
                    ranked = first_ranking
                new_feedback(
                    r,
                    {"type": "HUMAN_ANNOTATOR", "source_id": f"annotator-{annotator}"},
                    rng.lognormal(math.log(3_600_000), 0.7),
                    key="ranking",
                    kind="RANKING",
                    ranking=[[ids[i]] for i in ranked],
                )
        if judges(REWARD_MODEL, r):  # a reward model scores each candidate: strength and length, not place
            for i in range(hi - lo):
                score = strength[model_idx[lo + i]] + per_source_length[REWARD_MODEL] * log_length[lo + i]
                new_feedback(
                    r,
                    {"type": "REWARD_MODEL", "model": "rm", "model_version": "v3"},
                    rng.lognormal(math.log(1_000), 0.3),
                    key="reward",
                    kind="SCORE",
                    candidate_id=ids[i],
                    score=round(float(score + rng.normal(0, 0.5)), 4),
                )

    orphan_events = [
        {
            "event_id": f"orphan-{seed}-{i}",
            "feedback_id": f"orphan-{seed}-{i}",
            "op": "CREATE",
            "request_id": f"req-missing-{i}",
            "timestamp_ms": START_MS + i * 1000,
            "key": "preference",
            "kind": "PAIRWISE",
            "outcome": "PREFERRED",
            "chosen_id": "c0",
            "rejected_id": "c1",
            "source": {"type": "APP_USER"},
        }
        for i in range(orphans)
    ]
    _write_partitions(log_dir, inferences, feedback, orphan_events, partitions, segments_per_partition)


def _write_partitions(
    log_dir: Path,
    inferences: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
    orphan_events: list[dict[str, Any]],
    partitions: int,
    segments_per_partition: int,
) -> None:
    """Spread requests over partitions (by request index) and commit each in a few segments;
    feedback waits for the segment in which its inference lands, as in the consumer."""
    partition_of = {event["request_id"]: i % partitions for i, event in enumerate(inferences)}
    chunks = max(1, segments_per_partition)
    for partition in range(partitions):
        mine = [e for e in inferences if partition_of[e["request_id"]] == partition]
        chunk_of = {e["request_id"]: len(mine) and i * chunks // len(mine) for i, e in enumerate(mine)}
        fb = sorted(
            (e for e in feedback if partition_of[e["request_id"]] == partition), key=lambda e: e["timestamp_ms"]
        )
        fb_chunk = [max(i * chunks // max(1, len(fb)), chunk_of[e["request_id"]]) for i, e in enumerate(fb)]
        writer = SegmentWriter(log_dir, partition)
        for s in range(chunks):
            writer.commit(
                inferences=[e for e in mine if chunk_of[e["request_id"]] == s],
                feedback=[e for e, c in zip(fb, fb_chunk, strict=True) if c == s],
                orphans=orphan_events[partition::partitions] if s + 1 == chunks else (),
            )
