"""The consumer daemon: a consumer group over both topics that joins and lands them exactly once.

Both topics are subscribed with the *range* assignor, which gives partition ``p`` of the
inference topic and partition ``p`` of the feedback topic to the same member (they are
co-partitioned and keyed by request id). Per partition number the daemon keeps a
:class:`~prefpair.consumers.join.PartitionJoin`, flushes it as one durable segment when it is
big or old enough, and only then commits the offsets. On assignment it resumes from what the
newest segment says, not from the group's committed offsets: the files are the truth.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from prefpair.config import Settings
from prefpair.consumers.config import ConsumerConfig
from prefpair.consumers.dead_letters import DeadLetterSink
from prefpair.consumers.exceptions import ConsumerError, SegmentCommitError
from prefpair.consumers.join import HotState, PartitionJoin, feedback_row, inference_row
from prefpair.consumers.landed import LandedLog
from prefpair.consumers.metrics import RunStats, current_rss, write_metrics
from prefpair.consumers.segments import (
    ResumeState,
    bind_log_to_topics,
    newest_segment,
    read_resume_state,
    sweep_temporaries,
    write_segment,
)
from prefpair.errors import KafkaUnavailableError
from prefpair.kafka import client_config, create_consumer, resolve_bootstrap
from prefpair.schemas import ContractError, DecodeError, FeedbackEvent, InferenceEvent, ValidationError
from prefpair.schemas.log import SegmentName
from prefpair.schemas.models import now_ms
from prefpair.schemas.registry import FEEDBACK, INFERENCE
from prefpair.schemas.wire import Codec, codec_for

log = logging.getLogger(__name__)


class ConsumerDaemon:
    """Consume, validate, join and land both topics; see the module docstring.

    ``run(until_caught_up=True)`` returns once the group has consumed every partition to its end
    and no feedback waits here any more (for batch jobs and tests); otherwise it runs until :meth:`stop`,
    SIGTERM or SIGINT, then flushes, commits and leaves the group.
    """

    def __init__(self, settings: Settings, config: ConsumerConfig | None = None, *, codec: Codec | None = None):
        self.settings = settings
        self.config = config or ConsumerConfig()
        self.codec = codec or codec_for(settings)
        self.log_dir = Path(settings.log_dir)
        self.stats = RunStats(hot_budget_bytes=self.config.hot_state_bytes)
        self._stop = threading.Event()
        self._hot = HotState(self.config.hot_state_bytes)
        self._joins: dict[int, PartitionJoin] = {}
        self._eof: dict[tuple[str, int], bool] = {}
        self._landed = LandedLog(self.log_dir)
        self._dead_letters: DeadLetterSink | None = None
        self._consumer: Consumer | None = None
        self._last_expiry_check = 0.0
        self._retired = {"hot": 0, "waited": 0, "duplicates": 0}  # counters of partitions no longer ours
        self._first_message_at: float | None = None
        self._last_group_check = 0.0
        self._partitions = 0

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to finish: flush, commit and leave the group. Safe from any thread."""
        self._stop.set()

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: flushing, committing and leaving the group", signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ main loop
    def run(self, until_caught_up: bool = False) -> RunStats:
        settings, config = self.settings, self.config
        bind_log_to_topics(self.log_dir, settings.inference_topic, settings.feedback_topic)
        consumer = create_consumer(
            client_config(
                settings,
                group_id=config.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                enable_partition_eof=True,
                partition_assignment_strategy="range",
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=min(1_000, config.session_timeout_ms // 3),
                **({"group_instance_id": config.instance_id} if config.instance_id else {}),
            )
        )
        self._consumer = consumer
        self._partitions = self._partition_count(consumer, settings.inference_topic)
        self._dead_letters = DeadLetterSink(settings, self._partition_count(consumer, settings.dead_letter_topic))
        consumer.subscribe(
            [settings.inference_topic, settings.feedback_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "consuming %s and %s as group %s into %s",
            settings.inference_topic, settings.feedback_topic, config.group_id, self.log_dir,
        )  # fmt: skip
        started = last_progress = time.monotonic()
        last_counts = (0, 0)
        clean = False
        try:
            with self._signals():
                while not self._stop.is_set():
                    batch = consumer.consume(config.batch_size, timeout=0.1)
                    if batch and self._first_message_at is None:
                        self._first_message_at = time.monotonic()
                    for msg in batch:
                        self._handle(msg)
                    self._flush_due()
                    now = time.monotonic()
                    if now - last_progress >= config.progress_interval_s:
                        last_counts = self._progress(now - last_progress, last_counts)
                        last_progress = now
                    if until_caught_up:
                        if self._caught_up():
                            break
                        if not self._joins and now - started > config.assignment_timeout_s:
                            raise ConsumerError(
                                f"no partition of {settings.inference_topic} / {settings.feedback_topic} "
                                f"was assigned within {config.assignment_timeout_s:g} s"
                            )
            clean = True
        finally:
            try:
                if clean:
                    self._flush(list(self._joins), reason="shutdown")
            finally:
                if self._first_message_at is not None and not self.stats.busy_seconds:
                    self.stats.busy_seconds = round(time.monotonic() - self._first_message_at, 3)
                self._progress(max(time.monotonic() - last_progress, 1e-3), last_counts)
                consumer.close()
                gc.unfreeze()  # let what this run froze be collected again
                self._dead_letters.close()
                self._landed.close()
                self._consumer = None
        log.info(
            "stopped: %d consumed, %d joined, %d orphans, %d dead letters, %d duplicates skipped, %d segments",
            self.stats.consumed, self.stats.joined, self.stats.orphans, self.stats.dead_letters,
            self.stats.duplicates, self.stats.segments,
        )  # fmt: skip
        return self.stats

    def _partition_count(self, consumer: Consumer, topic: str) -> int:
        try:
            metadata = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise KafkaUnavailableError(resolve_bootstrap(self.settings), str(exc)) from None
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise ConsumerError(f"topic {topic} does not exist: run `prefpair topics create` first")
        return len(info.partitions)

    # ------------------------------------------------------------------ messages
    def _handle(self, msg: Message) -> None:
        error = msg.error()
        topic, partition = msg.topic() or "", msg.partition() or 0
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._eof[(topic, partition)] = True
                return
            if error.fatal():
                raise ConsumerError(f"fatal Kafka error: {error.str()}")
            log.warning("consumer error on %s[%s]: %s", topic, partition, error.str())
            return
        join = self._joins.get(partition)
        if join is None:  # not ours (any more): a message fetched before a revoke
            return
        self._eof[(topic, partition)] = False
        offset = msg.offset() or 0
        is_inference = topic == self.settings.inference_topic
        value = msg.value()
        self.stats.consumed += 1
        try:
            if value is None:
                raise DecodeError("empty message (no value)", None)
            name, record = self.codec.decode(value)
            expected = INFERENCE if is_inference else FEEDBACK
            if name != expected:
                raise ContractError(f"a {name} on the {'inference' if is_inference else 'feedback'} topic")
            (InferenceEvent if is_inference else FeedbackEvent).parse(record)
            key = msg.key()
            if key is not None and key.decode("utf-8", "replace") != record["request_id"]:
                raise ValidationError("request_id", "differs from the message key: the join needs both equal")
        except ContractError as exc:
            stage = "decode" if isinstance(exc, DecodeError) else "validate"
            assert self._dead_letters is not None
            if self._dead_letters.send(msg, exc, stage):
                self.stats.dead_letters += 1
                log.warning("dead-lettered %s[%d]@%d: %s: %s", topic, partition, offset, type(exc).__name__, exc)
            join.advance(is_inference, offset)
            return
        if is_inference:
            self.stats.inference_events += 1
            join.add_inference(inference_row(record, topic, partition, offset), len(value))
        else:
            self.stats.feedback_events += 1
            join.add_feedback(feedback_row(record, topic, partition, offset), len(value))

    def _caught_up(self) -> bool:
        """Whether the whole group is done: ours are at their ends and flushed, and every other
        partition's committed offset is at its end too.

        Checking only our own assignment is not enough: a member killed a moment ago still holds
        its partitions until its session times out, and an instance that stopped then would leave
        them unconsumed.
        """
        consumer = self._consumer
        if consumer is None or not self._joins:
            return False
        assigned = consumer.assignment()
        if not assigned or not all(self._eof.get((tp.topic, tp.partition), False) for tp in assigned):
            return False
        if not all(join.pending_count == 0 and not join.has_changes() for join in self._joins.values()):
            return False
        now = time.monotonic()
        if self._first_message_at is not None:  # our share is done: throughput is measured to here
            self.stats.busy_seconds = round(now - self._first_message_at, 3)
        if now - self._last_group_check < 1.0:
            return False
        self._last_group_check = now
        return self._group_caught_up(consumer)

    def _group_caught_up(self, consumer: Consumer) -> bool:
        own = [
            TopicPartition(topic, number, join.inference_start if topic == self.settings.inference_topic
                           else join.feedback_start)
            for number, join in self._joins.items()
            for topic in (self.settings.inference_topic, self.settings.feedback_topic)
        ]  # fmt: skip
        try:
            consumer.commit(offsets=own, asynchronous=False)
            others = [
                TopicPartition(topic, number)
                for topic in (self.settings.inference_topic, self.settings.feedback_topic)
                for number in range(self._partitions)
                if number not in self._joins  # ours are at their end: we just saw it
            ]
            for tp in consumer.committed(others, timeout=10) if others else []:
                low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                if high > low and tp.offset < high:
                    return False
        except KafkaException as exc:
            log.debug("group progress check failed, trying again: %s", exc)
            return False
        return True

    # ------------------------------------------------------------------ flushing
    def _flush_due(self) -> None:
        config = self.config
        now = time.monotonic()
        check_expiry = now - self._last_expiry_check >= config.flush_interval_ms / 1000
        if check_expiry:
            self._last_expiry_check = now
        due = []
        for partition, join in self._joins.items():
            if join.has_changes() and (
                now - join.opened_at >= config.flush_interval_ms / 1000
                or join.buffered_rows() >= config.flush_rows
                or join.buffered_bytes >= config.flush_bytes
            ):
                due.append(partition)
            elif check_expiry and join.pending:
                oldest = join.oldest_pending_ms()
                if oldest is not None and now_ms() - oldest >= join.grace_ms:
                    due.append(partition)
        if due:
            self._flush(due, reason="due")

    def _flush(self, partitions: list[int], reason: str) -> None:
        """Make the given partitions' open segments durable, then commit their offsets."""
        if not partitions or self._dead_letters is None:
            return
        self._dead_letters.flush()  # every dead letter acknowledged before its offset is committed
        commits: list[TopicPartition] = []
        for partition in partitions:
            join = self._joins.get(partition)
            if join is None:
                continue
            self.stats.joined_landed += join.resolve_landed(self._landed.inference_rows)
            self.stats.landed_lookups = self._landed.lookups
            join.expire(now_ms())
            if not join.has_changes():
                continue
            name = SegmentName(
                partition, join.inference_start, join.inference_next, join.feedback_start, join.feedback_next
            )
            if name.zero_width:
                newest = newest_segment(self.log_dir, partition)
                name = SegmentName(
                    partition, name.inference_start, name.inference_end, name.feedback_start, name.feedback_end,
                    max(now_ms(), (newest.sequence + 1) if newest else 1),
                )  # fmt: skip
            resume = segment_state(join, self._dead_letters.positions(partition))
            out = join.out
            try:
                write_segment(
                    self.log_dir, name,
                    {"inference": out.inference, "feedback": out.feedback, "orphans": out.orphans},
                    resume, compression=self.config.compression,
                )  # fmt: skip
            except SegmentCommitError as exc:
                # Another member owns this partition now (we were too slow to notice a rebalance):
                # its rows are that member's to write; drop ours and carry on with the rest.
                log.warning("giving up partition %d: %s", partition, exc)
                self._retire(partition)
                continue
            self.stats.segments += 1
            self.stats.rows_written += len(out.inference) + len(out.feedback) + len(out.orphans)
            self.stats.joined += len(out.feedback)
            self.stats.orphans += len(out.orphans)
            join.dead_letter_next.update(resume.dead_letter_next)
            join.committed()
            commits += [
                TopicPartition(self.settings.inference_topic, partition, name.inference_end),
                TopicPartition(self.settings.feedback_topic, partition, name.feedback_end),
            ]
        self._sync_join_counters()
        # The hot state is millions of long-lived objects; without this the cyclic GC rescans
        # them over and over (about a fifth of the daemon's time). Freed ones still go by refcount.
        gc.freeze()
        if commits and self._consumer is not None:
            try:
                self._consumer.commit(offsets=commits, asynchronous=False)
            except KafkaException as exc:  # the files are the truth; a failed commit only costs a re-read
                log.info("offset commit after %s flush failed (files stay authoritative): %s", reason, exc)

    def _sync_join_counters(self) -> None:
        stats = self.stats
        stats.joined_hot = sum(j.joined["hot"] for j in self._joins.values()) + self._retired["hot"]
        stats.joined_waited = sum(j.joined["waited"] for j in self._joins.values()) + self._retired["waited"]
        stats.duplicates = sum(j.duplicates for j in self._joins.values()) + self._retired["duplicates"]
        stats.pending = sum(j.pending_count for j in self._joins.values())
        stats.hot_entries = len(self._hot)
        stats.hot_bytes = self._hot.used_bytes
        stats.hot_evictions = self._hot.evictions

    def _retire(self, partition: int) -> None:
        join = self._joins.pop(partition, None)
        if join is None:
            return
        self._retired = {
            "hot": self._retired["hot"] + join.joined["hot"],
            "waited": self._retired["waited"] + join.joined["waited"],
            "duplicates": self._retired["duplicates"] + join.duplicates,
        }
        self._hot.drop_partition(partition)
        if self._dead_letters is not None:
            self._dead_letters.forget(partition)
        for key in [k for k in self._eof if k[1] == partition]:
            del self._eof[key]

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        numbers = sorted({tp.partition for tp in partitions})
        for number in numbers:
            if number in self._joins:
                continue
            sweep_temporaries(self.log_dir, number)
            resume = read_resume_state(self.log_dir, number)
            assert self._dead_letters is not None
            resume.dead_letter_next.update(self._dead_letters.resume(number, resume.dead_letter_next))
            known = self._landed.known_event_ids(number, self.config.dedup_ids) if resume.has_segments else ([], [])
            self._joins[number] = PartitionJoin(
                resume, self._hot, grace_ms=self.config.grace_ms, dedup_ids=self.config.dedup_ids, known_ids=known
            )
            log.info(
                "assigned partition %d: resuming at inference offset %s, feedback offset %s, %d feedback waiting",
                number, resume.inference_next or 0, resume.feedback_next or 0, len(resume.pending),
            )  # fmt: skip
        for tp in partitions:
            join = self._joins[tp.partition]
            start = join.inference_start if tp.topic == self.settings.inference_topic else join.feedback_start
            tp.offset = start if start > 0 else OFFSET_BEGINNING
        consumer.assign(partitions)
        self.stats.assigned_partitions = sorted(self._joins)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions} & set(self._joins))
        if numbers:
            log.info("partitions %s revoked: flushing them before handing them over", numbers)
            self._flush(numbers, reason="revoke")
        for number in numbers:
            self._retire(number)
        self.stats.assigned_partitions = sorted(self._joins)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions} & set(self._joins))
        log.warning("partitions %s lost: dropping their unflushed rows (the next owner replays them)", numbers)
        for number in numbers:
            self._retire(number)
        self.stats.assigned_partitions = sorted(self._joins)

    # ------------------------------------------------------------------ reporting
    def _progress(self, elapsed: float, last: tuple[int, int]) -> tuple[int, int]:
        stats = self.stats
        self._sync_join_counters()
        stats.lag = self._lag()
        stats.rss_bytes = current_rss()
        total_lag = sum(stats.lag.values())
        log.info(
            "progress: %.0f consumed/s, %.0f joined/s, %d pending, %d orphans, %d dead letters, "
            "hot %d/%d MB, lag %d %s",
            (stats.consumed - last[0]) / elapsed, (stats.joined - last[1]) / elapsed, stats.pending,
            stats.orphans, stats.dead_letters, stats.hot_bytes // 2**20, stats.hot_budget_bytes // 2**20,
            total_lag, " ".join(f"{k}={v}" for k, v in sorted(stats.lag.items()) if v),
        )  # fmt: skip
        if self.config.metrics_path:
            write_metrics(Path(self.config.metrics_path), stats, self.config.group_id)
        return stats.consumed, stats.joined

    def _lag(self) -> dict[str, int]:
        consumer = self._consumer
        if consumer is None:
            return {}
        lag: dict[str, int] = {}
        try:
            for tp in consumer.position(consumer.assignment()):
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    lag[f"{tp.topic}/{tp.partition}"] = max(0, high - tp.offset)
        except KafkaException:
            pass
        return lag


def segment_state(join: PartitionJoin, dead_letter_next: dict[int, int]) -> ResumeState:
    """The state.json of the segment about to be written from ``join``."""
    merged = dict(join.dead_letter_next)
    merged.update(dead_letter_next)
    return ResumeState(
        partition=join.partition,
        inference_next=join.inference_next,
        feedback_next=join.feedback_next,
        pending=join.pending_state(),
        dead_letter_next=merged,
        has_segments=True,
    )
