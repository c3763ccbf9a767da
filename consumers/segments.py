"""Durable segments of the Parquet log: write aside, fsync, rename; read back the resume point.

A segment is the unit of exactly-once: it holds every row derived from one partition's
offset ranges ``[start, end)`` of both topics, plus ``state.json`` with the feedback that was
still waiting for its inference at the end of the range. Offsets are committed to Kafka only
after the rename, and on assignment the daemon resumes from the newest segment's ends, so a
crash at any moment either leaves the segment whole or leaves nothing (temp dirs are ignored
by readers and swept on the next write).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prefpair.consumers.exceptions import ConsumerError, CorruptStateError, SegmentCommitError
from prefpair.durable import fsync_path, write_text_atomic
from prefpair.schemas.log import SCHEMAS, TEMP_PREFIX, SegmentName, committed_segments, partition_dir

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass
class ResumeState:
    """Where a partition continues: next offsets of both topics, waiting feedback, dead letters sent."""

    partition: int
    inference_next: int | None = None
    feedback_next: int | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    dead_letter_next: dict[int, int] = field(default_factory=dict)
    has_segments: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "partition": self.partition,
            "inference_next": self.inference_next,
            "feedback_next": self.feedback_next,
            "pending": self.pending,
            "dead_letter_next": {str(k): v for k, v in self.dead_letter_next.items()},
            "written_at_ms": int(time.time() * 1000),
        }


    @classmethod
    def from_file(cls, path: Path, partition: int, name: SegmentName | None = None) -> ResumeState:
        """The state a segment's ``state.json`` records (offsets from the segment name if given)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptStateError(path, str(exc)) from None
        return cls(
            partition=partition,
            inference_next=name.inference_end if name else data.get("inference_next"),
            feedback_next=name.feedback_end if name else data.get("feedback_next"),
            pending=list(data.get("pending", [])),
            dead_letter_next={int(k): int(v) for k, v in data.get("dead_letter_next", {}).items()},
            has_segments=True,
        )


LOG_FILE = "LOG.json"
"""Names the topics a log holds; its segment names carry partitions and offsets, not topics."""


def bind_log_to_topics(log_dir: Path, inference_topic: str, feedback_topic: str) -> None:
    """Record which topics ``log_dir`` holds, or refuse a log that holds other topics' offsets."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_FILE
    wanted = {"inference_topic": inference_topic, "feedback_topic": feedback_topic}
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptStateError(path, str(exc)) from None
        found = {k: recorded.get(k) for k in wanted}
        if found != wanted:
            raise ConsumerError(
                f"{log_dir} holds {found['inference_topic']} / {found['feedback_topic']}, not "
                f"{inference_topic} / {feedback_topic}: its offsets would be wrong here; use another --home"
            )
        return
    write_text_atomic(path, json.dumps({**wanted, "layout": STATE_VERSION}, indent=2))
    fsync_path(log_dir)


def read_resume_state(log_dir: Path, partition: int) -> ResumeState:
    """The resume point recorded by the newest committed segment of ``partition``."""
    segments = list(committed_segments(log_dir, partition))
    if not segments:
        return ResumeState(partition)
    name, path = max(segments, key=lambda item: item[0].resume_key)
    return ResumeState.from_file(path / STATE_FILE, partition, name)


def newest_segment(log_dir: Path, partition: int) -> SegmentName | None:
    segments = [segment for segment, _ in committed_segments(log_dir, partition)]
    return max(segments, key=lambda segment: segment.resume_key) if segments else None


def write_segment(
    log_dir: Path,
    name: SegmentName,
    tables: dict[str, list[dict[str, Any]]],
    state: ResumeState,
    *,
    compression: str = "snappy",
) -> Path:
    """Write one segment from rows, atomically, and return its final path.

    Refuses (SegmentCommitError) when the partition's newest segment does not end where this one
    starts: another owner (after a rebalance) has moved on, and these rows are its to write.
    """

    def fill(temp: Path) -> None:
        for table, rows in tables.items():
            if rows:
                target = temp / f"{table}.parquet"
                pq.write_table(rows_to_table(rows, SCHEMAS[table]), target, compression=_codec(compression))
                fsync_path(target)

    return _commit(log_dir, name, fill, state, check_continuity=True)


def write_segment_files(
    log_dir: Path,
    name: SegmentName,
    tables: dict[str, list[Path]],
    state: ResumeState,
    *,
    compression: str = "snappy",
) -> Path:
    """Write one segment by concatenating committed Parquet files (compaction), atomically."""

    def fill(temp: Path) -> None:
        for table, files in tables.items():
            target = temp / f"{table}.parquet"
            with pq.ParquetWriter(target, SCHEMAS[table], compression=_codec(compression)) as writer:
                for file in files:
                    writer.write_table(pq.read_table(file, schema=SCHEMAS[table]))
            fsync_path(target)

    return _commit(log_dir, name, fill, state, check_continuity=False)


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table of ``schema``; via one struct array, ~9x faster than ``Table.from_pylist``."""
    array = pa.array(rows, type=pa.struct(list(schema)))
    return pa.Table.from_struct_array(array).cast(schema)


