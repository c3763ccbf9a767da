"""Large synthetic Parquet logs, built column-wise with pyarrow, for benchmarks of the compiler.

:func:`write_synthetic_log` writes ``n_feedback`` joined feedback rows (plus their inference
events) in the committed-segment layout of :mod:`prefpair.schemas.log`, fast enough for a
million rows: no per-row Python objects. Each request has a ~1 KB prompt and two ~1 KB
candidates; feedback is mostly pairwise preferences, with ties, both-bad, rankings, thumbs
scores, corrections, updates and deletes mixed in, so every compile stage has work to do.

:func:`commit_segment` is the small atomic writer (``.tmp-*`` dir, fsync, rename) that this
module and the tests' ``LogBuilder`` share.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefpair.config import DEFAULT_FEEDBACK_TOPIC, DEFAULT_INFERENCE_TOPIC
from prefpair.consumers.segments import write_segment_tables
from prefpair.schemas.log import FEEDBACK_LOG, INFERENCE_LOG, SegmentName

START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z: fixed, so a seed gives the same log
MODELS = ("chat-large", "chat-medium", "chat-small")
VERSIONS = ("2026-10", "2026-11")
# Kinds of synthetic feedback rows and their shares (they sum to 1).
MIX = {
    "preferred": 0.83,
    "tie": 0.02,
    "both_bad": 0.02,
    "ranking": 0.04,
    "score": 0.04,
    "correction": 0.02,
    "update": 0.02,
    "delete": 0.01,
}
ROWS_PER_SEGMENT = 50_000
WORDS = (
    "the model data answer question federated learning privacy gradient server client update "
    "summary argument evidence result method training inference latency quality safety"
)


def commit_segment(
    log_dir: Path, name: SegmentName, tables: Mapping[str, pa.Table], *, compression: str = "snappy"
) -> Path:
    """Write one segment as the consumer does (``.tmp-*`` dir, fsync, rename), from Arrow tables."""
    return write_segment_tables(log_dir, name, tables, compression=compression)


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _text_pool(rng: np.random.Generator, size: int, length: int) -> pa.Array:
    words = np.array(WORDS.split())
    texts = []
    for _ in range(size):
        picked = rng.choice(words, size=length // 5)
        texts.append(" ".join(picked)[:length])
    return pa.array(texts, pa.string())


def _struct(
    type_: pa.DataType, columns: Mapping[str, pa.Array], length: int, mask: np.ndarray | None = None
) -> pa.StructArray:
    """A struct array of ``type_``; fields not given are all null (or empty for non-null maps/lists)."""
    arrays = []
    for field in type_:
        if field.name in columns:
            arrays.append(
                pa.array(columns[field.name], field.type)
                if not isinstance(columns[field.name], pa.Array)
                else columns[field.name].cast(field.type)
            )
        else:
            arrays.append(_empty(field, length))
    return pa.StructArray.from_arrays(
        arrays, fields=list(type_), mask=None if mask is None else pa.array(mask, pa.bool_())
    )


def _empty(field: pa.Field, length: int) -> pa.Array:
    """All-null values of a nullable field, else empty ones ("" , 0, [], {}), for ``length`` rows."""
    type_ = field.type
    if pa.types.is_struct(type_):
        children = [_empty(child, length) for child in type_]
        mask = pa.array(np.full(length, field.nullable))
        return pa.StructArray.from_arrays(children, fields=list(type_), mask=mask if field.nullable else None)
    if field.nullable:
        return pa.nulls(length, type_)
    offsets = pa.array(np.zeros(length + 1, dtype=np.int32))
    if pa.types.is_map(type_):
        return pa.MapArray.from_arrays(offsets, pa.array([], pa.string()), pa.array([], pa.string()), type=type_)
    if pa.types.is_list(type_):
        return pa.ListArray.from_arrays(offsets, pa.array([], type_.value_type), type=type_)
    if pa.types.is_string(type_):
        return pa.array(np.full(length, ""), pa.string())
    return pa.array(np.zeros(length), type_)


def write_synthetic_log(log_dir: Path, n_feedback: int, seed: int, *, partitions: int = 4) -> None:
    """Write a committed log of ``n_feedback`` joined feedback rows (see the module docstring).

    Rows are spread over ``partitions`` by request and cut into segments of
    ``ROWS_PER_SEGMENT`` rows; the same arguments always give the same log.
    """
    plan = _plan(np.random.default_rng(seed), int(n_feedback))
    pools = _text_pool(np.random.default_rng(seed + 1), 64, 1000), _text_pool(np.random.default_rng(seed + 2), 64, 1000)
    request = plan["request"]
    partition = request % partitions
    for p in range(partitions):
        rows = np.flatnonzero(partition == p)
        creates = plan["creates"][rows]
        # requests of creates rise with the row number: each row finds its inference's offset
        inference_offset = np.searchsorted(request[rows][creates], request[rows]).astype(np.int64)
        i_done = 0
        for start in range(0, len(rows), ROWS_PER_SEGMENT):
            idx = rows[start : start + ROWS_PER_SEGMENT]
            end = start + len(idx)
            feedback = _feedback_table(plan, idx, pools, p, np.arange(start, end), inference_offset[start:end])
            inference = _inference_rows(feedback.filter(pa.array(creates[start:end])))
            i_end = i_done + inference.num_rows
            name = SegmentName(p, i_done, i_end, start, end)
            commit_segment(log_dir, name, {"feedback": feedback, "inference": inference})
            i_done = i_end


def _plan(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-row choices as numpy arrays: what each feedback row is, and which request it judges."""
    kinds = np.array(list(MIX))
    kind = kinds[rng.choice(len(kinds), size=n, p=np.array(list(MIX.values())))]
    kind[0] = "preferred"
    row = np.arange(n, dtype=np.int64)
    # Updates and deletes target an earlier create (updates: a preference; row 0 is one).
    followup = np.isin(kind, ["update", "delete"])
    target = np.where(followup, (rng.random(n) * np.maximum(row, 1)).astype(np.int64), row)
    target = np.where(followup & np.isin(kind[target], ["update", "delete"]), 0, target)
    target = np.where((kind == "update") & (kind[target] != "preferred"), 0, target)
    a_wins = rng.random(n) < 0.6
    a_wins = np.where(kind == "update", ~a_wins[target], a_wins)
    source_type = np.where(
        rng.random(n) < 0.7, "APP_USER", np.where(rng.random(n) < 0.5, "HUMAN_ANNOTATOR", "MODEL_JUDGE")
    )
    return {
        "row": row,
        "kind": kind,
        "request": target,  # one request per create; follow-ups share their target's
        "creates": ~followup,
        "a_wins": a_wins,
        "source_type": source_type,
    }


