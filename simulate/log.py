"""Sink (b): simulated traffic written as committed log segments, without a broker.

:func:`write_log` does what ``prefpair consume`` would do with the same messages: each event goes
to the partition Kafka's partitioner gives its key, takes the next offset there, and passes
through the consumer's own join (:class:`~prefpair.consumers.join.PartitionJoin`: hot, waited and
landed joins, grace in record time, orphans) in production order; segments are cut by the
consumer's flush limits and written by its segment writer
(:func:`~prefpair.consumers.segments.write_segment`), ``state.json`` and ``pending.parquet``
included, and ``LOG.json`` binds the log to its topics. So compile, the report and the service
read it as a consumed log, and ``prefpair consume`` could resume from it. Poison takes its
offset and writes no row, as a dead letter does. Join and orphan times come from record time, not
the wall clock, so the same traffic always gives the same rows. Records are not validated again
here: the model writes contract events (its tests check each one against the contract).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefpair.config import DEFAULT_FEEDBACK_TOPIC, DEFAULT_INFERENCE_TOPIC
from prefpair.consumers import ConsumerConfig
from prefpair.consumers.join import HotState, PartitionJoin, feedback_row, inference_row
from prefpair.consumers.landed import LandedLog
from prefpair.consumers.segments import (
    bind_log_to_topics,
    joined_table,
    newest_segment,
    read_resume_state,
    rows_to_table,
    write_segment,
)
from prefpair.schemas.log import INFERENCE_LOG, SegmentName
from prefpair.simulate.exceptions import LogInputError
from prefpair.simulate.model import INFERENCE_EVENT, POISON, SimEvent, SimulationStats
from prefpair.simulate.records import complete_feedback, complete_inference, partition_of


@dataclass
class LogWritten:
    """What :func:`write_log` wrote: rows by table, segments, and the traffic it consumed."""

    segments: int = 0
    inference_rows: int = 0
    feedback_rows: int = 0
    orphan_rows: int = 0
    join_paths: dict[str, int] = field(default_factory=lambda: {"hot": 0, "waited": 0, "landed": 0})
    traffic: SimulationStats = field(default_factory=SimulationStats)


class _Partitions:
    """The consumer's join state per partition, and the segments it writes."""

    def __init__(self, log_dir: Path, partitions: int, config: ConsumerConfig, topics: tuple[str, str]) -> None:
        self.log_dir = log_dir
        self.config = config
        self.topics = topics
        self.hot = HotState(config.hot_state_bytes)
        self.landed = LandedLog(log_dir)
        self.joins = [
            PartitionJoin(read_resume_state(log_dir, p), self.hot, grace_ms=config.grace_ms, dedup_ids=config.dedup_ids)
            for p in range(partitions)
        ]
        self.written = LogWritten()

    def add(self, event: SimEvent) -> None:
        partition = partition_of(event.key, len(self.joins))
        join = self.joins[partition]
        time = event.produced_ms
        if event.kind == POISON:  # the consumer dead-letters it: an offset, no row
            join.advance(False, join.feedback_next, time)
        elif event.kind == INFERENCE_EVENT:
            record = complete_inference(event.record or {})
            size = _size(record)
            joined = len(join.out.feedback)
            join.add_inference(inference_row(record, self.topics[0], partition, join.inference_next), size, time)
            self._stamp(join, joined, time)
        else:
            record = complete_feedback(event.record or {})
            joined = len(join.out.feedback)
            join.add_feedback(feedback_row(record, self.topics[1], partition, join.feedback_next), 64, time)
            self._stamp(join, joined, time)
        self.written.traffic.count(event)
        if join.buffered_rows() >= self.config.flush_rows or join.buffered_bytes >= self.config.flush_bytes:
            self.flush(partition)

    @staticmethod
    def _stamp(join: PartitionJoin, start: int, time: int) -> None:
        """Joined at record time, not the wall clock: the same traffic gives the same rows."""
        for feedback, _ in join.out.feedback[start:]:
            feedback["joined_at_ms"] = time

    def flush(self, partition: int) -> None:
        """Seal and write the partition's open segment, as the daemon's flush does."""
        join = self.joins[partition]
        joined = len(join.out.feedback)
        join.resolve_landed(self.landed.inference_rows)
        self._stamp(join, joined, join.stream_time)
        if not join.has_changes():
            return
        out = join.seal()
        for orphan in out.orphans:
            orphan["orphaned_at_ms"] = join.stream_time
        name = SegmentName(partition, join.inference_start, join.inference_next, join.feedback_start,
                           join.feedback_next)  # fmt: skip
        if name.zero_width:  # only orphans: ordered after the newest segment
            newest = newest_segment(self.log_dir, partition)
            name = dataclasses.replace(name, sequence=(newest.sequence + 1) if newest else 1)
        inference = rows_to_table(out.inference, INFERENCE_LOG)
        tables: dict[str, list[dict[str, Any]] | pa.Table] = {
            "inference": inference,
            "feedback": joined_table(out.feedback, out.inference, inference),
            "orphans": out.orphans,
        }
        write_segment(self.log_dir, name, tables, join.resume_state(dict(join.dead_letter_next)), pending=out.pending,
                      compression=self.config.compression)  # fmt: skip
        written = self.written
        written.segments += 1
        written.inference_rows += len(out.inference)
        written.feedback_rows += len(out.feedback)
        written.orphan_rows += len(out.orphans)
        for feedback, _ in out.feedback:
            written.join_paths[feedback["join_path"]] += 1
        join.committed()

    def finish(self, expire_waiting: bool) -> LogWritten:
        """Write what is buffered; with ``expire_waiting``, first let the grace pass on every partition."""
        for partition, join in enumerate(self.joins):
            if expire_waiting:
                join.expire_idle(self.config.grace_ms + 1)
            self.flush(partition)
        self.landed.close()
        return self.written


def _size(record: dict[str, Any]) -> int:
    """About the Avro size of an inference event: its texts plus a little per field."""
    texts = len(record["prompt"] or "") + sum(len(m["content"]) for m in record["messages"] or ())
    return texts + sum(len(c["text"] or "") + 64 for c in record["candidates"]) + 256


def write_log(
    traffic: Iterable[SimEvent],
    log_dir: Path,
    *,
    partitions: int = 4,
    config: ConsumerConfig | None = None,
    inference_topic: str = DEFAULT_INFERENCE_TOPIC,
    feedback_topic: str = DEFAULT_FEEDBACK_TOPIC,
    expire_waiting: bool = True,
) -> LogWritten:
    """Write ``traffic`` (SimEvents in production order) into ``log_dir`` as a consumer would.

    ``config`` supplies the consumer's grace, hot-state budget, flush limits and compression
    (default: the daemon's defaults). A log that already holds segments is continued from its
    resume point, as the daemon would; it must be bound to the same topics. Feedback still waiting
    for its inference at the end becomes an orphan (``expire_waiting``, as after ``prefpair consume
    --until-caught-up``), or stays waiting in the last segment's state, as when a consumer stops
    mid-stream and another resumes.
    """
    if partitions < 1:
        raise LogInputError("partitions", f"at least 1, got {partitions}")
    config = config if config is not None else ConsumerConfig()
    log_dir = Path(log_dir)
    bind_log_to_topics(log_dir, inference_topic, feedback_topic)
    state = _Partitions(log_dir, partitions, config, (inference_topic, feedback_topic))
    for event in traffic:
        state.add(event)
    return state.finish(expire_waiting)
