"""Event-time alignment of the two co-partitioned topics, as Kafka Streams does it for a task.

Fetches follow message sizes, not time: the small feedback messages arrive far ahead of the large
inference messages when a backlog is read. If the daemon joined in fetch order, feedback would
wait for inference events that are still in Kafka, and how many became orphans would depend on
fetch sizes. Instead, for each partition number the daemon queues what it fetched from both
topics and hands the join the record with the smallest timestamp next:

* both queues hold records: the earlier timestamp goes first (on a tie, the inference);
* one queue is empty: if that topic is read to its end (partition EOF), the other goes on;
  otherwise the daemon waits for the fetch, at most ``max_idle_ms``, then goes on anyway
  (``max.task.idle.ms``; the fetch may be slow because the broker is);
* a queue that holds more than its share is paused at the consumer, so fetches go to the other
  topic (resumed when it has drained to half).

Timestamps are the Kafka record timestamps (CreateTime, set when the event was produced).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

INFERENCE, FEEDBACK = 0, 1
SIDES = (INFERENCE, FEEDBACK)


def record_timestamp(msg: Message, fallback: int) -> int:
    """The record's timestamp in epoch ms, or ``fallback`` if the record has none."""
    kind, value = msg.timestamp()
    return value if kind != TIMESTAMP_NOT_AVAILABLE and value >= 0 else fallback


@dataclass
class Side:
    """Fetched, not yet joined records of one topic-partition."""

    queue: deque[tuple[int, int, Message]] = field(default_factory=deque)
    """``(timestamp, size, message)``: the size is the value's length, read once when queued."""
    at_end: bool = False
    """The last fetch reached the partition's end (librdkafka's partition EOF)."""
    next_offset: int = -1
    """Offset after the last queued record; a refetch of older offsets (after pause) is dropped."""
    paused: bool = False
    queued_bytes: int = 0


class AlignedPartition:
    """The two queues of one partition number, and the order in which their records are joined."""

    def __init__(self, max_idle_ms: int) -> None:
        self.max_idle_ms = max_idle_ms
        self.sides = (Side(), Side())
        self._waiting_since: float | None = None
        self._idle_from: float | None = None
        self.enforced = 0
        """How often a record went ahead without knowing the other topic's next timestamp."""

    def push(self, side: int, msg: Message, fallback_ms: int) -> bool:
        """Queue a fetched record; False when it was queued already (a refetch)."""
        queue = self.sides[side]
        offset = msg.offset() or 0
        if offset < queue.next_offset:
            return False
        queue.next_offset = offset + 1
        queue.at_end = False
        size = len(msg.value() or b"")
        queue.queue.append((record_timestamp(msg, fallback_ms), size, msg))
        queue.queued_bytes += size
        return True

    def reached_end(self, side: int, offset: int | None) -> None:
        """librdkafka reached the end of this side at ``offset``."""
        queue = self.sides[side]
        if offset is None or offset >= queue.next_offset:
            queue.at_end = True

    def pop(self, now_s: float) -> tuple[int, int, int, Message] | None:
        """The next record to join as ``(side, timestamp, size, message)``, or None to wait for fetches."""
        inference, feedback = self.sides
        first, second = inference.queue, feedback.queue
        if first and second:
            self._waiting_since = None
            side = INFERENCE if first[0][0] <= second[0][0] else FEEDBACK
        elif first or second:
            side = INFERENCE if first else FEEDBACK
            if self.sides[1 - side].at_end:
                self._waiting_since = None  # nothing to wait for: the next wait starts afresh
            else:
                if self._waiting_since is None:
                    self._waiting_since = now_s
                if (now_s - self._waiting_since) * 1000 < self.max_idle_ms:
                    return None
                self.enforced += 1
        else:
            return None
        chosen = self.sides[side]
        timestamp, size, msg = chosen.queue.popleft()
        chosen.queued_bytes -= size
        self._idle_from = None
        return side, timestamp, size, msg

    def idle_since(self, now_s: float) -> float | None:
        """Since when the partition is idle (see :attr:`idle`) with no record handled since, or None.

        A record handled restarts the clock, even when it came with its partition's end in one fetch
        and the partition never looked busy: idle time lets waiting feedback expire by the wall clock,
        and counted from an earlier idle spell it would orphan feedback the moment it arrives.
        """
        if not self.idle:
            self._idle_from = None
        elif self._idle_from is None:
            self._idle_from = now_s
        return self._idle_from

    @property
    def idle(self) -> bool:
        """Both topics read to their ends and nothing queued: only the wall clock moves now."""
        return all(s.at_end and not s.queue for s in self.sides)

    @property
    def queued(self) -> int:
        return len(self.sides[0].queue) + len(self.sides[1].queue)
