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
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from prefpair.consumers.exceptions import ConsumerError
from prefpair.consumers.segments import SEGMENT_FILES, STATE_FILE, write_segment_files
from prefpair.schemas.log import PARTITION_DIR, TABLES, SegmentName, committed_segments

log = logging.getLogger(__name__)

DEFAULT_TARGET_ROWS = 200_000
DEFAULT_DELETE_AFTER_S = 600.0
LOCK_FILE = ".compact.lock"


@dataclass(frozen=True)
class CompactionReport:
    partitions: int
    segments_before: int
    segments_after: int
    rows: int
    parts_deleted: int


def _runs(segments: list[tuple[SegmentName, Path]], min_rows: int) -> list[list[tuple[SegmentName, Path]]]:
    runs: list[list[tuple[SegmentName, Path]]] = []
    current: list[tuple[SegmentName, Path]] = []
    for name, path in segments:
        if name.zero_width:
            continue
        if current and (current[-1][0].inference_end, current[-1][0].feedback_end) == (
            name.inference_start,
            name.feedback_start,
        ) and _rows(current) < min_rows:
            current.append((name, path))
        else:
            if len(current) > 1:
                runs.append(current)
            current = [(name, path)]
    if len(current) > 1:
        runs.append(current)
    return runs


def _rows(run: list[tuple[SegmentName, Path]]) -> int:
    total = 0
    for _, path in run:
        for table in TABLES:
            file = path / f"{table}.parquet"
            if file.exists():
                total += pq.ParquetFile(file).metadata.num_rows
    return total


def compact(
    log_dir: Path,
    *,
    target_rows: int = DEFAULT_TARGET_ROWS,
    compression: str = "snappy",
    delete_after_s: float = DEFAULT_DELETE_AFTER_S,
) -> CompactionReport:
    """Merge runs of small contiguous segments, partition by partition; returns what changed."""
    with _lock(log_dir):
        deleted = _delete_covered(log_dir, delete_after_s)
        by_partition: dict[int, list[tuple[SegmentName, Path]]] = {}
        for name, path in committed_segments(log_dir):
            by_partition.setdefault(name.partition, []).append((name, path))
        before = sum(len(v) for v in by_partition.values())
        after = before
        rows = 0
        for partition, segments in sorted(by_partition.items()):
            segments = sorted(segments, key=lambda item: item[0].resume_key)[:-1]  # never the newest
            for run in _runs(segments, target_rows):
                first, last = run[0][0], run[-1][0]
                merged = SegmentName(
                    partition, first.inference_start, last.inference_end, first.feedback_start, last.feedback_end
                )
                tables = {}
                for table in SEGMENT_FILES:  # the log's tables and the consumer's pending file
                    files = [path / f"{table}.parquet" for _, path in run if (path / f"{table}.parquet").exists()]
                    if files:
                        tables[table] = files
                write_segment_files(log_dir, merged, tables, run[-1][1] / STATE_FILE, compression=compression)
                rows += _rows([(merged, merged.path(log_dir))])
                after -= len(run) - 1
                log.info("partition %d: merged %d segments into %s", partition, len(run), merged.dirname)
        if delete_after_s <= 0:
            deleted += _delete_covered(log_dir, 0)
    return CompactionReport(len(by_partition), before, after, rows, deleted)


@contextmanager
def _lock(log_dir: Path) -> Iterator[None]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConsumerError(f"another `prefpair compact` is running on {log_dir}") from None
        yield


def _delete_covered(log_dir: Path, older_than_s: float) -> int:
    """Delete merged parts whose merged segment has existed for ``older_than_s`` seconds."""
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


def _covers(outer: SegmentName, inner: SegmentName) -> bool:
    return (
        outer.inference_start <= inner.inference_start
        and inner.inference_end <= outer.inference_end
        and outer.feedback_start <= inner.feedback_start
        and inner.feedback_end <= outer.feedback_end
    )
