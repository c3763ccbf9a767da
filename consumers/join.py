"""The join of one partition number: feedback meets its inference event by request id.

Both topics are co-partitioned, so partition ``p`` of the feedback topic only ever needs
inference events from partition ``p``. A :class:`PartitionJoin` keeps the rows of the open
segment and the feedback that waits for its inference; :class:`HotState` is the shared,
budgeted memory of recent inference events. A feedback event is joined

* ``hot``: its inference is in memory;
* ``waited``: it arrived first and was joined when the inference came;
* ``landed``: the inference had left memory (budget, restart, rebalance) and was found in the
  committed log by a batched DuckDB lookup.

Feedback whose inference does not come within the grace becomes an orphan row with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prefpair.consumers.segments import ResumeState
from prefpair.schemas.log import FEEDBACK_RENAMES, INFERENCE_RENAMES
from prefpair.schemas.models import now_ms

LandedLookup = Callable[[int, list[str]], dict[str, dict[str, Any]]]
"""``(partition, request_ids) -> {request_id: landed inference row}``."""



def inference_row(record: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    """A decoded inference event as a row of the inference log."""
    row = {INFERENCE_RENAMES.get(k, k): v for k, v in record.items()}
    row["inference_topic"] = topic
    row["inference_partition"] = partition
    row["inference_offset"] = offset
    return row


def feedback_row(record: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    """A decoded feedback event with its source position, before the join."""
    row = {FEEDBACK_RENAMES.get(k, k): v for k, v in record.items()}
    row["feedback_topic"] = topic
    row["feedback_partition"] = partition
    row["feedback_offset"] = offset
    return row


PYTHON_OVERHEAD = 4
"""Decoded rows take about this many times their Avro size in memory (dicts, str objects)."""


class HotState:
    """Recent inference rows by request id, across partitions, within a byte budget.

    Oldest entries leave first. A partition that lost an entry is marked so that its misses are
    looked up in the landed log instead of being presumed early.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._rows: dict[str, tuple[int, dict[str, Any], int]] = {}
        self.evicted_from: set[int] = set()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, request_id: str) -> dict[str, Any] | None:
        entry = self._rows.get(request_id)
        return entry[1] if entry else None

    def put(self, partition: int, request_id: str, row: dict[str, Any], size: int) -> None:
        old = self._rows.pop(request_id, None)
        if old is not None:
            self.used_bytes -= old[2]
        self._rows[request_id] = (partition, row, size)
        self.used_bytes += size
        while self.used_bytes > self.budget_bytes and self._rows:
            oldest = next(iter(self._rows))
            part, _, freed = self._rows.pop(oldest)
            self.used_bytes -= freed
            self.evicted_from.add(part)
            self.evictions += 1

    def drop_partition(self, partition: int) -> None:
        for request_id in [r for r, entry in self._rows.items() if entry[0] == partition]:
            self.used_bytes -= self._rows.pop(request_id)[2]
        self.evicted_from.discard(partition)


class BoundedIds:
    """A set of recent event ids with a size cap (oldest forgotten first)."""

    def __init__(self, cap: int, initial: Iterable[str] = ()) -> None:
        self.cap = cap
        self._ids: dict[str, None] = {}
        for item in initial:
            self.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def add(self, item: str) -> None:
        if self.cap <= 0:
            return
        self._ids[item] = None
        if len(self._ids) > self.cap:
            del self._ids[next(iter(self._ids))]


@dataclass
class Emitted:
    """What a flush hands to the segment writer."""

    inference: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)


