"""Merge small segments of the log into bigger ones, keeping offsets ranges and exactly-once.

Runs of contiguous segments of a partition (each starts where the previous ended) are
concatenated into one segment named by the run's first starts and last ends, carrying the last
part's ``state.json``. The merged segment is renamed into place *before* the parts are
deleted; readers skip segments a wider one covers (:func:`prefpair.schemas.log.committed_segments`),
so a reader, or a crash, between the two steps never sees a row twice. Zero-width segments
(orphans written on a quiet stream) are left as they are.

Safe beside a running consumer: it only touches segments older than the newest one of each
partition, which is the only place a consumer appends. Safe beside readers too: merged parts are
only hidden at first (covered), and deleted by a later run once ``delete_after_s`` has passed, so a
reader that listed them a moment before the merge can still open them. A lock file keeps two
compactions of one log apart.

On object storage the merged segment is committed like any other (its files, then its
``state.json`` marker, created conditionally), the lock is an object created conditionally
(``.compact.lock``; one older than :data:`STALE_LOCK_S` is a crashed run's and is taken over), and
the grace before parts are deleted goes by their covering segment's marker LastModified.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefpair.consumers.exceptions import ConsumerError
from prefpair.consumers.segments import (
    SEGMENT_FILES,
    STATE_FILE,
    LogDir,
    StoredSegment,
    local_dir,
    log_location,
    segment_location,
    segments_with_files,
    write_segment_files,
)
from prefpair.schemas.log import PARTITION_DIR, TABLES, SegmentName, committed_segments
from prefpair.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_TARGET_ROWS = 200_000
DEFAULT_DELETE_AFTER_S = 600.0
LOCK_FILE = ".compact.lock"
STALE_LOCK_S = 3600.0
"""On object storage, a lock object older than this was left by a crashed compaction."""


@dataclass(frozen=True)
class CompactionReport:
    partitions: int
    segments_before: int
    segments_after: int
    rows: int
    parts_deleted: int


class _RowCounter:
    """Rows of the log tables in a segment, read from Parquet footers once per segment."""

    def __init__(self) -> None:
        self._rows: dict[SegmentName, int] = {}

    def __call__(self, segment: StoredSegment) -> int:
        if segment.name not in self._rows:
            self._rows[segment.name] = sum(
                _parquet_rows(segment.file(f"{table}.parquet")) for table in TABLES if segment.has(f"{table}.parquet")
            )
        return self._rows[segment.name]


def _parquet_rows(file: Path | Storage) -> int:
    local = local_dir(file)
    if local is not None:
        return int(pq.ParquetFile(local).metadata.num_rows)
    return int(pq.ParquetFile(pa.BufferReader(file.read_bytes())).metadata.num_rows)


def _runs(segments: list[StoredSegment], min_rows: int, rows: _RowCounter) -> list[list[StoredSegment]]:
    runs: list[list[StoredSegment]] = []
    current: list[StoredSegment] = []
    for segment in segments:
        name = segment.name
        if name.zero_width:
            continue
        if current and (current[-1].name.inference_end, current[-1].name.feedback_end) == (
            name.inference_start,
            name.feedback_start,
        ) and sum(rows(part) for part in current) < min_rows:
            current.append(segment)
        else:
            if len(current) > 1:
                runs.append(current)
            current = [segment]
    if len(current) > 1:
        runs.append(current)
    return runs


def compact(
    log_dir: LogDir,
    *,
    target_rows: int = DEFAULT_TARGET_ROWS,
    compression: str = "snappy",
    delete_after_s: float = DEFAULT_DELETE_AFTER_S,
) -> CompactionReport:
    """Merge runs of small contiguous segments, partition by partition; returns what changed."""
    log_dir = log_location(log_dir)
    rows = _RowCounter()
    with _lock(log_dir):
        deleted = _delete_covered(log_dir, delete_after_s)
        by_partition: dict[int, list[StoredSegment]] = {}
        for segment in segments_with_files(log_dir):
            by_partition.setdefault(segment.name.partition, []).append(segment)
        before = sum(len(v) for v in by_partition.values())
        after = before
        merged_rows = 0
        for partition, segments in sorted(by_partition.items()):
            segments = sorted(segments, key=lambda item: item.name.resume_key)[:-1]  # never the newest
            for run in _runs(segments, target_rows, rows):
                first, last = run[0].name, run[-1].name
                merged = SegmentName(
                    partition, first.inference_start, last.inference_end, first.feedback_start, last.feedback_end
                )
                tables: dict[str, list[Path | Storage]] = {}
                for table in SEGMENT_FILES:  # the log's tables and the consumer's pending file
                    files = [part.file(f"{table}.parquet") for part in run if part.has(f"{table}.parquet")]
                    if files:
                        tables[table] = files
                write_segment_files(log_dir, merged, tables, run[-1].file(STATE_FILE), compression=compression)
                merged_rows += sum(rows(part) for part in run)
                after -= len(run) - 1
                log.info("partition %d: merged %d segments into %s", partition, len(run), merged.dirname)
        if delete_after_s <= 0:
            deleted += _delete_covered(log_dir, 0)
    return CompactionReport(len(by_partition), before, after, merged_rows, deleted)


@contextmanager
def _lock(log_dir: Path | Storage) -> Iterator[None]:
    if isinstance(log_dir, Storage):
        with _stored_lock(log_dir):
            yield
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConsumerError(f"another `prefpair compact` is running on {log_dir}") from None
        yield


@contextmanager
def _stored_lock(root: Storage) -> Iterator[None]:
    lock = root / LOCK_FILE
    owner = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "at_ms": int(time.time() * 1000)})
    try:
        lock.write_text(owner, exclusive=True)
    except FileExistsError:
        taken = root.list_modified().get(LOCK_FILE, time.time())
        if time.time() - taken < STALE_LOCK_S:
            raise ConsumerError(
                f"another `prefpair compact` is running on {root} (or crashed less than {STALE_LOCK_S:.0f} s ago: "
                f"delete {lock} if none runs)"
            ) from None
        log.warning("taking over the stale compaction lock %s", lock)
        lock.delete()
        try:
            lock.write_text(owner, exclusive=True)
        except FileExistsError:
            raise ConsumerError(f"another `prefpair compact` is running on {root}") from None
    try:
        yield
    finally:
        lock.delete()


log_lock = _lock
"""The lock of compaction, erasure and retention on a log: one rewrite of a log at a time."""


def _delete_covered(log_dir: Path | Storage, older_than_s: float) -> int:
    """Delete merged parts whose merged segment has existed for ``older_than_s`` seconds."""
    if isinstance(log_dir, Storage):
        return _delete_covered_stored(log_dir, older_than_s)
    visible = {path for _, path in committed_segments(log_dir)}
    cutoff = time.time() - older_than_s
    deleted = 0
    for parent in sorted(log_dir.iterdir()) if log_dir.is_dir() else []:
        if not PARTITION_DIR.match(parent.name):
            continue
        kept = [(SegmentName.parse(p), p) for p in visible if p.parent == parent]
        for child in parent.iterdir():
            name = SegmentName.parse(child)
            if name is None or child in visible:
                continue
            covering = [p for other, p in kept if other is not None and _covers(other, name)]
            if covering and all(p.stat().st_mtime <= cutoff for p in covering):
                shutil.rmtree(child, ignore_errors=True)
                deleted += 1
    return deleted


def _delete_covered_stored(root: Storage, older_than_s: float) -> int:
    """The same on object storage: committed (marked) folders that a visible segment covers."""
    visible = {name for name, _ in committed_segments(root)}
    marked: dict[SegmentName, float] = {}
    for key, modified in root.list_modified().items():
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == STATE_FILE:
            name = SegmentName.parse_names(parts[0], parts[1])
            if name is not None:
                marked[name] = modified
    cutoff = time.time() - older_than_s
    deleted = 0
    for name in sorted(marked):
        if name in visible:
            continue
        covering = [other for other in visible if other.partition == name.partition and _covers(other, name)]
        if covering and all(marked.get(other, time.time()) <= cutoff for other in covering):
            folder = segment_location(root, name)
            assert isinstance(folder, Storage)
            (folder / STATE_FILE).delete()  # first: a half-deleted part is no longer committed
            folder.delete()
            deleted += 1
    return deleted


def _covers(outer: SegmentName, inner: SegmentName) -> bool:
    return (
        outer.inference_start <= inner.inference_start
        and inner.inference_end <= outer.inference_end
        and outer.feedback_start <= inner.feedback_start
        and inner.feedback_end <= outer.feedback_end
    )
