"""The join of one partition number: feedback meets its inference event by request id, in event time.

Both topics are co-partitioned, so partition ``p`` of the feedback topic only ever needs
inference events from partition ``p``. The daemon hands a :class:`PartitionJoin` the records of
both partitions merged in timestamp order (:mod:`prefpair.consumers.alignment`), so *stream time*
(the largest record timestamp processed) is a property of the data, not of fetch sizes or of how
fast either topic is read. :class:`HotState` is the shared, budgeted memory of recent inference
events. A feedback event is joined

* ``hot``: its inference is in memory;
* ``waited``: it arrived first and was joined when the inference came;
* ``landed``: the inference had left memory (budget, restart, rebalance) and was found in the
  committed log by a batched DuckDB lookup.

Feedback waits for its inference until stream time passes its own timestamp by more than the
grace; then it becomes an orphan row with the reason. Only where a partition is idle (both
topics read to their ends) does the wall clock move its time on (:meth:`PartitionJoin.expire_idle`).

What waits is resumable at O(new) cost per segment: each segment stores only the feedback that
started waiting in it (``pending.parquet``) and the smallest offset still waiting; a restart reads
those files back from that offset and subtracts what later segments joined or orphaned.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefpair.consumers.segments import JoinedPair, PendingItem, ResumeState
from prefpair.schemas.log import FEEDBACK_RENAMES, INFERENCE_RENAMES
from prefpair.schemas.models import now_ms

log = logging.getLogger(__name__)

LandedLookup = Callable[[int, list[str]], dict[str, dict[str, Any]]]
"""``(partition, request_ids) -> {request_id: landed inference row}``."""


def positioned_row(
    record: dict[str, Any], renames: dict[str, str], side: str, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    """A decoded event as a log row: the record itself, its fields renamed in place (``renames``),
    with where it came from as ``<side>_topic``, ``<side>_partition`` and ``<side>_offset``."""
    row = record
    for old, new in renames.items():
        if old in row:
            row[new] = row.pop(old)
    row[f"{side}_topic"] = topic
    row[f"{side}_partition"] = partition
    row[f"{side}_offset"] = offset
    return row


def inference_row(record: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    """A decoded inference event as a row of the inference log."""
    return positioned_row(record, INFERENCE_RENAMES, "inference", topic, partition, offset)


def feedback_row(record: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    """A decoded feedback event with its source position, before the join."""
    return positioned_row(record, FEEDBACK_RENAMES, "feedback", topic, partition, offset)


Table = TypeVar("Table", bound=dict[Any, Any])


def keeping_hashes(table: Table) -> Table:
    """``table`` (empty) switched to CPython's general key layout, which stores each key's hash in the
    table: an all-``str`` dict stores only the keys and reads a probed key's hash from the string
    object itself, a cache miss per probe once the heap holds a backlog's rows. Inserting a new
    request id into such a dict of 50k entries cost ~6 us on the bench's backlog, ~1.7 us with the
    hashes kept. Contents, order and behaviour are unchanged; the layout survives resizes, not
    ``clear()`` (make a new table instead). Costs 8 bytes per entry."""
    table[_LAYOUT_KEY] = None
    del table[_LAYOUT_KEY]
    return table


_LAYOUT_KEY = 0
"""Any non-``str`` key: inserting one switches a dict to the general layout for good."""

EVICTED_IDS_KEPT = 200_000
"""Evicted request ids remembered, all partitions together (~100 bytes each, ~20 MB at most, however
many partitions the daemon holds); past that, the partition that overflows falls back to looking up
every miss, as before these ids were kept."""

PYTHON_OVERHEAD = 4
"""Decoded rows take about this many times their Avro size in memory (dicts, str objects)."""


class HotState:
    """Recent inference rows by request id, across partitions, within a byte budget.

    Oldest entries leave first. The request ids that left are remembered per partition (up to
    :data:`EVICTED_IDS_KEPT` in all), so that a miss is looked up in the landed log only when its inference
    was evicted, not for every feedback that comes before its inference; past that many, any miss
    of the partition may have been evicted.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        # Insertion-ordered with O(1) removal of the oldest: a dict's next(iter()) rescans the
        # slots of every entry removed from its front, which made eviction cost grow with the budget.
        self._rows: OrderedDict[str, tuple[int, dict[str, Any], int]] = keeping_hashes(OrderedDict())
        self.evicted_from: set[int] = set()
        self._evicted_ids: dict[int, set[str]] = {}
        self._evicted_kept = 0
        """Ids in all the sets of ``_evicted_ids``."""
        self._untracked: set[int] = set()
        """Partitions whose evicted ids overflowed EVICTED_IDS_KEPT: any id may have left."""
        self.evictions = 0

    def may_have_evicted(self, partition: int, request_id: str) -> bool:
        """Whether the inference of ``request_id`` may have left memory (so it may be in the landed log)."""
        if partition not in self.evicted_from:
            return False
        return partition in self._untracked or request_id in self._evicted_ids.get(partition, ())

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
            evicted, (part, _, freed) = self._rows.popitem(last=False)
            self.used_bytes -= freed
            self.evicted_from.add(part)
            self.evictions += 1
            if part not in self._untracked:
                ids = self._evicted_ids.setdefault(part, set())
                ids.add(evicted)
                self._evicted_kept += 1
                if self._evicted_kept > EVICTED_IDS_KEPT:
                    self._untrack(part)

    def drop_partition(self, partition: int) -> None:
        for request_id in [r for r, entry in self._rows.items() if entry[0] == partition]:
            self.used_bytes -= self._rows.pop(request_id)[2]
        self.evicted_from.discard(partition)
        self._evicted_kept -= len(self._evicted_ids.pop(partition, ()))
        self._untracked.discard(partition)

    def _untrack(self, partition: int) -> None:
        """Forget ``partition``'s evicted ids: from now on any miss of it may have been evicted."""
        self._untracked.add(partition)
        self._evicted_kept -= len(self._evicted_ids.pop(partition, ()))