def write_segment_tables(
    log_dir: Path,
    name: SegmentName,
    tables: Mapping[str, pa.Table],
    state: ResumeState | None = None,
    *,
    compression: str = "snappy",
) -> Path:
    """Write one segment from Arrow tables (cast to the log schemas; empty ones skipped), atomically.

    For tools that build logs in bulk (synthetic logs for tests, demos and benchmarks); the default
    state records the segment's ends as the resume point and nothing waiting.
    """

    def fill(temp: Path) -> None:
        for table, data in tables.items():
            if data.num_rows:
                target = temp / f"{table}.parquet"
                schema = SCHEMAS[table]
                pq.write_table(data if data.schema.equals(schema) else data.cast(schema), target,
                               compression=_codec(compression))  # fmt: skip
                fsync_path(target)

    if state is None:
        state = ResumeState(name.partition, name.inference_end, name.feedback_end, has_segments=True)
    return _commit(log_dir, name, fill, state, check_continuity=False)


def _codec(compression: str) -> str | None:
    return None if compression == "none" else compression


def _commit(
    log_dir: Path, name: SegmentName, fill: Callable[[Path], None], state: ResumeState, *, check_continuity: bool
) -> Path:
    parent = partition_dir(log_dir, name.partition)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / name.dirname
    temp = parent / f"{TEMP_PREFIX}{name.dirname}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        fill(temp)
        state_path = temp / STATE_FILE
        state_path.write_text(json.dumps(state.to_json(), separators=(",", ":")), encoding="utf-8")
        fsync_path(state_path)
        fsync_path(temp)
        if check_continuity:
            _check_continuity(log_dir, name)
        try:
            os.rename(temp, final)
        except OSError as exc:
            raise SegmentCommitError(final, f"already committed by another writer ({exc.strerror})") from None
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def _check_continuity(log_dir: Path, name: SegmentName) -> None:
    existing = [segment for segment, _ in committed_segments(log_dir, name.partition)]
    if not existing:
        return
    newest = max(existing, key=lambda segment: segment.resume_key)
    if (newest.inference_end, newest.feedback_end) != (name.inference_start, name.feedback_start):
        raise SegmentCommitError(
            name.path(log_dir),
            f"the log of partition {name.partition} ends at inference {newest.inference_end}, "
            f"feedback {newest.feedback_end}, not where this segment starts "
            f"({name.inference_start}, {name.feedback_start}): another consumer owns it now",
        )


def sweep_temporaries(log_dir: Path, partition: int, older_than_s: float = 60.0) -> int:
    """Remove temp dirs a crashed writer left behind; returns how many."""
    parent = partition_dir(log_dir, partition)
    if not parent.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_s
    for child in parent.iterdir():
        if child.name.startswith(TEMP_PREFIX) and child.stat().st_mtime < cutoff:
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed
