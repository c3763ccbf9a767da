"""Hand-built committed log segments, for tests of the compiler and the reports.

Rows are written exactly as ``prefpair consume`` commits them: the Arrow schemas of
:mod:`prefpair.schemas.log`, one segment dir per :meth:`LogBuilder.commit` (``.tmp-*`` dir,
fsync, rename), offsets that continue where the partition's log ends::

    log = LogBuilder(tmp_path / "log")
    log.inference("r1", prompt="Sky colour?", candidates=[("a", "Blue.", "big", "v1"), ("b", "Green.", "small", "v1")],
                  presented=["b", "a"])
    log.pairwise("r1", "a", "b", feedback_id="f1").update("f1", chosen_id="b", rejected_id="a")
    log.commit()

Feedback rows carry the joined inference (prompt, candidates, user, ...), like the consumer's
join. Timestamps count up from ``start_ms`` unless given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefpair.compile.synthetic import commit_segment
from prefpair.config import DEFAULT_FEEDBACK_TOPIC, DEFAULT_INFERENCE_TOPIC
from prefpair.schemas.log import FEEDBACK_LOG, INFERENCE_LOG, ORPHAN_LOG, SegmentName, committed_segments

CandidateSpec = tuple[str, str | None, str, str | None] | Mapping[str, Any]

CANDIDATE_DEFAULTS: dict[str, Any] = {
    "text": None,
    "messages": None,
    "model_version": None,
    "model_checkpoint": None,
    "temperature": None,
    "top_p": None,
    "max_tokens": None,
    "seed": None,
    "sampling_extra": {},
    "finish_reason": None,
    "prompt_tokens": None,
    "completion_tokens": None,
    "latency_ms": None,
}
FEEDBACK_DEFAULTS: dict[str, Any] = {
    "key": None,
    "kind": None,
    "outcome": None,
    "chosen_id": None,
    "rejected_id": None,
    "ranking": None,
    "candidate_id": None,
    "score": None,
    "value": None,
    "comment": None,
    "correction": None,
    "config": None,
    "source": None,
    "feedback_metadata": {},
}


def _candidate(spec: CandidateSpec) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return {**CANDIDATE_DEFAULTS, **spec}
    candidate_id, text, model_name, model_version = spec
    return {**CANDIDATE_DEFAULTS, "candidate_id": candidate_id, "text": text, "model_name": model_name,
            "model_version": model_version}  # fmt: skip


def _source(source: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if source is None:
        return None
    fields = {"source_id": None, "model": None, "model_version": None, "run_id": None}
    if isinstance(source, str):
        return {"type": source, **fields}
    return {**fields, **source}


def _config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return {"min": None, "max": None, "categories": [], **config}


class LogBuilder:
    """Collects inference and feedback rows; :meth:`commit` writes them as one segment."""

    def __init__(self, log_dir: Path, partition: int = 0, start_ms: int = 1_790_000_000_000) -> None:
        self.log_dir = Path(log_dir)
        self.partition = partition
        self.clock = itertools.count(start_ms, 1000)
        self.inferences: dict[str, dict[str, Any]] = {}
        self.feedback_requests: dict[str, str] = {}
        self.pending: dict[str, list[dict[str, Any]]] = {"inference": [], "feedback": [], "orphans": []}
        self._ids = itertools.count(1)
        self.last_feedback_id: str | None = None
        ends = [(n.inference_end, n.feedback_end) for n, _ in committed_segments(self.log_dir, partition)]
        self.inference_next, self.feedback_next = max(ends) if ends else (0, 0)
        self._feedback_offsets = itertools.count(self.feedback_next)
        self._inference_offsets = itertools.count(self.inference_next)

    # ------------------------------------------------------------------ inference
    def inference(
        self,
        request_id: str,
        prompt: str | None = "What is the capital of France?",
        candidates: Sequence[CandidateSpec] = (("a", "Paris.", "model-a", "v1"), ("b", "Lyon.", "model-b", "v1")),
        presented: Sequence[str] | None = None,
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
        system_prompt: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        environment: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
        ts: int | None = None,
        land: bool = True,
    ) -> LogBuilder:
        """Record an inference; ``land=False`` keeps it out of the inference table (feedback still joins it)."""
        row = {
            "inference_event_id": f"ie-{request_id}-{next(self._ids)}",
            "request_id": request_id,
            "inference_timestamp_ms": next(self.clock) if ts is None else ts,
            "system_prompt": system_prompt,
            "prompt": prompt,
            "messages": [{"name": None, **m} for m in messages] if messages is not None else None,
            "candidates": [_candidate(c) for c in candidates],
            "presentation_order": list(presented or []),
            "user_id": user_id,
            "session_id": session_id,
            "environment": environment,
            "tags": list(tags),
            "inference_metadata": dict(metadata or {}),
            "inference_topic": DEFAULT_INFERENCE_TOPIC,
            "inference_partition": self.partition,
            "inference_offset": next(self._inference_offsets),
        }
        self.inferences[request_id] = row
        if land:
            self.pending["inference"].append(row)
        return self

    # ------------------------------------------------------------------ feedback
    def feedback(
        self,
        request_id: str,
        *,
        op: str = "CREATE",
        feedback_id: str | None = None,
        ts: int | None = None,
        source: str | Mapping[str, Any] | None = "APP_USER",
        config: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> LogBuilder:
        """A joined feedback row of any shape (the typed helpers below call this)."""
        feedback_id = feedback_id or f"fb-{next(self._ids)}"
        self.last_feedback_id = feedback_id
        self.feedback_requests.setdefault(feedback_id, request_id)
        row = {
            "feedback_event_id": f"fe-{feedback_id}-{next(self._ids)}",
            "feedback_id": feedback_id,
            "op": op,
            "request_id": request_id,
            "feedback_timestamp_ms": next(self.clock) if ts is None else ts,
            **FEEDBACK_DEFAULTS,
            **fields,
            "source": _source(source),
            "config": _config(config),
            "feedback_topic": DEFAULT_FEEDBACK_TOPIC,
            "feedback_partition": self.partition,
            "feedback_offset": next(self._feedback_offsets),
        }
        inference = self.inferences[request_id]
        row.update({k: v for k, v in inference.items() if k not in ("request_id",)})
        row["joined_at_ms"] = row["feedback_timestamp_ms"] + 1
        row["join_path"] = "hot"
        self.pending["feedback"].append(row)
        return self

    def pairwise(
        self,
        request_id: str,
        chosen: str,
        rejected: str,
        *,
        outcome: str = "PREFERRED",
        key: str = "preference",
        **kw: Any,
    ) -> LogBuilder:
        return self.feedback(
            request_id, key=key, kind="PAIRWISE", outcome=outcome, chosen_id=chosen, rejected_id=rejected, **kw
        )

    def ranking(
        self, request_id: str, ranking: Sequence[Sequence[str] | str], *, key: str = "ranking", **kw: Any
    ) -> LogBuilder:
        groups = [[g] if isinstance(g, str) else list(g) for g in ranking]
        return self.feedback(request_id, key=key, kind="RANKING", ranking=groups, **kw)

    def score(self, request_id: str, candidate: str, score: float, *, key: str = "thumbs", **kw: Any) -> LogBuilder:
        return self.feedback(request_id, key=key, kind="SCORE", candidate_id=candidate, score=score, **kw)

    def correction(
        self, request_id: str, candidate: str, text: str, *, key: str = "correction", **kw: Any
    ) -> LogBuilder:
        return self.feedback(request_id, key=key, kind="SCORE", candidate_id=candidate, correction=text, **kw)

    def update(self, feedback_id: str, *, ts: int | None = None, **fields: Any) -> LogBuilder:
        """An UPDATE carrying only ``fields`` (others null: they keep their earlier values)."""
        return self.feedback(
            self.feedback_requests[feedback_id], op="UPDATE", feedback_id=feedback_id, ts=ts, source=None, **fields
        )

    def delete(self, feedback_id: str, *, ts: int | None = None) -> LogBuilder:
        return self.feedback(
            self.feedback_requests[feedback_id], op="DELETE", feedback_id=feedback_id, ts=ts, source=None
        )

    def orphan(
        self,
        request_id: str,
        *,
        reason: str = "inference not seen within the grace",
        op: str = "CREATE",
        feedback_id: str | None = None,
        ts: int | None = None,
        source: str | Mapping[str, Any] | None = "APP_USER",
        **fields: Any,
    ) -> LogBuilder:
        """Feedback whose inference did not arrive within the grace (ORPHAN_LOG row)."""
        feedback_id = feedback_id or f"fb-{next(self._ids)}"
        self.last_feedback_id = feedback_id
        self.feedback_requests.setdefault(feedback_id, request_id)
        ts = next(self.clock) if ts is None else ts
        self.pending["orphans"].append(
            {
                "feedback_event_id": f"fe-{feedback_id}-{next(self._ids)}",
                "feedback_id": feedback_id,
                "op": op,
                "request_id": request_id,
                "feedback_timestamp_ms": ts,
                **FEEDBACK_DEFAULTS,
                **fields,
                "source": _source(source),
                "feedback_topic": DEFAULT_FEEDBACK_TOPIC,
                "feedback_partition": self.partition,
                "feedback_offset": next(self._feedback_offsets),
                "orphaned_at_ms": ts + 1,
                "reason": reason,
            }
        )
        return self

    # ------------------------------------------------------------------ commit
    def commit(self) -> Path:
        """Write the pending rows as one committed segment of this builder's partition."""
        inference_end = self.inference_next + len(self.pending["inference"])
        feedback_end = self.feedback_next + len(self.pending["feedback"]) + len(self.pending["orphans"])
        # offsets handed out but not pending (inferences kept out of the table) still advance the range
        inference_end = max(inference_end, max((r["inference_offset"] + 1 for r in self.inferences.values()),
                                               default=0))  # fmt: skip
        name = SegmentName(self.partition, self.inference_next, inference_end, self.feedback_next, feedback_end)
        schemas = {"inference": INFERENCE_LOG, "feedback": FEEDBACK_LOG, "orphans": ORPHAN_LOG}
        tables = {t: pa.Table.from_pylist(rows, schema=schemas[t]) for t, rows in self.pending.items()}
        path = commit_segment(self.log_dir, name, tables)
        self.inference_next, self.feedback_next = inference_end, feedback_end
        self.pending = {"inference": [], "feedback": [], "orphans": []}
        return path
