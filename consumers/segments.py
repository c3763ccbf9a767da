"""Durable segments of the Parquet log: write aside, fsync, rename; read back the resume point.

A segment is the unit of exactly-once: it holds every row derived from one partition's
offset ranges ``[start, end)`` of both topics, plus ``state.json`` with the feedback that was
still waiting for its inference at the end of the range. Offsets are committed to Kafka only
after the rename, and on assignment the daemon resumes from the newest segment's ends, so a
crash at any moment either leaves the segment whole or leaves nothing (temp dirs are ignored
by readers and swept on the next write).

On object storage (``s3://``, :class:`~prefpair.storage.Storage`) there is no rename: the segment's
Parquet files are put into its folder first, continuity is checked, and ``state.json`` is put last
with ``If-None-Match: *``: the commit marker (:data:`~prefpair.schemas.log.COMMIT_MARKER`), which
exactly one writer of a segment can create. Readers ignore folders without it; a later owner of
the same segment replaces what a crashed writer left there, and the sweep on assignment deletes
unmarked folders whose newest object is older than a minute (by LastModified). The same functions take a local
directory or storage, so the daemon never asks which it has.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import pyarrow as pa
import pyarrow.parquet as pq

from prefpair.consumers.exceptions import ConsumerError, CorruptStateError, SegmentCommitError
from prefpair.durable import fsync_path, write_text_atomic
from prefpair.schemas.log import (
    COMMIT_MARKER,
    FEEDBACK_LOG,
    INFERENCE_LOG,
    ORPHAN_LOG,
    SCHEMAS,
    SEGMENT_PREFIX,
    TEMP_PREFIX,
    SegmentName,
    committed_segments,
    partition_dir,
)
from prefpair.storage import LocalStorage, Storage, read_all

log = logging.getLogger(__name__)

STATE_FILE = COMMIT_MARKER
LogDir = Path | Storage
"""Where a log lives: a local directory (or :class:`~prefpair.storage.LocalStorage`), or object storage."""


def local_dir(log_dir: LogDir) -> Path | None:
    """The directory of a local log; None for a log on object storage."""
    if isinstance(log_dir, Path):
        return log_dir
    return log_dir.path if isinstance(log_dir, LocalStorage) else None


def log_location(log_dir: LogDir) -> Path | Storage:
    """A local log as its directory (the rename path), object storage as it is."""
    local = local_dir(log_dir)
    return local if local is not None else log_dir


def segment_location(log_dir: LogDir, name: SegmentName) -> Path | Storage:
    """Where the segment ``name`` is (or would be) in the log."""
    local = local_dir(log_dir)
    if local is not None:
        return name.path(local)
    assert isinstance(log_dir, Storage)
    return log_dir / _relative(name)


def where(file: Path | Storage) -> Path | str:
    """How errors name a file of the log: its local path, or its ``s3://`` URL."""
    return file if isinstance(file, Path) else file.url