def _feedback_table(
    plan: dict[str, np.ndarray],
    idx: np.ndarray,
    pools: tuple[pa.Array, pa.Array],
    partition: int,
    feedback_offset: np.ndarray,
    inference_offset: np.ndarray,
) -> pa.Table:
    """The FEEDBACK_LOG rows ``idx`` of the plan, column by column."""
    n = len(idx)
    kind = plan["kind"][idx]
    request = plan["request"][idx]
    row = plan["row"][idx]
    creates = plan["creates"][idx]
    a_wins = plan["a_wins"][idx]
    prompts, answers = pools
    number = pc.cast(pa.array(request), pa.string())
    text_a = pc.binary_join_element_wise("Answer A to ", number, ": ", answers.take(pa.array(request % 64)), "")
    text_b = pc.binary_join_element_wise(
        "Answer B to ", number, ": ", answers.take(pa.array((request * 7 + 3) % 64)), ""
    )
    fields = {f.name: f for f in FEEDBACK_LOG}
    pair_offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
    flat = {
        "candidate_id": np.tile(np.array(["a", "b"]), n),
        "text": pa.concat_arrays([text_a, text_b]).take(
            pa.array(np.column_stack([np.arange(n), np.arange(n) + n]).ravel())
        ),
        "model_name": np.column_stack(
            [np.array(MODELS)[request % len(MODELS)], np.array(MODELS)[(request + 1) % len(MODELS)]]
        ).ravel(),
        "model_version": np.repeat(np.array(VERSIONS)[(request // 3) % len(VERSIONS)], 2),
        "temperature": np.full(2 * n, 0.7),
    }
    candidates = pa.ListArray.from_arrays(
        pair_offsets, _struct(fields["candidates"].type.value_type, flat, 2 * n), type=fields["candidates"].type
    )
    order = np.where(np.repeat(request % 2 == 1, 2), np.tile(["b", "a"], n), np.tile(["a", "b"], n))
    presentation = pa.ListArray.from_arrays(pair_offsets, pa.array(order, pa.string()))

    # Feedback fields per kind; an update flips an earlier preference and carries only what changed.
    is_update = kind == "update"
    chosen = np.where(a_wins, "a", "b")
    rejected = np.where(a_wins, "b", "a")
    pairwise = np.isin(kind, ["preferred", "tie", "both_bad"]) | is_update
    ranked = kind == "ranking"
    scored = kind == "score"
    corrected = kind == "correction"
    op = np.where(is_update, "UPDATE", np.where(kind == "delete", "DELETE", "CREATE"))
    judgment = np.select([pairwise, ranked, scored | corrected], ["PAIRWISE", "RANKING", "SCORE"], "")
    outcome = np.select(
        [(kind == "preferred") | is_update, kind == "tie", kind == "both_bad"], ["PREFERRED", "TIE", "BOTH_BAD"], ""
    )
    key = np.select([pairwise | ranked, scored, corrected], ["preference", "thumbs", "correction"], "")
    ranking_offsets = np.zeros(n + 1, dtype=np.int32)
    ranking_offsets[1:] = np.cumsum(np.where(ranked, 2, 0))
    groups = np.column_stack([chosen, rejected])[ranked].ravel()
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(len(groups) + 1, dtype=np.int32)), pa.array(groups, pa.string())
    )
    ranking = pa.ListArray.from_arrays(pa.array(ranking_offsets), inner, mask=pa.array(~ranked))

    def masked(values: np.ndarray, keep: np.ndarray) -> pa.Array:
        return pa.array(values, pa.string(), mask=~keep)

    feedback_ts = START_MS + row * 10
    source = _struct(
        fields["source"].type,
        {"type": pa.array(plan["source_type"][idx]), "source_id": _prefixed("judge-", request % 97)},
        n,
        mask=~creates,
    )
    columns: dict[str, pa.Array] = {
        "feedback_event_id": _prefixed("fe-", row),
        "feedback_id": _prefixed("fb-", request),
        "op": pa.array(op),
        "request_id": _prefixed("req-", request),
        "feedback_timestamp_ms": pa.array(feedback_ts),
        "key": masked(key, creates),
        "kind": masked(judgment, creates),
        "outcome": masked(outcome, pairwise),
        "chosen_id": masked(chosen, pairwise),
        "rejected_id": masked(rejected, pairwise),
        "ranking": ranking,
        "candidate_id": masked(np.where(corrected, rejected, "a"), scored | corrected),
        "score": pa.array(a_wins.astype(float), pa.float64(), mask=~scored),
        "correction": pc.if_else(
            pa.array(corrected), pc.binary_join_element_wise("Corrected: ", text_a, ""), pa.nulls(n, pa.string())
        ),
        "source": source,
        "inference_event_id": _prefixed("ie-", request),
        "inference_timestamp_ms": pa.array(START_MS + request * 10 - 500),
        "system_prompt": pa.array(np.full(n, "You are a helpful assistant."), pa.string()),
        "prompt": pc.binary_join_element_wise("Request ", number, ": ", prompts.take(pa.array(request % 64)), ""),
        "candidates": candidates,
        "presentation_order": presentation,
        "user_id": _prefixed("user-", request % 1000),
        "environment": pa.array(np.where(request % 10 == 0, "staging", "production")),
        "feedback_topic": pa.array(np.full(n, DEFAULT_FEEDBACK_TOPIC)),
        "feedback_partition": pa.array(np.full(n, partition), pa.int32()),
        "feedback_offset": pa.array(feedback_offset.astype(np.int64)),
        "inference_topic": pa.array(np.full(n, DEFAULT_INFERENCE_TOPIC)),
        "inference_partition": pa.array(np.full(n, partition), pa.int32()),
        "inference_offset": pa.array(inference_offset),
        "joined_at_ms": pa.array(feedback_ts + 5),
        "join_path": pa.array(np.where(creates, "hot", "landed")),
    }
    arrays = [columns[f.name].cast(f.type) if f.name in columns else _empty(f, n) for f in FEEDBACK_LOG]
    return pa.Table.from_arrays(arrays, schema=FEEDBACK_LOG)


def _inference_rows(feedback: pa.Table) -> pa.Table:
    """The inference events of the creates among ``feedback`` (INFERENCE_LOG columns)."""
    return pa.Table.from_arrays(
        [
            feedback.column(f.name) if f.name in feedback.column_names else _empty(f, feedback.num_rows)
            for f in INFERENCE_LOG
        ],
        schema=INFERENCE_LOG,
    )
