"""The dead-letter sink: messages that cannot be decoded or break the contract, with their bytes.

Each dead letter keeps the original key, value and headers, plus headers naming where it came
from and why (``prefpair.source.topic`` / ``.partition`` / ``.offset``, ``prefpair.error.class``,
``prefpair.error.message``, ``prefpair.error.stage``) and whose it is (``prefpair.pipeline``: the
id of the log, so two pipelines on the same topics each account for their own). It goes to
dead-letter partition ``source partition % dead-letter partitions``.

Exactly once: the sink is flushed (and every delivery acknowledged) before the segment that
covers the source offset is committed; after a crash, the partition's new owner reads the
dead-letter partition from the offset the last segment recorded and skips the source offsets
already there, so a replay does not send them twice. The offset a segment records is never past
a dead letter it does not cover: one that an earlier run sent for a source offset beyond the
segment's ends keeps the recorded position at or before it, so the next owner still sees it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from prefpair.config import Settings
from prefpair.consumers.exceptions import DeadLetterError
from prefpair.kafka import client_config, create_consumer, create_producer

log = logging.getLogger(__name__)

H_TOPIC = "prefpair.source.topic"
H_PARTITION = "prefpair.source.partition"
H_OFFSET = "prefpair.source.offset"
H_ERROR_CLASS = "prefpair.error.class"
H_ERROR_MESSAGE = "prefpair.error.message"
H_STAGE = "prefpair.error.stage"
H_PIPELINE = "prefpair.pipeline"


def header_map(headers: Any) -> dict[str, str]:
    """The prefpair headers of a dead letter, decoded."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")
        for k, v in items
        if k.startswith("prefpair.")
    }


class DeadLetterSink:
    """Produces dead letters and remembers, per source partition, what was already sent."""

    def __init__(self, settings: Settings, partitions: int, *, pipeline: str) -> None:
        self.topic = settings.dead_letter_topic
        self.partitions = max(1, partitions)
        self.pipeline = pipeline
        self._settings = settings
        self._producer = create_producer(
            client_config(settings, enable_idempotence=True, linger_ms=5)
        )
        self._errors: list[str] = []
        self._next: dict[int, int] = {}  # dead-letter partition -> next offset after our acknowledged sends
        # source partition -> {(source topic, source offset): dead-letter offset} sent by an earlier run
        self._already_sent: dict[int, dict[tuple[str, int], int]] = {}
        self.sent = 0
        self.skipped_replays = 0

    def dead_letter_partition(self, source_partition: int) -> int:
        return source_partition % self.partitions

    # ------------------------------------------------------------------ resume
    def resume(
        self, source_partition: int, recorded: dict[int, int], inference_next: int, feedback_next: int
    ) -> dict[int, int]:
        """Learn what an earlier run already sent for ``source_partition`` past its last segment.

        ``recorded`` is the dead-letter offset the last committed segment noted, which ends at
        ``inference_next`` / ``feedback_next``. Returns the positions to record in the next segment.
        """
        target = self.dead_letter_partition(source_partition)
        start = recorded.get(target, 0)
        seen: dict[tuple[str, int], int] = {}
        consumer = create_consumer(
            client_config(
                self._settings,
                group_id="prefpair-dead-letter-scan",
                enable_auto_commit=False,
                enable_partition_eof=True,
            )
        )
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, target), timeout=10)
            start = max(start, low)
            if high > start:
                consumer.assign([TopicPartition(self.topic, target, start)])
                seen = self._scan(consumer, source_partition, high)
            self._next[target] = max(self._next.get(target, 0), high)
        finally:
            consumer.close()
        ends = {self._settings.inference_topic: inference_next, self._settings.feedback_topic: feedback_next}
        self._already_sent[source_partition] = {
            key: dl_offset for key, dl_offset in seen.items() if key[1] >= ends.get(key[0], 0)
        }
        if self._already_sent[source_partition]:
            log.info(
                "partition %d: %d dead letters were already sent by an earlier run; replays will skip them",
                source_partition, len(self._already_sent[source_partition]),
            )  # fmt: skip
        return self.positions(source_partition, inference_next, feedback_next)

    def _scan(
        self, consumer: Consumer, source_partition: int, high: int, timeout: float = 60.0
    ) -> dict[tuple[str, int], int]:
        seen: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout
        while True:
            msg = consumer.poll(1.0)
            if msg is None:
                if time.monotonic() > deadline:
                    reason = f"could not read it to offset {high} within {timeout:g} s on resume"
                    raise DeadLetterError(self.topic, reason)
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return seen
                raise DeadLetterError(self.topic, error.str())
            headers = header_map(msg.headers())
            offset = msg.offset()
            # Dead letters from before pipeline ids (no header) count as this pipeline's.
            ours = headers.get(H_PIPELINE, self.pipeline) == self.pipeline
            if ours and headers.get(H_PARTITION) == str(source_partition) and offset is not None:
                seen.setdefault((headers.get(H_TOPIC, ""), int(headers.get(H_OFFSET, "-1"))), offset)
            if offset is not None and offset + 1 >= high:
                return seen

    def forget(self, source_partition: int) -> None:
        self._already_sent.pop(source_partition, None)

    # ------------------------------------------------------------------ send
    def send(self, msg: Message, error: Exception, stage: str) -> bool:
        """Queue ``msg`` as a dead letter; False when an earlier run already sent it."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        if (topic, offset) in self._already_sent.get(partition, ()):
            self.skipped_replays += 1
            return False
        original = msg.headers() or []
        headers: list[tuple[str, Any]] = list(original.items() if isinstance(original, dict) else original)
        headers += [
            (H_TOPIC, topic.encode()),
            (H_PARTITION, str(partition).encode()),
            (H_OFFSET, str(offset).encode()),
            (H_ERROR_CLASS, type(error).__name__.encode()),
            (H_ERROR_MESSAGE, str(error)[:1000].encode()),
            (H_STAGE, stage.encode()),
            (H_PIPELINE, self.pipeline.encode()),
        ]
        target = self.dead_letter_partition(partition)
        while True:
            try:
                self._producer.produce(
                    self.topic, value=msg.value(), key=msg.key(), headers=headers,
                    partition=target, on_delivery=self._delivered,
                )  # fmt: skip
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.sent += 1
        return True

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(err.str())
            return
        partition, offset = msg.partition(), msg.offset()
        if partition is not None and offset is not None:
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter is acknowledged; raise DeadLetterError otherwise."""
        remaining = self._producer.flush(timeout)
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeadLetterError(self.topic, f"{len(errors)} deliveries failed: {errors[0]}")
        if remaining:
            raise DeadLetterError(self.topic, f"{remaining} dead letters not acknowledged within {timeout} s")

    def positions(self, source_partition: int, inference_next: int, feedback_next: int) -> dict[int, int]:
        """Dead-letter offsets to record in a segment of ``source_partition`` ending at these offsets.

        Our own sends are acknowledged (:meth:`flush`) before a segment is written, so the position
        is past them; but never past a dead letter an earlier run sent for an offset the segment
        does not cover yet, or the next owner would not see it and send it again.
        """
        target = self.dead_letter_partition(source_partition)
        ends = {self._settings.inference_topic: inference_next, self._settings.feedback_topic: feedback_next}
        uncovered = self._already_sent.get(source_partition, {})
        if uncovered:
            uncovered = {key: dl for key, dl in uncovered.items() if key[1] >= ends.get(key[0], 0)}
            self._already_sent[source_partition] = uncovered
        if uncovered:
            return {target: min(uncovered.values())}
        return {target: self._next[target]} if target in self._next else {}

    def close(self) -> None:
        self._producer.flush(10)
