"""Hand-built committed log segments: exact rows at exact offsets, for tests of every edge case.

Where :func:`~prefpair.simulate.log.write_log` runs simulated traffic through the consumer's join,
:class:`LogBuilder` writes what it is told: each call appends one contract event (completed and
turned into a row by the same functions the consumer uses) at the partition's next offset, and
:meth:`LogBuilder.commit` writes the pending rows as one segment through the consumer's segment
writer::

    log = LogBuilder(tmp_path / "log")
    log.inference("r1", prompt="Sky colour?", candidates=[("a", "Blue.", "big", "v1"), ("b", "Green.", "small", "v1")],
                  presented=["b", "a"])
    log.pairwise("r1", "a", "b", feedback_id="f1").update("f1", chosen_id="b", rejected_id="a")
    log.commit()

Feedback is joined to the inference of its request logged earlier (in this or an earlier
segment of this builder); :meth:`LogBuilder.orphan` writes feedback whose inference never came.
Timestamps count up from ``start_ms`` a second apart unless given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import pyarrow as pa

from prefpair.config import DEFAULT_FEEDBACK_TOPIC, DEFAULT_INFERENCE_TOPIC
from prefpair.consumers.join import feedback_row, inference_row
from prefpair.consumers.segments import (
    JoinedPair,
    ResumeState,
    bind_log_to_topics,
    joined_table,
    read_resume_state,
    rows_to_table,
    write_segment,
)
from prefpair.consumers.signals import signal_row
from prefpair.schemas.log import INFERENCE_LOG, SegmentName
from prefpair.simulate.exceptions import LogInputError
from prefpair.simulate.records import complete_feedback, complete_inference, complete_signal

CandidateSpec = tuple[str, str | None, str, str | None] | Mapping[str, Any]
"""``(candidate_id, text, model_name, model_version)``, or the candidate's fields."""
SourceSpec = str | Mapping[str, Any] | None
"""A source type (``"APP_USER"``), the source's fields, or None (updates and deletes)."""

DEFAULT_CANDIDATES: tuple[CandidateSpec, ...] = (("a", "Paris.", "model-a", "v1"), ("b", "Lyon.", "model-b", "v1"))


def _candidate(spec: CandidateSpec) -> Mapping[str, Any]:
    if isinstance(spec, Mapping):
        return spec
    candidate_id, text, model_name, model_version = spec
    return {"candidate_id": candidate_id, "text": text, "model_name": model_name, "model_version": model_version}


def _source(source: SourceSpec) -> Mapping[str, Any] | None:
    return {"type": source} if isinstance(source, str) else source