class PartitionJoin:
    """State of one owned partition number between two segment commits."""

    def __init__(
        self,
        resume: ResumeState,
        hot: HotState,
        *,
        grace_ms: int,
        dedup_ids: int,
        known_ids: tuple[Iterable[str], Iterable[str]] = ((), ()),
    ) -> None:
        self.partition = resume.partition
        self.hot = hot
        self.grace_ms = grace_ms
        self.inference_start = self.inference_next = resume.inference_next or 0
        self.feedback_start = self.feedback_next = resume.feedback_next or 0
        self.dead_letter_next = dict(resume.dead_letter_next)
        self.may_have_landed = resume.has_segments
        self.seen_inference = BoundedIds(dedup_ids, known_ids[0])
        self.seen_feedback = BoundedIds(dedup_ids, known_ids[1])
        self.pending: dict[str, list[dict[str, Any]]] = {}
        for item in resume.pending:
            self.pending.setdefault(item["row"]["request_id"], []).append(item)
            self.seen_feedback.add(item["row"]["feedback_event_id"])
        self.unchecked: set[str] = set(self.pending) if self.may_have_landed else set()
        self.out = Emitted()
        self.open_inference: dict[str, dict[str, Any]] = {}
        self.buffered_bytes = 0
        self.opened_at = 0.0
        self.duplicates = 0
        self.joined = {"hot": 0, "waited": 0, "landed": 0}
        self.orphaned = 0

    # ------------------------------------------------------------------ positions
    def _touch(self, size: int) -> None:
        if not self.opened_at:
            self.opened_at = time.monotonic()
        self.buffered_bytes += size

    def advance(self, topic_is_inference: bool, offset: int) -> None:
        """A message at ``offset`` was handled (joined, dead-lettered or skipped)."""
        if topic_is_inference:
            self.inference_next = offset + 1
        else:
            self.feedback_next = offset + 1
        self._touch(0)

    # ------------------------------------------------------------------ events
    def add_inference(self, row: dict[str, Any], size: int) -> None:
        event_id = row["inference_event_id"]
        self.advance(True, row["inference_offset"])
        if event_id in self.seen_inference:
            self.duplicates += 1
            return
        self.seen_inference.add(event_id)
        request_id = row["request_id"]
        self.out.inference.append(row)
        self.open_inference[request_id] = row
        self.hot.put(self.partition, request_id, row, size * PYTHON_OVERHEAD)
        self._touch(size)
        waiting = self.pending.pop(request_id, None)
        if waiting:
            self.unchecked.discard(request_id)
            for item in waiting:
                self._emit_joined(item["row"], row, "waited")

    def add_feedback(self, row: dict[str, Any], size: int) -> None:
        event_id = row["feedback_event_id"]
        self.advance(False, row["feedback_offset"])
        if event_id in self.seen_feedback:
            self.duplicates += 1
            return
        self.seen_feedback.add(event_id)
        self._touch(size)
        request_id = row["request_id"]
        inference = self.hot.get(request_id) or self.open_inference.get(request_id)
        if inference is not None:
            self._emit_joined(row, inference, "hot")
            return
        self.pending.setdefault(request_id, []).append({"row": row, "arrived_ms": now_ms()})
        if self.may_have_landed or self.partition in self.hot.evicted_from:
            self.unchecked.add(request_id)

    def _emit_joined(self, feedback: dict[str, Any], inference: dict[str, Any], path: str) -> None:
        joined = dict(inference)
        joined.update(feedback)
        joined["joined_at_ms"] = now_ms()
        joined["join_path"] = path
        self.out.feedback.append(joined)
        self.joined[path] += 1

    # ------------------------------------------------------------------ flush
    @property
    def pending_count(self) -> int:
        return sum(len(items) for items in self.pending.values())

    def buffered_rows(self) -> int:
        return len(self.out.inference) + len(self.out.feedback) + len(self.out.orphans)

    def oldest_pending_ms(self) -> int | None:
        oldest = [item["arrived_ms"] for items in self.pending.values() for item in items]
        return min(oldest) if oldest else None

    def has_changes(self) -> bool:
        return bool(self.opened_at)

    def resolve_landed(self, lookup: LandedLookup) -> int:
        """Join waiting feedback whose inference is in the committed log; returns how many."""
        if not self.unchecked:
            return 0
        found = lookup(self.partition, sorted(self.unchecked))
        self.unchecked.clear()
        joined = 0
        for request_id, inference in found.items():
            for item in self.pending.pop(request_id, []):
                self._emit_joined(item["row"], inference, "landed")
                joined += 1
        return joined

    def expire(self, now: int, reason_prefix: str = "no inference event") -> int:
        """Turn feedback that waited longer than the grace into orphan rows."""
        expired = 0
        for request_id in list(self.pending):
            keep = []
            for item in self.pending[request_id]:
                if now - item["arrived_ms"] >= self.grace_ms:
                    orphan = dict(item["row"])
                    orphan["orphaned_at_ms"] = now
                    orphan["reason"] = (
                        f"{reason_prefix} for request_id {request_id!r} within the grace of "
                        f"{self.grace_ms / 1000:g} s (waited since {item['arrived_ms']})"
                    )
                    self.out.orphans.append(orphan)
                    expired += 1
                else:
                    keep.append(item)
            if keep:
                self.pending[request_id] = keep
            else:
                del self.pending[request_id]
        if expired:
            self._touch(0)
        self.orphaned += expired
        return expired

    def pending_state(self) -> list[dict[str, Any]]:
        return [item for items in self.pending.values() for item in items]

    def committed(self) -> None:
        """The segment is durable: start the next one where it ended."""
        self.inference_start = self.inference_next
        self.feedback_start = self.feedback_next
        self.out = Emitted()
        self.open_inference.clear()
        self.buffered_bytes = 0
        self.opened_at = 0.0