def read_parquet(file: Path | Storage, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet file of the log: a local path, or an object read whole (one GET)."""
    local = local_dir(file)
    if local is not None:
        return pq.read_table(local, columns=columns, schema=schema)
    return pq.read_table(pa.BufferReader(file.read_bytes()), columns=columns, schema=schema)


def read_parquets(files: Sequence[Path | Storage], columns: list[str] | None = None) -> list[pa.Table]:
    """Parquet files of the log, in order; objects on storage are fetched concurrently (one batch)."""
    contents = iter(read_all([file for file in files if isinstance(file, Storage) and local_dir(file) is None]))
    return [
        pq.read_table(local, columns=columns) if (local := local_dir(file)) is not None
        else pq.read_table(pa.BufferReader(next(contents)), columns=columns)
        for file in files
    ]  # fmt: skip


@dataclass(frozen=True)
class StoredSegment:
    """A committed segment of a partition and which files it holds."""

    name: SegmentName
    folder: Path | Storage
    files: frozenset[str] | None
    """File names from a listing (object storage); None: ask the disk."""

    def has(self, file: str) -> bool:
        if self.files is None:
            return (self.folder / file).exists()
        return file in self.files

    def file(self, file: str) -> Path | Storage:
        return self.folder / file


def segments_with_files(log_dir: LogDir, partition: int | None = None) -> list[StoredSegment]:
    """Committed segments (of ``partition``, or all) in order. On object storage, from two listings:
    the committed segments first, then their files (see :mod:`prefpair.schemas.log`)."""
    local = local_dir(log_dir)
    if local is not None:
        return [StoredSegment(name, path, None) for name, path in committed_segments(local, partition)]
    assert isinstance(log_dir, Storage)
    segments = list(committed_segments(log_dir, partition))
    if not segments:
        return []
    scope = "" if partition is None else partition_dir(Path(), partition).name + "/"
    files: dict[str, set[str]] = {}
    for key in (log_dir / scope).list_files() if scope else log_dir.list_files():
        folder, _, file = (scope + key).rpartition("/")
        files.setdefault(folder, set()).add(file)
    return [StoredSegment(name, folder, frozenset(files.get(_relative(name), ()))) for name, folder in segments]


def _relative(name: SegmentName) -> str:
    """``partition=<n>/<segment>``: where a segment is below the log."""
    return f"{partition_dir(Path(), name.partition).name}/{name.dirname}"


PENDING = "pending"
STATE_VERSION = 2
"""2: waiting feedback in ``pending.parquet`` (new rows only) and ``pending_from``; 1: all of it in state.json."""

PENDING_LOG = pa.schema(
    [*(f for f in ORPHAN_LOG if f.name not in ("orphaned_at_ms", "reason")),
     pa.field("record_timestamp_ms", pa.int64(), nullable=False)]
)  # fmt: skip
"""Feedback that started waiting for its inference in a segment: the feedback row and its record timestamp.

Consumer state, not part of the log readers see (:data:`prefpair.schemas.log.TABLES`)."""

ERASED = "erased"
ERASED_LOG = pa.schema([pa.field("table", pa.string(), nullable=False), pa.field("offset", pa.int64(), nullable=False)])
"""Tombstones of rows an erasure removed (:mod:`prefpair.consumers.erasure`): their table and offset, nothing else.
Resume counts a tombstoned feedback offset as resolved, or (``pending``) as waiting."""

SEGMENT_FILES = {**SCHEMAS, "pending": PENDING_LOG, ERASED: ERASED_LOG}
"""Every Parquet file a segment may hold (``<name>.parquet``) and its schema; compaction merges them all."""


@dataclass(eq=False, slots=True)
class PendingItem:
    """A feedback row waiting for its inference, with its record timestamp and offset."""

    row: dict[str, Any]
    timestamp_ms: int
    offset: int
    expired_at_ms: int = 0


@dataclass
class ResumeState:
    """Where a partition continues: next offsets of both topics, waiting feedback, dead letters sent.

    ``pending`` is only filled when read back (:func:`read_resume_state`); a segment stores its
    new waiting rows in ``pending.parquet`` and here only ``pending_from``, the smallest waiting offset.
    """

    partition: int
    inference_next: int | None = None
    feedback_next: int | None = None
    pending: list[PendingItem] = field(default_factory=list)
    pending_from: int | None = None
    pending_count: int = 0
    stream_time_ms: int = 0
    dead_letter_next: dict[int, int] = field(default_factory=dict)
    has_segments: bool = False
    pending_stored: bool = True
    """False when ``pending`` came from a version-1 state.json: the next segment must store it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "partition": self.partition,
            "inference_next": self.inference_next,
            "feedback_next": self.feedback_next,
            "pending_from": self.pending_from,
            "pending_count": self.pending_count,
            "stream_time_ms": self.stream_time_ms,
            "dead_letter_next": {str(k): v for k, v in self.dead_letter_next.items()},
            "written_at_ms": int(time.time() * 1000),
        }

    @classmethod
    def from_file(cls, path: Path | Storage, partition: int, name: SegmentName | None = None) -> ResumeState:
        """The state a segment's ``state.json`` records (offsets from the segment name if given).

        Waiting feedback is not read here (see :func:`read_resume_state`), except from version 1,
        which kept all of it in the file.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8") if isinstance(path, Path) else path.read_text())
        except (OSError, ValueError) as exc:
            raise CorruptStateError(where(path), str(exc)) from None
        legacy = [
            PendingItem(item["row"], int(item["arrived_ms"]), int(item["row"]["feedback_offset"]))
            for item in data.get("pending", [])
        ]
        return cls(
            partition=partition,
            inference_next=name.inference_end if name else data.get("inference_next"),
            feedback_next=name.feedback_end if name else data.get("feedback_next"),
            pending=legacy,
            pending_from=data.get("pending_from"),
            pending_count=int(data.get("pending_count", len(legacy))),
            stream_time_ms=int(data.get("stream_time_ms", 0)),
            dead_letter_next={int(k): int(v) for k, v in data.get("dead_letter_next", {}).items()},
            has_segments=True,
            pending_stored=not legacy,
        )


LOG_FILE = "LOG.json"
"""Names the topics a log holds; its segment names carry partitions and offsets, not topics."""


def bind_log_to_topics(log_dir: LogDir, inference_topic: str, feedback_topic: str) -> str:
    """Record which topics ``log_dir`` holds, or refuse a log that holds other topics' offsets.

    Returns the log's id: it names the pipeline (this log and the group that writes it), so that
    dead letters of two pipelines on the same topics are told apart. Logs written before ids
    existed get one here. On object storage LOG.json is created conditionally: of two instances
    starting at once, one creates it and the other reads it.
    """
    wanted = {"inference_topic": inference_topic, "feedback_topic": feedback_topic}
    local = local_dir(log_dir)
    if local is None:
        assert isinstance(log_dir, Storage)
        return _bind_stored(log_dir, wanted)
    local.mkdir(parents=True, exist_ok=True)
    path = local / LOG_FILE
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptStateError(path, str(exc)) from None
        _check_binding(local, recorded, wanted)
        if isinstance(recorded.get("log_id"), str):
            return str(recorded["log_id"])
        log_id = uuid.uuid4().hex
        write_text_atomic(path, json.dumps({**recorded, "log_id": log_id}, indent=2))
        return log_id
    log_id = uuid.uuid4().hex
    write_text_atomic(path, json.dumps({**wanted, "layout": STATE_VERSION, "log_id": log_id}, indent=2))
    fsync_path(local)
    return log_id


def _bind_stored(root: Storage, wanted: dict[str, str]) -> str:
    marker = root / LOG_FILE
    try:
        text = marker.read_text()
    except FileNotFoundError:
        log_id = uuid.uuid4().hex
        try:
            marker.write_text(json.dumps({**wanted, "layout": STATE_VERSION, "log_id": log_id}, indent=2),
                              exclusive=True)  # fmt: skip
            return log_id
        except FileExistsError:  # another instance bound it a moment ago: go by its file
            text = marker.read_text()
    try:
        recorded = json.loads(text)
    except ValueError as exc:
        raise CorruptStateError(marker.url, str(exc)) from None
    _check_binding(root, recorded, wanted)
    if not isinstance(recorded.get("log_id"), str):
        raise CorruptStateError(marker.url, "has no log_id")
    return str(recorded["log_id"])


def _check_binding(log_dir: Path | Storage, recorded: dict[str, Any], wanted: dict[str, str]) -> None:
    found = {k: recorded.get(k) for k in wanted}
    if found != wanted:
        raise ConsumerError(
            f"{log_dir} holds {found['inference_topic']} / {found['feedback_topic']}, not "
            f"{wanted['inference_topic']} / {wanted['feedback_topic']}: its offsets would be wrong here; "
            "use another --home or --log-dir"
        )


def read_resume_state(log_dir: LogDir, partition: int) -> ResumeState:
    """The resume point recorded by the newest committed segment of ``partition``, with what waits.

    Waiting feedback is rebuilt from the ``pending.parquet`` files of the segments that can hold
    any (those ending past ``pending_from``), less what those segments joined or orphaned.
    """
    segments = sorted(segments_with_files(log_dir, partition), key=lambda item: item.name.resume_key)
    if not segments:
        return ResumeState(partition)
    newest = segments[-1]
    path = newest.file(STATE_FILE)
    state = ResumeState.from_file(path, partition, newest.name)
    start = state.pending_from
    if start is None or not state.pending_stored:
        return state
    waiting: dict[int, PendingItem] = {}
    resolved: set[int] = set()
    relevant = [segment for segment in segments if segment.name.feedback_end > start]
    pending_files = [s.file(f"{PENDING}.parquet") for s in relevant if s.has(f"{PENDING}.parquet")]
    for table in read_parquets(pending_files):
        for row in table.to_pylist():
            offset = row["feedback_offset"]
            if offset >= start:
                timestamp = row.pop("record_timestamp_ms")
                waiting[offset] = PendingItem(row, timestamp, offset)
    done_files = [s.file(f"{t}.parquet") for s in relevant for t in ("feedback", "orphans") if s.has(f"{t}.parquet")]
    for table in read_parquets(done_files, columns=["feedback_offset"]):
        resolved.update(table.column(0).to_pylist())
    erased_waiting: set[int] = set()
    for table in read_parquets([s.file(f"{ERASED}.parquet") for s in relevant if s.has(f"{ERASED}.parquet")]):
        for kind, offset in zip(table.column("table").to_pylist(), table.column("offset").to_pylist(), strict=True):
            if kind in ("feedback", "orphans"):
                resolved.add(offset)
            elif kind == PENDING and offset >= start:
                erased_waiting.add(offset)
    state.pending = [item for offset, item in sorted(waiting.items()) if offset not in resolved]
    if len(state.pending) + len(erased_waiting - resolved) != state.pending_count:
        raise CorruptStateError(
            where(path),
            f"records {state.pending_count} waiting feedback events from offset {start}, "
            f"but the segments' pending files hold {len(state.pending)}",
        )
    return state


def newest_segment(log_dir: LogDir, partition: int) -> SegmentName | None:
    segments = [segment for segment, _ in committed_segments(log_location(log_dir), partition)]
    return max(segments, key=lambda segment: segment.resume_key) if segments else None


@overload
def write_segment(
    log_dir: Path,
    name: SegmentName,
    tables: dict[str, list[dict[str, Any]] | pa.Table],
    state: ResumeState,
    *,
    pending: Sequence[PendingItem] = (),
    compression: str = "snappy",
) -> Path: ...
@overload
def write_segment(
    log_dir: Storage,
    name: SegmentName,
    tables: dict[str, list[dict[str, Any]] | pa.Table],
    state: ResumeState,
    *,
    pending: Sequence[PendingItem] = (),
    compression: str = "snappy",
) -> Path | Storage: ...
def write_segment(
    log_dir: LogDir,
    name: SegmentName,
    tables: dict[str, list[dict[str, Any]] | pa.Table],
    state: ResumeState,
    *,
    pending: Sequence[PendingItem] = (),
    compression: str = "snappy",
) -> Path | Storage:
    """Write one segment from rows (and the feedback that started waiting in it), atomically.

    Refuses (SegmentCommitError) when the partition's newest segment does not end where this one
    starts: another owner (after a rebalance) has moved on, and these rows are its to write.
    """

    def fill(temp: Path, sync: bool) -> None:
        for table, rows in tables.items():
            if len(rows):
                target = temp / f"{table}.parquet"
                data = rows if isinstance(rows, pa.Table) else rows_to_table(rows, SCHEMAS[table])
                pq.write_table(data, target, compression=_codec(compression))
                if sync:
                    fsync_path(target)
        if pending:
            rows = [{**item.row, "record_timestamp_ms": item.timestamp_ms} for item in pending]
            target = temp / f"{PENDING}.parquet"
            pq.write_table(rows_to_table(rows, PENDING_LOG), target, compression=_codec(compression))
            if sync:
                fsync_path(target)

    return _commit(log_dir, name, fill, state, check_continuity=True)


def write_segment_files(
    log_dir: LogDir,
    name: SegmentName,
    tables: dict[str, list[Path | Storage]],
    state_file: Path | Storage,
    *,
    compression: str = "snappy",
) -> Path | Storage:
    """Write one segment by concatenating committed Parquet files (compaction), atomically.

    ``state_file`` (the last part's ``state.json``) is copied as it is, whatever its version.
    """

    def fill(temp: Path, sync: bool) -> None:
        for table, files in tables.items():
            target = temp / f"{table}.parquet"
            schema = SEGMENT_FILES[table]
            with pq.ParquetWriter(target, schema, compression=_codec(compression)) as writer:
                for file in files:
                    writer.write_table(read_parquet(file, schema=schema))
            if sync:
                fsync_path(target)

    try:
        state = state_file.read_text(encoding="utf-8") if isinstance(state_file, Path) else state_file.read_text()
    except OSError as exc:
        raise CorruptStateError(where(state_file), str(exc)) from None
    return _commit(log_dir, name, fill, state, check_continuity=False)


def write_segment_tables(
    log_dir: LogDir, name: SegmentName, tables: dict[str, pa.Table], state_text: str, *, compression: str = "snappy"
) -> Path | Storage:
    """Write one segment from tables of :data:`SEGMENT_FILES` and a ``state.json`` text, atomically
    (a rewrite of committed ranges: erasure, retention; no continuity check, the ranges exist)."""

    def fill(temp: Path, sync: bool) -> None:
        for table, data in tables.items():
            target = temp / f"{table}.parquet"
            pq.write_table(data.cast(SEGMENT_FILES[table]), target, compression=_codec(compression))
            if sync:
                fsync_path(target)

    return _commit(log_dir, name, fill, state_text, check_continuity=False)


JoinedPair = tuple[dict[str, Any], dict[str, Any]]
"""A feedback row (with ``joined_at_ms`` and ``join_path``) and the inference row it joined."""

_JOINED_FROM_FEEDBACK = pa.schema(
    [f for f in FEEDBACK_LOG if f.name not in INFERENCE_LOG.names or f.name == "request_id"]
)
_JOINED_FROM_INFERENCE = [f.name for f in FEEDBACK_LOG if f.name not in _JOINED_FROM_FEEDBACK.names]


def joined_table(pairs: list[JoinedPair], inference_rows: list[dict[str, Any]], inference_table: pa.Table) -> pa.Table:
    """The FEEDBACK_LOG table of joined pairs; each inference row is converted to Arrow once.

    ``inference_rows`` are the segment's own inference rows and ``inference_table`` the same as
    Arrow (written anyway as its inference table): their columns are taken from there; inference
    rows from earlier segments (hot or landed joins) are converted here, once each.
    """
    position = {id(row): i for i, row in enumerate(inference_rows)}
    others: list[dict[str, Any]] = []
    indices: list[int] = []
    for _, inference in pairs:
        i = position.get(id(inference))
        if i is None:
            i = position[id(inference)] = len(inference_rows) + len(others)
            others.append(inference)
        indices.append(i)
    inference = inference_table
    if others:
        inference = pa.concat_tables([inference, rows_to_table(others, INFERENCE_LOG)])
    inference = inference.select(_JOINED_FROM_INFERENCE).take(pa.array(indices, type=pa.int64()))
    feedback = rows_to_table([f for f, _ in pairs], _JOINED_FROM_FEEDBACK)
    columns = {name: feedback.column(name) for name in feedback.column_names}
    columns.update({name: inference.column(name) for name in inference.column_names})
    return pa.Table.from_arrays([columns[f.name] for f in FEEDBACK_LOG], schema=FEEDBACK_LOG)


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table of ``schema``; via one struct array, ~9x faster than ``Table.from_pylist``."""
    array = pa.array(rows, type=pa.struct(list(schema)))
    return pa.Table.from_struct_array(array).cast(schema)


def _codec(compression: str) -> str | None:
    return None if compression == "none" else compression


Fill = Callable[[Path, bool], None]
"""Writes a segment's Parquet files into a local folder (and fsyncs each when told to)."""


def _commit(
    log_dir: LogDir, name: SegmentName, fill: Fill, state: ResumeState | str, *, check_continuity: bool
) -> Path | Storage:
    text = state if isinstance(state, str) else json.dumps(state.to_json(), separators=(",", ":"))
    local = local_dir(log_dir)
    if local is None:
        assert isinstance(log_dir, Storage)
        return _commit_stored(log_dir, name, fill, text, check_continuity=check_continuity)
    return _commit_local(local, name, fill, text, check_continuity=check_continuity)


def _commit_local(log_dir: Path, name: SegmentName, fill: Fill, text: str, *, check_continuity: bool) -> Path:
    parent = partition_dir(log_dir, name.partition)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / name.dirname
    temp = parent / f"{TEMP_PREFIX}{name.dirname}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        fill(temp, True)
        state_path = temp / STATE_FILE
        state_path.write_text(text, encoding="utf-8")
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


def _commit_stored(root: Storage, name: SegmentName, fill: Fill, text: str, *, check_continuity: bool) -> Storage:
    """Put the files, check continuity, then create the marker: the one step a second writer loses.

    Files of an abandoned attempt at the same segment (no marker) are replaced or deleted first,
    so the committed folder holds exactly this writer's files. The folder is listed right before
    the upload: a marker there means the segment is committed, and nothing of it is touched.
    """
    folder = segment_location(root, name)
    assert isinstance(folder, Storage)
    marker = folder / STATE_FILE
    committed = SegmentCommitError(folder.url, "already committed by another writer (its state.json exists)")
    with tempfile.TemporaryDirectory(prefix="prefpair-segment-") as temp_name:
        temp = Path(temp_name)
        fill(temp, False)
        written = sorted(path.name for path in temp.iterdir())
        existing = folder.list_files()
        if STATE_FILE in existing:
            raise committed
        try:
            for leftover in sorted(set(existing) - set(written)):
                (folder / leftover).delete()
            for file in written:
                (folder / file).upload(temp / file)
            if check_continuity:
                _check_continuity(root, name)
        except BaseException:
            if not marker.exists():  # never delete what another writer of this segment has committed
                _delete_quietly([folder / file for file in written])
            raise
    try:
        marker.write_text(text, exclusive=True)
    except FileExistsError:
        raise committed from None
    return folder


def _delete_quietly(files: list[Storage]) -> None:
    """Best effort: what is left is never read (no marker) and a later sweep removes it."""
    for file in files:
        try:
            file.delete()
        except Exception as exc:
            log.debug("could not delete %s of an abandoned segment: %s", file, exc)


def _check_continuity(log_dir: LogDir, name: SegmentName) -> None:
    existing = [segment for segment, _ in committed_segments(log_location(log_dir), name.partition)]
    if not existing:
        return
    newest = max(existing, key=lambda segment: segment.resume_key)
    if (newest.inference_end, newest.feedback_end) != (name.inference_start, name.feedback_start):
        raise SegmentCommitError(
            where(segment_location(log_dir, name)),
            f"the log of partition {name.partition} ends at inference {newest.inference_end}, "
            f"feedback {newest.feedback_end}, not where this segment starts "
            f"({name.inference_start}, {name.feedback_start}): another consumer owns it now",
        )


def sweep_temporaries(log_dir: LogDir, partition: int, older_than_s: float = 60.0) -> int:
    """Remove temp dirs a crashed writer left behind; returns how many.

    On object storage: segment folders without a marker whose newest object is older than
    ``older_than_s`` (by LastModified), which no writer is finishing any more.
    """
    local = local_dir(log_dir)
    if local is None:
        assert isinstance(log_dir, Storage)
        return _sweep_stored(log_dir, partition, older_than_s)
    parent = partition_dir(local, partition)
    if not parent.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_s
    for child in parent.iterdir():
        if child.name.startswith(TEMP_PREFIX) and child.stat().st_mtime < cutoff:
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def _sweep_stored(root: Storage, partition: int, older_than_s: float) -> int:
    parent = root / partition_dir(Path(), partition).name
    newest: dict[str, float] = {}
    marked: set[str] = set()
    for key, modified in parent.list_modified().items():
        folder, _, file = key.partition("/")
        newest[folder] = max(newest.get(folder, 0.0), modified)
        if file == STATE_FILE:
            marked.add(folder)
    cutoff = time.time() - older_than_s
    abandoned = [folder for folder, modified in sorted(newest.items())
                 if folder not in marked and folder.startswith(SEGMENT_PREFIX) and modified < cutoff]  # fmt: skip
    for folder in abandoned:
        (parent / folder).delete()
    return len(abandoned)