class LogBuilder:
    """Collects rows of one partition; :meth:`commit` writes them as one segment.

    A log that already holds segments of ``partition`` is continued where they end.
    """

    def __init__(
        self,
        log_dir: Path,
        partition: int = 0,
        start_ms: int = 1_790_000_000_000,
        *,
        inference_topic: str = DEFAULT_INFERENCE_TOPIC,
        feedback_topic: str = DEFAULT_FEEDBACK_TOPIC,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.partition = partition
        self.topics = (inference_topic, feedback_topic)
        bind_log_to_topics(self.log_dir, inference_topic, feedback_topic)
        resume = read_resume_state(self.log_dir, partition)
        self.inference_next = resume.inference_next or 0
        self.feedback_next = resume.feedback_next or 0
        self.clock = itertools.count(start_ms, 1000)
        self._ids = itertools.count(1)
        self._landed: dict[str, dict[str, Any]] = {}
        self._requests: dict[str, str] = {}  # feedback id -> request id
        self._inference: list[dict[str, Any]] = []
        self._joined: list[JoinedPair] = []
        self._orphans: list[dict[str, Any]] = []
        self._signals: list[dict[str, Any]] = []
        self._next = (self.inference_next, self.feedback_next)
        self._stream_time = resume.stream_time_ms

    def _time(self, ts: int | None) -> int:
        return next(self.clock) if ts is None else ts

    # ------------------------------------------------------------------ inference
    def inference(
        self,
        request_id: str,
        prompt: str | None = "What is the capital of France?",
        candidates: Sequence[CandidateSpec] = DEFAULT_CANDIDATES,
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
        parent_request_id: str | None = None,
    ) -> Self:
        """An inference event at the next inference offset; later feedback on ``request_id`` joins it.

        ``parent_request_id``: the request this one regenerates."""
        return self.inference_event({
            "event_id": f"ie-{request_id}-{next(self._ids)}",
            "request_id": request_id,
            "timestamp_ms": self._time(ts),
            "system_prompt": system_prompt,
            "prompt": prompt,
            "messages": messages,
            "candidates": [_candidate(c) for c in candidates],
            "presentation_order": list(presented or ()),
            "user_id": user_id,
            "session_id": session_id,
            "environment": environment,
            "tags": list(tags),
            "metadata": dict(metadata or {}),
            "parent_request_id": parent_request_id,
        })  # fmt: skip

    def inference_event(self, event: Mapping[str, Any]) -> Self:
        """An inference event given whole (fields of ``inference.avsc``; optional ones may be left out)."""
        self._stream_time = max(self._stream_time, event["timestamp_ms"])
        offset = self._next[0]
        row = inference_row(complete_inference(event), self.topics[0], self.partition, offset)
        self._next = (offset + 1, self._next[1])
        self._inference.append(row)
        self._landed[row["request_id"]] = row
        return self

    # ------------------------------------------------------------------ feedback
    def _event(self, request_id: str, op: str, feedback_id: str | None, ts: int | None, source: SourceSpec,
               fields: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
        feedback_id = feedback_id or f"fb-{next(self._ids)}"
        return {
            "event_id": f"fe-{feedback_id}-{next(self._ids)}",
            "feedback_id": feedback_id,
            "op": op,
            "request_id": request_id,
            "timestamp_ms": self._time(ts),
            **fields,
            "source": _source(source),
        }

    def _feedback_row(self, event: Mapping[str, Any]) -> dict[str, Any]:
        self._stream_time = max(self._stream_time, event["timestamp_ms"])
        self._requests.setdefault(event["feedback_id"], event["request_id"])
        offset = self._next[1]
        self._next = (self._next[0], offset + 1)
        return feedback_row(complete_feedback(event), self.topics[1], self.partition, offset)

    def feedback(
        self,
        request_id: str,
        *,
        op: str = "CREATE",
        feedback_id: str | None = None,
        ts: int | None = None,
        source: SourceSpec = "APP_USER",
        **fields: Any,
    ) -> Self:
        """A feedback event of any shape (fields of ``feedback.avsc``), joined to its request's inference."""
        return self.feedback_event(self._event(request_id, op, feedback_id, ts, source, fields))

    def feedback_event(self, event: Mapping[str, Any]) -> Self:
        """A feedback event given whole, joined to the inference of its request logged earlier."""
        inference = self._landed.get(event["request_id"])
        if inference is None:
            raise LogInputError(
                "request_id", f"no inference logged for {event['request_id']!r}: log its inference first, or orphan()"
            )
        row = self._feedback_row(event)
        row["joined_at_ms"] = max(row["feedback_timestamp_ms"], inference["inference_timestamp_ms"])
        row["join_path"] = "hot"
        self._joined.append((row, inference))
        return self

    def pairwise(self, request_id: str, chosen: str, rejected: str, *, outcome: str = "PREFERRED",
                 key: str = "preference", **kw: Any) -> Self:  # fmt: skip
        return self.feedback(
            request_id, key=key, kind="PAIRWISE", outcome=outcome, chosen_id=chosen, rejected_id=rejected, **kw
        )

    def ranking(self, request_id: str, ranking: Sequence[Sequence[str] | str], *, key: str = "ranking",
                **kw: Any) -> Self:  # fmt: skip
        groups = [[g] if isinstance(g, str) else list(g) for g in ranking]
        return self.feedback(request_id, key=key, kind="RANKING", ranking=groups, **kw)

    def score(self, request_id: str, candidate: str, score: float, *, key: str = "thumbs", **kw: Any) -> Self:
        return self.feedback(request_id, key=key, kind="SCORE", candidate_id=candidate, score=score, **kw)

    def correction(self, request_id: str, candidate: str, text: str, *, key: str = "correction", **kw: Any) -> Self:
        return self.feedback(request_id, key=key, kind="SCORE", candidate_id=candidate, correction=text, **kw)

    def update(self, feedback_id: str, *, ts: int | None = None, **fields: Any) -> Self:
        """An UPDATE carrying only ``fields`` (the others null: they keep their earlier values)."""
        return self.feedback(self._request_of(feedback_id), op="UPDATE", feedback_id=feedback_id, ts=ts, source=None,
                             **fields)  # fmt: skip

    def delete(self, feedback_id: str, *, ts: int | None = None) -> Self:
        return self.feedback(self._request_of(feedback_id), op="DELETE", feedback_id=feedback_id, ts=ts, source=None)

    def _request_of(self, feedback_id: str) -> str:
        if feedback_id not in self._requests:
            raise LogInputError("feedback_id", f"{feedback_id!r} was never logged by this builder")
        return self._requests[feedback_id]

    def orphan(
        self,
        request_id: str,
        *,
        reason: str = "inference not seen within the grace",
        op: str = "CREATE",
        feedback_id: str | None = None,
        ts: int | None = None,
        source: SourceSpec = "APP_USER",
        **fields: Any,
    ) -> Self:
        """Feedback whose inference did not arrive within the grace (a row of the orphans table)."""
        row = self._feedback_row(self._event(request_id, op, feedback_id, ts, source, fields))
        row["orphaned_at_ms"] = row["feedback_timestamp_ms"] + 1
        row["reason"] = reason
        self._orphans.append(row)
        return self

    # ------------------------------------------------------------------ implicit signals
    def signal(
        self,
        request_id: str,
        kind: str,
        candidate: str | None = None,
        *,
        signal_id: str | None = None,
        value: float | None = None,
        text: str | None = None,
        dwell_ms: int | None = None,
        source: str | None = None,
        ts: int | None = None,
    ) -> Self:
        """An implicit signal at the next feedback offset: a row of the signals table, no join
        (its request's inference may come later, or never)."""
        event = complete_signal({
            "signal_id": signal_id or f"sig-{next(self._ids)}", "request_id": request_id,
            "timestamp_ms": self._time(ts), "kind": kind, "candidate_id": candidate, "value": value,
            "text": text, "dwell_ms": dwell_ms, "source": source,
        })  # fmt: skip
        self._stream_time = max(self._stream_time, event["timestamp_ms"])
        offset = self._next[1]
        self._next = (self._next[0], offset + 1)
        self._signals.append(signal_row(event, self.topics[1], self.partition, offset))
        return self

    # ------------------------------------------------------------------ commit
    def commit(self) -> Path:
        """Write the pending rows as the next committed segment of this builder's partition."""
        inference_end, feedback_end = self._next
        name = SegmentName(self.partition, self.inference_next, inference_end, self.feedback_next, feedback_end)
        inference = rows_to_table(self._inference, INFERENCE_LOG)
        tables: dict[str, list[dict[str, Any]] | pa.Table] = {
            "inference": inference,
            "feedback": joined_table(self._joined, self._inference, inference),
            "orphans": self._orphans,
            "signals": self._signals,
        }
        state = ResumeState(self.partition, inference_end, feedback_end, stream_time_ms=self._stream_time,
                            has_segments=True)  # fmt: skip
        path = write_segment(self.log_dir, name, tables, state)
        self.inference_next, self.feedback_next = inference_end, feedback_end
        self._inference, self._joined, self._orphans, self._signals = [], [], [], []
        return path
