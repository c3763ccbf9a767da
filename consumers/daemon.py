"""The consumer daemon: a consumer group over both topics that joins and lands them exactly once.

Both topics are subscribed with the *range* assignor, which gives partition ``p`` of the
inference topic and partition ``p`` of the feedback topic to the same member (they are
co-partitioned and keyed by request id). Per partition number the daemon queues what it fetched
from both topics and joins the records in timestamp order (:mod:`~prefpair.consumers.alignment`),
keeps a :class:`~prefpair.consumers.join.PartitionJoin`, flushes it as one durable segment when it
is big or old enough, and only then commits the offsets. On assignment it resumes from what the
newest segment says, not from the group's committed offsets: the files are the truth.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from prefpair.config import Settings
from prefpair.consumers.alignment import FEEDBACK, INFERENCE, AlignedPartition
from prefpair.consumers.collector import PeriodicCollection, manual_collection
from prefpair.consumers.config import ConsumerConfig
from prefpair.consumers.dead_letters import DeadLetterSink
from prefpair.consumers.erasure_follower import ErasureFollower
from prefpair.consumers.exceptions import ConsumerError, LogWriteError, SegmentCommitError
from prefpair.consumers.join import HotState, PartitionJoin, feedback_row, inference_row
from prefpair.consumers.landed import LandedLog
from prefpair.consumers.metrics import RunStats, current_rss, write_metrics
from prefpair.consumers.segments import (
    bind_log_to_topics,
    joined_table,
    newest_segment,
    read_resume_state,
    rows_to_table,
    segment_location,
    sweep_temporaries,
    where,
)
from prefpair.consumers.signals import signal_row
from prefpair.consumers.writer import SealedSegment, SegmentWriter
from prefpair.errors import KafkaUnavailableError
from prefpair.kafka import client_config, create_consumer, resolve_bootstrap
from prefpair.schemas import ContractError, DecodeError, ValidationError
from prefpair.schemas.log import INFERENCE_LOG, SegmentName
from prefpair.schemas.models import check_feedback_record, check_inference_record, check_signal_record, now_ms
from prefpair.schemas.registry import FEEDBACK as FEEDBACK_SCHEMA
from prefpair.schemas.registry import INFERENCE as INFERENCE_SCHEMA
from prefpair.schemas.registry import SIGNAL as SIGNAL_SCHEMA
from prefpair.schemas.wire import Codec, codec_for
from prefpair.storage import Storage, is_url, location

log = logging.getLogger(__name__)


def warm_up_arrow() -> None:
    """Pay pyarrow's lazy start-up before the first message: its first conversion of Python rows
    imports pandas (when installed) to check for pandas objects, about half a second of CPU that
    would otherwise stall the first flush."""
    pa.array([{"warm": 1}])


def log_storage(settings: Settings, config: ConsumerConfig) -> Path | Storage:
    """The log ``config`` names (``--log-dir``), else ``<home>/log``: a local directory or object storage."""
    if config.log_dir is None:
        return Path(settings.log_dir)
    if not is_url(config.log_dir):
        return Path(config.log_dir)
    return location(config.log_dir, settings.s3_options())


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
        self.log_dir = log_storage(settings, self.config)
        self.stats = RunStats(hot_budget_bytes=self.config.hot_state_bytes)
        self._stop = threading.Event()
        self._hot = HotState(self.config.hot_state_bytes)
        self._joins: dict[int, PartitionJoin] = {}
        self._aligned: dict[int, AlignedPartition] = {}
        self._idle_since: dict[int, float] = {}
        self._landed = LandedLog(self.log_dir)
        self._writer = SegmentWriter(self.log_dir, self.config.compression)
        self._erasures: ErasureFollower | None = None
        self._dead_letters: DeadLetterSink | None = None
        self._consumer: Consumer | None = None
        self._failed = False
        self._last_expiry_check = 0.0
        self._retired = {"hot": 0, "waited": 0, "duplicates": 0, "enforced": 0}  # of partitions no longer ours
        self._first_message_at: float | None = None
        self._first_message_cpu = 0.0
        self._busy_marked = (0, 0)
        self._last_group_check = 0.0
        self._partitions = 0
        self._collection = PeriodicCollection()

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
        log_id = bind_log_to_topics(self.log_dir, settings.inference_topic, settings.feedback_topic)
        self._erasures = ErasureFollower(settings, self.log_dir).start()  # erased rows stay out of new segments
        self._writer.erasures = self._erasures
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
        try:
            self._partitions = self._partition_count(consumer, settings.inference_topic)
            self._dead_letters = DeadLetterSink(
                settings, self._partition_count(consumer, settings.dead_letter_topic), pipeline=log_id
            )
        except BaseException:
            consumer.close()
            raise
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
        warm_up_arrow()
        started = last_progress = time.monotonic()
        last_counts = (0, 0)
        try:
            with self._signals(), manual_collection():
                while not self._stop.is_set():
                    batch = consumer.consume(config.batch_size, timeout=0.1)
                    if batch and self._first_message_at is None:
                        self._first_message_at = time.monotonic()
                        self._first_message_cpu = time.process_time()
                    for msg in batch:
                        self._fetched(msg)
                    self._drain()
                    if self._writer.done:
                        self._settle("due")
                    self._flush_due()
                    now = time.monotonic()
                    self._collection.tick(now)
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
                self._flush(list(self._joins), reason="shutdown")
                self._settle("shutdown")
        except BaseException:
            # Nothing more is written: what is on disk stays the truth, and a revoke while leaving
            # the group must not try the failed write again.
            self._failed = True
            raise
        finally:
            self._close(last_progress, last_counts)
        log.info(
            "stopped: %d consumed, %d joined, %d orphans, %d dead letters, %d duplicates skipped, %d segments",
            self.stats.consumed, self.stats.joined, self.stats.orphans, self.stats.dead_letters,
            self.stats.duplicates, self.stats.segments,
        )  # fmt: skip
        return self.stats

    def _close(self, last_progress: float, last_counts: tuple[int, int]) -> None:
        """Leave the group and release everything, each step whatever the others did."""
        if self._first_message_at is not None and not self.stats.busy_seconds:
            self._busy_until_now()
        consumer, dead_letters = self._consumer, self._dead_letters
        steps: list[tuple[str, Callable[[], object]]] = [
            ("report progress", lambda: self._progress(max(time.monotonic() - last_progress, 1e-3), last_counts)),
            ("finish the segment write in flight", self._writer.close),
            ("leave the consumer group", lambda: consumer.close() if consumer else None),
            ("close the dead-letter producer", lambda: dead_letters.close() if dead_letters else None),
            ("close the landed-log reader", self._landed.close),
            ("stop following erasures", lambda: self._erasures.close() if self._erasures else None),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # clean-up goes on; the first error is the one raised
                log.warning("could not %s while stopping: %s", what, exc)
        self._consumer = None

    def _busy_until_now(self) -> None:
        """Wall and CPU time (all threads: librdkafka's too) from the first message to now."""
        assert self._first_message_at is not None
        self.stats.busy_seconds = round(time.monotonic() - self._first_message_at, 3)
        self.stats.busy_cpu_seconds = round(time.process_time() - self._first_message_cpu, 3)

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
    def _side(self, topic: str) -> int:
        return INFERENCE if topic == self.settings.inference_topic else FEEDBACK

    def _fetched(self, msg: Message) -> None:
        """Queue a fetched message (or note a partition's end) for the aligned join."""
        error = msg.error()
        topic, partition = msg.topic() or "", msg.partition() or 0
        aligned = self._aligned.get(partition)
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                if aligned is not None:
                    aligned.reached_end(self._side(topic), msg.offset())
                return
            if error.fatal():
                raise ConsumerError(f"fatal Kafka error: {error.str()}")
            log.warning("consumer error on %s[%s]: %s", topic, partition, error.str())
            return
        if aligned is None:  # not ours (any more): a message fetched before a revoke
            return
        aligned.push(self._side(topic), msg, self._joins[partition].stream_time)

    def _drain(self) -> None:
        """Join every queued record that may go next, in timestamp order per partition; pause and
        resume fetching so that neither topic runs far ahead of the other."""
        now = time.monotonic()
        for partition, aligned in self._aligned.items():
            join = self._joins[partition]
            while (item := aligned.pop(now)) is not None:
                self._handle(join, *item)
            self._balance(partition, aligned)
            if (since := aligned.idle_since(now)) is not None:
                self._idle_since[partition] = since
            else:
                self._idle_since.pop(partition, None)

    def _balance(self, partition: int, aligned: AlignedPartition) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        limit = self.config.max_queued_bytes
        for side, topic in ((INFERENCE, self.settings.inference_topic), (FEEDBACK, self.settings.feedback_topic)):
            queued = aligned.sides[side]
            if not queued.paused and queued.queued_bytes > limit:
                consumer.pause([TopicPartition(topic, partition)])
                queued.paused = True
                self.stats.pauses += 1
            elif queued.paused and queued.queued_bytes <= limit // 2:
                consumer.resume([TopicPartition(topic, partition)])
                queued.paused = False

    def _handle(self, join: PartitionJoin, side: int, timestamp: int, size: int, msg: Message) -> None:
        topic, partition = msg.topic() or "", msg.partition() or 0
        offset = msg.offset() or 0
        is_inference = side == INFERENCE
        value = msg.value()
        self.stats.consumed += 1
        try:
            if value is None:
                raise DecodeError("empty message (no value)", None)
            name, record = self.codec.decode(value)
            expected = INFERENCE_SCHEMA if is_inference else FEEDBACK_SCHEMA
            is_signal = name == SIGNAL_SCHEMA and not is_inference  # signals share the feedback topic
            if name != expected and not is_signal:
                raise ContractError(f"a {name} on the {'inference' if is_inference else 'feedback'} topic")
            # Avro guarantees the types; what it cannot express is checked on the dict as it is
            (check_signal_record if is_signal else check_inference_record if is_inference
             else check_feedback_record)(record)  # fmt: skip
            key = msg.key()
            if key is not None and key.decode("utf-8", "replace") != record["request_id"]:
                raise ValidationError("request_id", "differs from the message key: the join needs both equal")
        except ContractError as exc:
            stage = "decode" if isinstance(exc, DecodeError) else "validate"
            assert self._dead_letters is not None
            if self._dead_letters.send(msg, exc, stage):
                self.stats.dead_letters += 1
                log.warning("dead-lettered %s[%d]@%d: %s: %s", topic, partition, offset, type(exc).__name__, exc)
            join.advance(is_inference, offset, timestamp)
            return
        if is_signal:
            self.stats.signal_events += 1
            join.add_signal(signal_row(record, topic, partition, offset), size, timestamp)
        elif is_inference:
            self.stats.inference_events += 1
            join.add_inference(inference_row(record, topic, partition, offset), size, timestamp)
        else:
            self.stats.feedback_events += 1
            join.add_feedback(feedback_row(record, topic, partition, offset), size, timestamp)

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
        if not all(aligned.idle for aligned in self._aligned.values()):
            return False
        if self._writer.busy or not all(j.pending_count == 0 and not j.has_changes() for j in self._joins.values()):
            return False
        now = time.monotonic()
        done = (self.stats.consumed, self.stats.segments)
        if self._first_message_at is not None and done != self._busy_marked:
            # Our share is done: throughput is measured to here. Only progress moves the mark:
            # waiting for the rest of the group (and the rebalance when a finished member leaves,
            # which hands us partitions already at their end) is not work on messages.
            self._busy_marked = done
            self._busy_until_now()
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
        check_idle = now - self._last_expiry_check >= config.flush_interval_ms / 1000
        if check_idle:
            self._last_expiry_check = now
        due = []
        for partition, join in self._joins.items():
            if check_idle and partition in self._idle_since and join.pending_count:
                # read to its ends on both topics: the wall clock moves its time on
                join.expire_idle(int((now - self._idle_since[partition]) * 1000))
            behind = partition not in self._idle_since
            interval_ms = max(config.flush_interval_ms, config.backlog_flush_interval_ms) if behind else (
                config.flush_interval_ms)  # fmt: skip
            if join.has_changes() and (
                now - join.opened_at >= interval_ms / 1000
                or join.buffered_rows() >= config.flush_rows
                or join.buffered_bytes >= config.flush_bytes
                or join.expired_count
            ):
                due.append(partition)
        if due:
            self._flush(due, reason="due")

    def _flush(self, partitions: list[int], reason: str) -> None:
        """Seal the given partitions' open segments and hand them to the writer thread.

        The segments of the previous flush are settled first (on disk, offsets committed), so one
        flush at most is in flight, landed lookups see every earlier segment, and a partition's
        segments are written in order. Call :meth:`_settle` to wait for this one.
        """
        if not partitions or self._dead_letters is None:
            return
        self._settle(reason)
        self._dead_letters.flush()  # every dead letter acknowledged before its offset is committed
        sealed: list[SealedSegment] = []
        for partition in partitions:
            join = self._joins.get(partition)
            if join is None:
                continue
            self.stats.joined_landed += join.resolve_landed(self._landed.inference_rows)
            self.stats.landed_lookups = self._landed.lookups
            if not join.has_changes():
                continue
            out = join.seal()
            name = SegmentName(
                partition, join.inference_start, join.inference_next, join.feedback_start, join.feedback_next
            )
            if name.zero_width:
                newest = newest_segment(self.log_dir, partition)
                name = SegmentName(
                    partition, name.inference_start, name.inference_end, name.feedback_start, name.feedback_end,
                    max(now_ms(), (newest.sequence + 1) if newest else 1),
                )  # fmt: skip
            positions = dict(join.dead_letter_next)
            positions.update(self._dead_letters.positions(partition, join.inference_next, join.feedback_next))
            inference = rows_to_table(out.inference, INFERENCE_LOG)
            tables: dict[str, list[dict[str, Any]] | pa.Table] = {
                "inference": inference,
                "feedback": joined_table(out.feedback, out.inference, inference),
                "orphans": out.orphans,
                "signals": out.signals,
            }
            sealed.append(SealedSegment(partition, name, tables, join.resume_state(positions), out.pending,
                                        joined=len(out.feedback), orphans=len(out.orphans)))  # fmt: skip
            join.dead_letter_next = positions
            join.committed()
        if sealed:
            self._writer.submit(sealed)
        self._sync_join_counters()

    def _settle(self, reason: str) -> None:
        """Wait for the segments in flight; count them and commit their offsets to Kafka."""
        commits: list[TopicPartition] = []
        for segment, error in self._writer.settle():
            if isinstance(error, SegmentCommitError):
                # Another member owns this partition now (we were too slow to notice a rebalance):
                # its rows are that member's to write; drop ours and carry on with the rest.
                log.warning("giving up partition %d: %s", segment.partition, error)
                self._retire(segment.partition)
                continue
            if isinstance(error, OSError):  # disk full, read-only, permissions: nothing of it was committed
                raise LogWriteError(where(segment_location(self.log_dir, segment.name)), error) from None
            if error is not None:
                raise error
            self.stats.segments += 1
            self.stats.rows_written += segment.rows
            self.stats.joined += segment.joined
            self.stats.orphans += segment.orphans
            if segment.partition in self._joins:
                commits += [
                    TopicPartition(self.settings.inference_topic, segment.partition, segment.name.inference_end),
                    TopicPartition(self.settings.feedback_topic, segment.partition, segment.name.feedback_end),
                ]
        if commits and self._consumer is not None:
            try:
                self._consumer.commit(offsets=commits, asynchronous=False)
            except KafkaException as exc:  # the files are the truth; a failed commit only costs a re-read
                log.info("offset commit after %s flush failed (files stay authoritative): %s", reason, exc)

    def _sync_join_counters(self) -> None:
        stats = self.stats
        joins = self._joins.values()
        stats.joined_hot = sum(j.joined["hot"] for j in joins) + self._retired["hot"]
        stats.joined_waited = sum(j.joined["waited"] for j in joins) + self._retired["waited"]
        stats.duplicates = sum(j.duplicates for j in joins) + self._retired["duplicates"]
        stats.pending = sum(j.pending_count for j in joins)
        stats.enforced_order = sum(a.enforced for a in self._aligned.values()) + self._retired["enforced"]
        stats.queued = sum(a.queued for a in self._aligned.values())
        stats.stream_time_ms = max((j.stream_time for j in joins), default=0)
        stats.hot_entries = len(self._hot)
        stats.hot_bytes = self._hot.used_bytes
        stats.hot_evictions = self._hot.evictions

    def _retire(self, partition: int) -> None:
        join = self._joins.pop(partition, None)
        aligned = self._aligned.pop(partition, None)
        self._idle_since.pop(partition, None)
        if join is None:
            return
        self._retired = {
            "hot": self._retired["hot"] + join.joined["hot"],
            "waited": self._retired["waited"] + join.joined["waited"],
            "duplicates": self._retired["duplicates"] + join.duplicates,
            "enforced": self._retired["enforced"] + (aligned.enforced if aligned else 0),
        }
        self._hot.drop_partition(partition)
        if self._dead_letters is not None:
            self._dead_letters.forget(partition)

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        numbers = sorted({tp.partition for tp in partitions})
        for number in numbers:
            if number in self._joins:
                continue
            reading = time.monotonic()
            sweep_temporaries(self.log_dir, number)
            resume = read_resume_state(self.log_dir, number)
            assert self._dead_letters is not None
            resume.dead_letter_next.update(
                self._dead_letters.resume(
                    number, resume.dead_letter_next, resume.inference_next or 0, resume.feedback_next or 0
                )
            )
            known = self._landed.known_event_ids(number, self.config.dedup_ids) if resume.has_segments else ([], [])
            self._joins[number] = PartitionJoin(
                resume, self._hot, grace_ms=self.config.grace_ms, dedup_ids=self.config.dedup_ids, known_ids=known,
                max_future_ms=self.config.max_future_ms,
            )
            self._aligned[number] = AlignedPartition(self.config.max_idle_ms)
            log.info(
                "assigned partition %d: resuming at inference offset %s, feedback offset %s, %d feedback waiting "
                "(log read in %.2f s)",
                number, resume.inference_next or 0, resume.feedback_next or 0, len(resume.pending),
                time.monotonic() - reading,
            )  # fmt: skip
        for tp in partitions:
            join = self._joins[tp.partition]
            start = join.inference_start if tp.topic == self.settings.inference_topic else join.feedback_start
            tp.offset = start if start > 0 else OFFSET_BEGINNING
        consumer.assign(partitions)
        self.stats.assigned_partitions = sorted(self._joins)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions} & set(self._joins))
        if numbers and not self._failed:
            log.info("partitions %s revoked: flushing them before handing them over", numbers)
            self._flush(numbers, reason="revoke")
            self._settle("revoke")
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
        stats.cpu_seconds = round(time.process_time(), 3)
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
