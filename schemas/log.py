"""Layout and Arrow schemas of the append-only Parquet log: the contract between
``prefpair consume`` (which writes it) and ``prefpair compile`` / reports (which read it).

The log is a folder of *segments*. A segment holds what one consumer flushed for one
partition number of the co-partitioned topics, as contiguous offset ranges::

    <log_dir>/partition=00003/seg-i<start>-<end>-f<start>-<end>/   (half-open offset ranges)
        inference.parquet   landed inference events (INFERENCE_LOG)
        feedback.parquet    feedback joined to its inference (FEEDBACK_LOG)
        orphans.parquet     feedback whose inference never came within the grace (ORPHAN_LOG)
        signals.parquet     implicit signals, landed as they come: no join (SIGNAL_LOG)
        state.json          resume point and pending feedback at the end of the segment

A segment is written under a temporary name (``.tmp-*``), fsynced, then renamed into place:
only directories named ``seg-*`` are committed, and readers look at nothing else.

On object storage (:class:`prefpair.storage.Storage`, ``s3://bucket/prefix``), which has no
rename, a segment is committed once its ``state.json`` (:data:`COMMIT_MARKER`) exists: writers put
it last, conditionally (``If-None-Match``, so a second writer of the same segment loses), after the
segment's Parquet files. Readers list the log once to find the committed segments, then again for
their files: everything a segment committed before the first listing ended is in the second one,
even where the first listing's pages split a segment that was being committed meanwhile.

Column types come from the Avro schemas (one source of truth): enums become strings,
unions with null become nullable columns, records become structs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, overload

import pyarrow as pa

from prefpair.schemas.registry import FEEDBACK, INFERENCE, SCHEMA_FILES, SIGNAL, load_raw
from prefpair.storage import LocalStorage, Storage

TABLES = ("inference", "feedback", "orphans", "signals")
SEGMENT_PREFIX = "seg-"
TEMP_PREFIX = ".tmp-"
PARTITION_DIR = re.compile(r"^partition=(\d+)$")
SEGMENT_DIR = re.compile(r"^seg-i(\d+)-(\d+)-f(\d+)-(\d+)(?:-x(\d+))?(?:-g(\d+))?$")
COMMIT_MARKER = "state.json"
"""Written last into every segment; on object storage, a segment without it is not committed."""


# --------------------------------------------------------------------------- Avro -> Arrow
def arrow_type(avro: Any, named: dict[str, pa.DataType] | None = None) -> pa.DataType:
    """The Arrow type of an Avro type (nullability is carried by the field)."""
    named = {} if named is None else named
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise TypeError(f"only [null, T] unions map to columns, got {avro}")
        return arrow_type(branches[0], named)
    if isinstance(avro, str):
        primitive = {
            "string": pa.string(),
            "long": pa.int64(),
            "int": pa.int32(),
            "double": pa.float64(),
            "float": pa.float32(),
            "boolean": pa.bool_(),
            "bytes": pa.binary(),
        }
        if avro in primitive:
            return primitive[avro]
        return named[avro.rsplit(".", 1)[-1]]
    kind = avro["type"]
    if kind == "record":
        struct = pa.struct([arrow_field(f, named) for f in avro["fields"]])
        named[avro["name"]] = struct
        return struct
    if kind == "enum":
        named[avro["name"]] = pa.string()
        return pa.string()
    if kind == "array":
        return pa.list_(arrow_type(avro["items"], named))
    if kind == "map":
        return pa.map_(pa.string(), arrow_type(avro["values"], named))
    return arrow_type(kind, named)


def arrow_field(avro_field: dict[str, Any], named: dict[str, pa.DataType], name: str | None = None) -> pa.Field:
    nullable = isinstance(avro_field["type"], list) and "null" in avro_field["type"]
    return pa.field(name or avro_field["name"], arrow_type(avro_field["type"], named), nullable=nullable)


def _event_fields(schema_name: str, renames: dict[str, str]) -> list[pa.Field]:
    raw = load_raw(SCHEMA_FILES[schema_name])
    named: dict[str, pa.DataType] = {}
    return [arrow_field(f, named, renames.get(f["name"])) for f in raw["fields"]]


# Fields that both events carry get a prefix in the joined row; request_id stays shared.
INFERENCE_RENAMES = {
    "event_id": "inference_event_id",
    "timestamp_ms": "inference_timestamp_ms",
    "metadata": "inference_metadata",
}
FEEDBACK_RENAMES = {
    "event_id": "feedback_event_id",
    "timestamp_ms": "feedback_timestamp_ms",
    "metadata": "feedback_metadata",
}

_INFERENCE_FIELDS = _event_fields(INFERENCE, INFERENCE_RENAMES)
_FEEDBACK_FIELDS = _event_fields(FEEDBACK, FEEDBACK_RENAMES)

_INFERENCE_SOURCE = [
    pa.field("inference_topic", pa.string(), nullable=False),
    pa.field("inference_partition", pa.int32(), nullable=False),
    pa.field("inference_offset", pa.int64(), nullable=False),
]
_FEEDBACK_SOURCE = [
    pa.field("feedback_topic", pa.string(), nullable=False),
    pa.field("feedback_partition", pa.int32(), nullable=False),
    pa.field("feedback_offset", pa.int64(), nullable=False),
]

INFERENCE_LOG = pa.schema([*_INFERENCE_FIELDS, *_INFERENCE_SOURCE])
"""Landed inference events, one row each, in offset order."""

FEEDBACK_LOG = pa.schema(
    [
        *_FEEDBACK_FIELDS,
        *[f for f in _INFERENCE_FIELDS if f.name != "request_id"],
        *_FEEDBACK_SOURCE,
        *_INFERENCE_SOURCE,
        pa.field("joined_at_ms", pa.int64(), nullable=False),
        pa.field("join_path", pa.string(), nullable=False),  # "hot", "waited", "landed"
    ]
)
"""Feedback joined to its inference: every feedback event (creates, updates, deletes) is a row."""

ORPHAN_LOG = pa.schema(
    [
        *_FEEDBACK_FIELDS,
        *_FEEDBACK_SOURCE,
        pa.field("orphaned_at_ms", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)
"""Feedback whose inference event did not arrive within the grace, with the reason."""

SIGNAL_RENAMES = {"timestamp_ms": "signal_timestamp_ms", "metadata": "signal_metadata"}

SIGNAL_LOG = pa.schema(
    [
        *_event_fields(SIGNAL, SIGNAL_RENAMES),
        pa.field("signal_topic", pa.string(), nullable=False),
        pa.field("signal_partition", pa.int32(), nullable=False),
        pa.field("signal_offset", pa.int64(), nullable=False),
    ]
)
"""Implicit signals (``signal.avsc``), landed in the segment of the feedback offsets they came at,
without waiting for their inference: compile joins them to inferences across the whole log."""

SCHEMAS = {"inference": INFERENCE_LOG, "feedback": FEEDBACK_LOG, "orphans": ORPHAN_LOG, "signals": SIGNAL_LOG}


# --------------------------------------------------------------------------- layout
_P = TypeVar("_P", Path, str)
@dataclass(frozen=True, order=True)
class SegmentName:
    """A committed segment: partition and the half-open offset ranges ``[start, end)`` of the
    inference and feedback partitions it consumed (``start == end``: nothing from that topic).

    ``end`` is where the next segment of the partition starts: the resume point.

    A segment that consumed nothing from either topic (both ranges empty) holds only rows that
    time produced, i.e. feedback that waited past its grace and became orphans; its ``sequence``
    (``-x<n>`` in the name) orders it after the segment it follows. Such segments are never
    merged by compaction and never count as covered.

    ``generation`` (``-g<n>``) counts rewrites of the same ranges (erasure and retention rewrite a
    segment without some rows): of equal ranges readers see the highest generation only.
    """

    partition: int
    inference_start: int
    inference_end: int
    feedback_start: int
    feedback_end: int
    sequence: int = 0
    generation: int = 0

    @property
    def zero_width(self) -> bool:
        return self.inference_start == self.inference_end and self.feedback_start == self.feedback_end

    @property
    def dirname(self) -> str:
        name = (
            f"{SEGMENT_PREFIX}i{self.inference_start:020d}-{self.inference_end:020d}"
            f"-f{self.feedback_start:020d}-{self.feedback_end:020d}"
        )
        name = f"{name}-x{self.sequence:020d}" if self.sequence else name
        return f"{name}-g{self.generation:06d}" if self.generation else name

    @property
    def ranges(self) -> tuple[int, int, int, int, int, int]:
        """What a segment holds, whatever its generation: partition, both ranges and sequence."""
        return (self.partition, self.inference_start, self.inference_end, self.feedback_start, self.feedback_end,
                self.sequence)  # fmt: skip

    @property
    def resume_key(self) -> tuple[int, int, int]:
        """Order in which segments of a partition were written: the newest has the largest key."""
        return (self.inference_end, self.feedback_end, self.sequence)

    def path(self, log_dir: Path) -> Path:
        return partition_dir(log_dir, self.partition) / self.dirname

    @classmethod
    def parse(cls, path: Path) -> SegmentName | None:
        return cls.parse_names(path.parent.name, path.name)

    @classmethod
    def parse_names(cls, partition_name: str, segment_name: str) -> SegmentName | None:
        """The segment ``<partition_name>/<segment_name>`` names, or None when it names none."""
        part = PARTITION_DIR.match(partition_name)
        seg = SEGMENT_DIR.match(segment_name)
        if not part or not seg:
            return None
        return cls(int(part.group(1)), *(int(g) for g in seg.groups(default="0")))


def partition_dir(log_dir: Path, partition: int) -> Path:
    return log_dir / f"partition={partition:05d}"


@overload
def committed_segments(log_dir: Path, partition: int | None = None) -> Iterator[tuple[SegmentName, Path]]: ...
@overload
def committed_segments(log_dir: Storage, partition: int | None = None) -> Iterator[tuple[SegmentName, Storage]]: ...
def committed_segments(
    log_dir: Path | Storage, partition: int | None = None
) -> Iterator[tuple[SegmentName, Path]] | Iterator[tuple[SegmentName, Storage]]:
    """Committed segments in (partition, offset) order; temporary directories are never listed.

    ``log_dir`` is a local directory, or storage (then each segment comes as the storage of its folder).
    """
    if isinstance(log_dir, LocalStorage):
        return ((name, LocalStorage(path)) for name, path in _local_segments(log_dir.path, partition))
    if isinstance(log_dir, Storage):
        return ((name, log_dir / relative) for name, relative in _stored_segments(log_dir, partition))
    return _local_segments(log_dir, partition)


def _local_segments(log_dir: Path, partition: int | None = None) -> Iterator[tuple[SegmentName, Path]]:
    if not log_dir.is_dir():
        return
    parents = [partition_dir(log_dir, partition)] if partition is not None else sorted(log_dir.iterdir())
    found: list[tuple[SegmentName, Path]] = []
    for parent in parents:
        if not parent.is_dir() or not PARTITION_DIR.match(parent.name):
            continue
        for child in parent.iterdir():
            name = SegmentName.parse(child)
            if name is not None and child.is_dir():
                found.append((name, child))
    yield from _without_covered(sorted(found))


def _stored_segments(log: Storage, partition: int | None) -> list[tuple[SegmentName, str]]:
    """Committed segments of a log on object storage, from one listing: those with a commit marker."""
    scope = "" if partition is None else f"partition={partition:05d}/"
    listed = (log / scope).list_files() if scope else log.list_files()
    found: list[tuple[SegmentName, str]] = []
    for key in listed:
        parts = (scope + key).split("/")
        if len(parts) == 3 and parts[2] == COMMIT_MARKER:
            name = SegmentName.parse_names(parts[0], parts[1])
            if name is not None:
                found.append((name, f"{parts[0]}/{parts[1]}"))
    return _without_covered(sorted(found))


def _without_covered(found: list[tuple[SegmentName, _P]]) -> list[tuple[SegmentName, _P]]:
    """Drop segments whose ranges a wider segment already holds.

    Compaction renames the merged segment into place before it deletes the parts; in between
    (or after a crash there) both exist, and readers must see each row once. Segments of a
    partition form a chain (both ranges only grow), so one pass in start order finds them.
    Of generations of the same ranges (rewrites), only the highest is kept.
    """
    newest: dict[tuple[int, ...], tuple[SegmentName, _P]] = {}
    for name, path in found:
        if name.ranges not in newest or newest[name.ranges][0].generation < name.generation:
            newest[name.ranges] = (name, path)
    found = list(newest.values())
    kept: list[tuple[SegmentName, _P]] = []
    ordered = sorted(
        found, key=lambda item: (item[0].partition, item[0].inference_start, item[0].feedback_start,
                                 -item[0].inference_end, -item[0].feedback_end),
    )  # fmt: skip
    partition, max_i, max_f = -1, -1, -1
    for name, path in ordered:
        if name.zero_width:
            kept.append((name, path))
            continue
        if name.partition != partition:
            partition, max_i, max_f = name.partition, -1, -1
        elif name.inference_end <= max_i and name.feedback_end <= max_f:
            continue
        max_i, max_f = max(max_i, name.inference_end), max(max_f, name.feedback_end)
        kept.append((name, path))
    return sorted(kept)


@overload
def table_files(log_dir: Path, table: str) -> list[Path]: ...
@overload
def table_files(log_dir: Storage, table: str) -> list[str]: ...
def table_files(log_dir: Path | Storage, table: str) -> list[Path] | list[str]:
    """Committed Parquet files of one table (``inference``, ``feedback`` or ``orphans``).

    Of a log on storage: what DuckDB reads (:attr:`~prefpair.storage.Storage.reader_path`, after
    :meth:`~prefpair.storage.Storage.attach`).
    """
    if table not in SCHEMAS:
        raise ValueError(f"unknown log table {table!r}; expected one of {', '.join(TABLES)}")
    if isinstance(log_dir, Storage):
        return committed_files(log_dir)[1][table]
    files = (path / f"{table}.parquet" for _, path in committed_segments(log_dir))
    return [file for file in files if file.exists()]


def committed_files(log: Storage) -> tuple[list[tuple[SegmentName, Storage]], dict[str, list[str]]]:
    """The committed segments of a log on storage, and each table's files in them (two listings).

    The segments come from a first listing, their files from a second one: a segment committed
    before the first ended has all its files in the second (see the module docstring).
    """
    if isinstance(log, LocalStorage):
        segments: list[tuple[SegmentName, Storage]] = [
            (name, LocalStorage(path)) for name, path in _local_segments(log.path)
        ]
        return segments, {table: [str(f) for f in table_files(log.path, table)] for table in TABLES}
    committed = _stored_segments(log, None)
    listed = log.list_files() if committed else {}
    files: dict[str, list[str]] = {
        table: [(log / f"{relative}/{table}.parquet").reader_path
                for _, relative in committed if f"{relative}/{table}.parquet" in listed]
        for table in TABLES
    }  # fmt: skip
    return [(name, log / relative) for name, relative in committed], files


# --------------------------------------------------------------------------- older logs
_DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE",
                 pa.bool_(): "BOOLEAN"}  # fmt: skip


def _first_feedback_fields() -> set[str]:
    """Field names of the first shipped feedback schema (``history/feedback.v1.avsc``)."""
    raw = json.loads(resources.files("prefpair.schemas").joinpath("history/feedback.v1.avsc").read_text("utf-8"))
    return {FEEDBACK_RENAMES.get(f["name"], f["name"]) for f in raw["fields"]}


_FIRST_FEEDBACK = _first_feedback_fields()
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    table: {
        f.name: _DUCKDB_TYPES[f.type]
        for f in SCHEMAS[table]
        if f.name in {g.name for g in _FEEDBACK_FIELDS} and f.name not in _FIRST_FEEDBACK
    }
    for table in ("feedback", "orphans")
}
"""Per log table, the columns that feedback fields added since v1 became (name -> DuckDB type):
segments written before them lack these columns, and readers fill them with NULL."""


def with_added_columns(relation: str, table: str) -> str:
    """A DuckDB relation of ``relation`` (e.g. ``read_parquet(...)`` of ``table``'s files) that has every
    column of :data:`ADDED_COLUMNS` even when all its files predate them (NULL there)."""
    added = ADDED_COLUMNS.get(table, {})
    if not added:
        return relation
    empty = ", ".join(f"NULL::{kind} AS {name}" for name, kind in added.items())
    return f"(SELECT * FROM {relation} UNION ALL BY NAME (SELECT {empty} WHERE false))"