class BoundedIds:
    """A set of recent event ids with a size cap (oldest forgotten first)."""

    def __init__(self, cap: int, initial: Iterable[str] = ()) -> None:
        self.cap = cap
        self._ids: OrderedDict[str, None] = keeping_hashes(OrderedDict())  # popitem(last=False): O(1), see HotState
        for item in initial:
            self.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def add(self, item: str) -> None:
        if self.cap <= 0:
            return
        self._ids[item] = None
        if len(self._ids) > self.cap:
            self._ids.popitem(last=False)


@dataclass
class Emitted:
    """What a flush hands to the segment writer.

    Joined feedback is kept as pairs (feedback row, inference row): the writer builds the joined
    table's inference columns from Arrow (:func:`~prefpair.consumers.segments.joined_table`), so
    an inference event is converted once however many feedback rows repeat it.
    """

    inference: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[JoinedPair] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    pending: list[PendingItem] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)


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
        max_future_ms: int = 5 * 60 * 1000,
    ) -> None:
        self.partition = resume.partition
        self.hot = hot
        self.grace_ms = grace_ms
        self.max_future_ms = max_future_ms
        self._future_limit = 0
        """Timestamps above this (the wall clock plus ``max_future_ms``, re-read when passed) move no time."""
        self.future_stamped = 0
        self.inference_start = self.inference_next = resume.inference_next or 0
        self.feedback_start = self.feedback_next = resume.feedback_next or 0
        self.stream_time = resume.stream_time_ms
        self.dead_letter_next = dict(resume.dead_letter_next)
        self.may_have_landed = resume.has_segments
        self.seen_inference = BoundedIds(dedup_ids, known_ids[0])
        self.seen_feedback = BoundedIds(dedup_ids, known_ids[1])
        # Waiting feedback: by request id (for the join), by offset (what is still waiting), a heap
        # by timestamp (expiry) and a queue in offset order (the smallest offset still waiting).
        self.pending: dict[str, list[PendingItem]] = keeping_hashes({})
        self._waiting: dict[int, PendingItem] = {}
        self._by_time: list[tuple[int, int]] = []
        self._by_offset: deque[int] = deque()
        self._new_pending: list[PendingItem] = []
        self._expired: list[PendingItem] = []
        self.out = Emitted()
        for item in resume.pending:
            self._wait(item)
            self.seen_feedback.add(item.row["feedback_event_id"])
        if not resume.pending_stored:  # read from an older layout: store them in the next segment
            self._new_pending = list(resume.pending)
        else:
            self._new_pending = []
        self.unchecked: set[str] = set(self.pending) if self.may_have_landed else set()
        self.open_inference: dict[str, dict[str, Any]] = keeping_hashes({})
        self.buffered_bytes = 0
        self.opened_at = 0.0
        self.duplicates = 0
        self.joined = {"hot": 0, "waited": 0, "landed": 0}
        self.orphaned = 0

    # ------------------------------------------------------------------ positions and time
    def _touch(self, size: int) -> None:
        """The open segment changed; ``size`` Avro bytes more of it are held in memory (as rows: about 4x)."""
        if not self.opened_at:
            self.opened_at = time.monotonic()
        self.buffered_bytes += size * PYTHON_OVERHEAD

    def advance(self, topic_is_inference: bool, offset: int, timestamp_ms: int | None = None) -> None:
        """A message at ``offset`` was handled (joined, dead-lettered or skipped)."""
        if topic_is_inference:
            self.inference_next = offset + 1
        else:
            self.feedback_next = offset + 1
        self._touch(0)
        if timestamp_ms is not None and timestamp_ms > self.stream_time:
            if timestamp_ms > self._future_limit and self._from_the_future(timestamp_ms, offset):
                return
            self.stream_time = timestamp_ms
            self._expire_up_to(timestamp_ms)

    def _from_the_future(self, timestamp_ms: int, offset: int) -> bool:
        """A record stamped more than ``max_future_ms`` ahead of the wall clock moves no stream time:
        one producer with a wrong clock would otherwise make every on-time record look late."""
        self._future_limit = now_ms() + self.max_future_ms
        if timestamp_ms <= self._future_limit:
            return False
        self.future_stamped += 1
        if self.future_stamped == 1 or self.future_stamped % 1000 == 0:
            log.warning(
                "partition %d: a record at offset %d is stamped %d, %.0f s ahead of this host's clock; "
                "records stamped more than %.0f s ahead do not move stream time (%d so far)",
                self.partition, offset, timestamp_ms, (timestamp_ms - now_ms()) / 1000, self.max_future_ms / 1000,
                self.future_stamped,
            )  # fmt: skip
        return True

    # ------------------------------------------------------------------ events
    def add_inference(self, row: dict[str, Any], size: int, timestamp_ms: int) -> None:
        # Time moves first: feedback more than the grace ahead of this inference is an orphan,
        # whichever record comes next; exactly the grace ahead still joins.
        self.advance(True, row["inference_offset"], timestamp_ms)
        event_id = row["inference_event_id"]
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
                del self._waiting[item.offset]
                self._emit_joined(item.row, row, "waited")

    def add_feedback(self, row: dict[str, Any], size: int, timestamp_ms: int) -> None:
        event_id = row["feedback_event_id"]
        self.advance(False, row["feedback_offset"], timestamp_ms)
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
        item = PendingItem(row, timestamp_ms, row["feedback_offset"])
        self._wait(item)
        self._new_pending.append(item)
        if self.may_have_landed or self.hot.may_have_evicted(self.partition, request_id):
            self.unchecked.add(request_id)
        if self.stream_time - timestamp_ms > self.grace_ms:  # already older than the grace
            self._expire_up_to(self.stream_time)

    def add_signal(self, row: dict[str, Any], size: int, timestamp_ms: int) -> None:
        """An implicit signal (from the feedback topic): landed in the open segment as it is, no join
        (compile joins signals to inferences across the log); its signal id dedups producer retries."""
        self.advance(False, row["signal_offset"], timestamp_ms)
        if row["signal_id"] in self.seen_feedback:
            self.duplicates += 1
            return
        self.seen_feedback.add(row["signal_id"])
        self.out.signals.append(row)
        self._touch(size)

    def _wait(self, item: PendingItem) -> None:
        self.pending.setdefault(item.row["request_id"], []).append(item)
        self._waiting[item.offset] = item
        heapq.heappush(self._by_time, (item.timestamp_ms, item.offset))
        self._by_offset.append(item.offset)

    def _emit_joined(self, feedback: dict[str, Any], inference: dict[str, Any], path: str) -> None:
        feedback["joined_at_ms"] = now_ms()
        feedback["join_path"] = path
        self.out.feedback.append((feedback, inference))
        self.joined[path] += 1

    # ------------------------------------------------------------------ expiry
    def _expire_up_to(self, time_ms: int) -> None:
        """Move feedback that waited more than the grace (in event time) out of the join."""
        heap, waiting = self._by_time, self._waiting
        while heap and time_ms - heap[0][0] > self.grace_ms:
            _, offset = heapq.heappop(heap)
            item = waiting.pop(offset, None)
            if item is None:  # joined meanwhile
                continue
            request_id = item.row["request_id"]
            items = self.pending[request_id]
            items.remove(item)
            if not items:
                del self.pending[request_id]
            item.expired_at_ms = time_ms
            self._expired.append(item)
            self._touch(0)

    def expire_idle(self, idle_for_ms: int) -> None:
        """The partition is read to its ends on both topics: let the wall clock move its time on."""
        if self._by_time:
            self._expire_up_to(self.stream_time + idle_for_ms)

    @property
    def expired_count(self) -> int:
        return len(self._expired)

    def _orphan_expired(self) -> None:
        for item in self._expired:
            orphan = dict(item.row)
            orphan["orphaned_at_ms"] = now_ms()
            orphan["reason"] = (
                f"no inference event for request_id {item.row['request_id']!r} within the grace of "
                f"{self.grace_ms / 1000:g} s of event time (feedback at {item.timestamp_ms}, "
                f"stream time reached {item.expired_at_ms})"
            )
            self.out.orphans.append(orphan)
        self.orphaned += len(self._expired)
        self._expired = []

    # ------------------------------------------------------------------ flush
    @property
    def pending_count(self) -> int:
        return len(self._waiting)

    def pending_from(self) -> int | None:
        """The smallest feedback offset still waiting (None when nothing waits)."""
        queue = self._by_offset
        while queue and queue[0] not in self._waiting:
            queue.popleft()
        return queue[0] if queue else None

    def buffered_rows(self) -> int:
        return len(self.out.inference) + len(self.out.feedback) + len(self.out.orphans) + len(self.out.signals)

    def has_changes(self) -> bool:
        return bool(self.opened_at)

    def resolve_landed(self, lookup: LandedLookup) -> int:
        """Join waiting (and just expired) feedback whose inference is in the committed log."""
        wanted = set(self.unchecked)
        for item in self._expired:
            request_id = item.row["request_id"]
            if self.may_have_landed or self.hot.may_have_evicted(self.partition, request_id):
                wanted.add(request_id)
        if not wanted:
            return 0
        found = lookup(self.partition, sorted(wanted))
        self.unchecked.clear()
        joined = 0
        for request_id, inference in found.items():
            for item in self.pending.pop(request_id, []):
                del self._waiting[item.offset]
                self._emit_joined(item.row, inference, "landed")
                joined += 1
        if found and self._expired:
            keep: list[PendingItem] = []
            for item in self._expired:
                landed = found.get(item.row["request_id"])
                if landed is None:
                    keep.append(item)
                else:
                    self._emit_joined(item.row, landed, "landed")
                    joined += 1
            self._expired = keep
        if joined:
            self._touch(0)
        return joined

    def seal(self) -> Emitted:
        """Close the open segment's rows: expired feedback becomes orphans, new waiting feedback is stored."""
        self._orphan_expired()
        self.out.pending = [item for item in self._new_pending if item.offset in self._waiting]
        return self.out

    def resume_state(self, dead_letter_next: dict[int, int]) -> ResumeState:
        """The state.json of the segment about to be written."""
        return ResumeState(
            partition=self.partition,
            inference_next=self.inference_next,
            feedback_next=self.feedback_next,
            pending_from=self.pending_from(),
            pending_count=self.pending_count,
            stream_time_ms=self.stream_time,
            dead_letter_next=dead_letter_next,
            has_segments=True,
        )

    def committed(self) -> None:
        """The segment is durable: start the next one where it ended."""
        self.inference_start = self.inference_next
        self.feedback_start = self.feedback_next
        self.out = Emitted()
        self._new_pending = []
        self.open_inference = keeping_hashes({})
        self.buffered_bytes = 0
        self.opened_at = 0.0
