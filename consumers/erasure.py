"""Carrying out erasure requests on the Parquet log: affected segments rewritten without the rows.

An erasure names a user id, a session id or a request id (:mod:`prefpair.erasures`). Every
request id of the erased identities is found first (inference rows, joined feedback rows), then
each segment holding a row of one of them (inference, joined feedback, orphans, or feedback
still waiting in ``pending.parquet``) is rewritten through the segments' own commit
(:func:`~prefpair.consumers.segments.write_segment_tables`): written aside, committed atomically
under the same name one *generation* up (``-g<n>``: readers see the highest generation of equal
ranges, :mod:`prefpair.schemas.log`), with the same ``state.json``, so offset coverage, resume and
exactly-once are unchanged. The old generation is deleted after ``reader_grace_s`` (a reader
that listed it a moment before can still open it), and only then is the erasure complete.

What the rows were is kept as *tombstones* (``erased.parquet``: table and offset, nothing else):
resume counts a tombstoned feedback offset as resolved and a tombstoned waiting one as waiting,
so the count ``state.json`` records still adds up. Compaction merges tombstones like any file.

A status file per erasure, ``<log>/erasures/<erasure_id>.json``, says when it completed, what
was rewritten and which offsets were removed per partition (so compiled dataset versions that
read them can be listed, :func:`affected_versions`). Runs under the compaction lock.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from prefpair.consumers.compaction import log_lock
from prefpair.consumers.segments import (
    ERASED,
    ERASED_LOG,
    PENDING,
    SEGMENT_FILES,
    STATE_FILE,
    LogDir,
    StoredSegment,
    local_dir,
    log_location,
    read_parquet,
    segment_location,
    segments_with_files,
    write_segment_tables,
)
from prefpair.durable import write_text_atomic
from prefpair.erasures import ErasureRequest
from prefpair.schemas.log import SegmentName
from prefpair.storage import Storage

log = logging.getLogger(__name__)

STATUS_DIR = "erasures"
DEFAULT_READER_GRACE_S = 5.0
_OFFSET_COLUMN = {"inference": "inference_offset", "feedback": "feedback_offset", "orphans": "feedback_offset",
                  "signals": "signal_offset", PENDING: "feedback_offset"}  # fmt: skip


@dataclass
class ErasureReport:
    """What one pass over the log did."""

    request_ids: set[str] = field(default_factory=set)
    segments_rewritten: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)
    removed_offsets: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    """Per partition, the offsets removed: ``inference`` (inference offsets) and ``feedback``."""
    seconds: float = 0.0


def erased_request_ids(log_dir: LogDir, requests: Sequence[ErasureRequest]) -> set[str]:
    """Every request id the requests erase: those named, and those of the named users and sessions."""
    ids = {r.value for r in requests if r.kind == "request"}
    wanted = {column: [r.value for r in requests if r.column == column] for column in ("user_id", "session_id")}
    wanted = {column: values for column, values in wanted.items() if values}
    if not wanted:
        return ids
    for segment in segments_with_files(log_dir):
        for table in ("inference", "feedback"):
            if not segment.has(f"{table}.parquet"):
                continue
            data = read_parquet(segment.file(f"{table}.parquet"), columns=["request_id", *wanted])
            mask = _any_in(data, wanted)
            ids.update(data.filter(mask).column("request_id").to_pylist())
    return ids


def _any_in(data: pa.Table, wanted: dict[str, list[str]]) -> pa.ChunkedArray:
    mask: Any = None
    for column, values in wanted.items():
        hit = pc.fill_null(pc.is_in(data.column(column), value_set=pa.array(values, pa.string())), False)
        mask = hit if mask is None else pc.or_(mask, hit)
    return mask


def erase_from_log(
    log_dir: LogDir, requests: Sequence[ErasureRequest], *, reader_grace_s: float = DEFAULT_READER_GRACE_S,
    compression: str = "snappy", only: Callable[[StoredSegment], bool] | None = None,
) -> ErasureReport:
    """Rewrite every segment holding a row of the erased identities (of those ``only`` keeps);
    returns what was removed."""
    started = time.monotonic()
    log_dir = log_location(log_dir)
    report = ErasureReport()
    replaced: list[StoredSegment] = []
    with log_lock(log_dir):
        report.request_ids = erased_request_ids(log_dir, requests)
        if report.request_ids:
            for segment in segments_with_files(log_dir):
                if only is not None and not only(segment):
                    continue
                if _rewrite(log_dir, segment, report, compression):
                    replaced.append(segment)
        if replaced and reader_grace_s > 0:
            time.sleep(reader_grace_s)
        for segment in replaced:
            delete_segment(log_dir, segment.name)
    report.seconds = time.monotonic() - started
    return report


def _rewrite(log_dir: Path | Storage, segment: StoredSegment, report: ErasureReport, compression: str) -> bool:
    """Write ``segment`` one generation up without the erased rows; False when it holds none."""
    ids = pa.array(sorted(report.request_ids), pa.string())
    kept: dict[str, pa.Table] = {}
    tombstones: list[pa.Table] = []
    removed: dict[str, int] = {}
    for table, schema in SEGMENT_FILES.items():
        if not segment.has(f"{table}.parquet"):
            continue
        data = read_parquet(segment.file(f"{table}.parquet"), schema=schema)
        if table == ERASED:
            tombstones.append(data)
            kept[table] = data
            continue
        hit = pc.fill_null(pc.is_in(data.column("request_id"), value_set=ids), False)
        gone = data.filter(hit)
        if gone.num_rows:
            removed[table] = gone.num_rows
            offsets = gone.column(_OFFSET_COLUMN[table])
            tombstones.append(pa.table({"table": pa.array([table] * gone.num_rows, pa.string()),
                                        "offset": offsets.cast(pa.int64())}, schema=ERASED_LOG))  # fmt: skip
            side = "inference" if table == "inference" else "feedback"
            report.removed_offsets.setdefault(segment.name.partition, {}).setdefault(side, []).extend(
                int(o) for o in offsets.to_pylist()
            )
            data = data.filter(pc.invert(hit))
        if data.num_rows:
            kept[table] = data
    if not removed:
        return False
    kept[ERASED] = pa.concat_tables(tombstones)
    name = segment.name
    rewritten = SegmentName(*name.ranges, generation=name.generation + 1)
    state = segment.file(STATE_FILE)
    write_segment_tables(log_dir, rewritten, kept, state.read_text(encoding="utf-8") if isinstance(state, Path)
                         else state.read_text(), compression=compression)  # fmt: skip
    for table, n in removed.items():
        report.rows_removed[table] = report.rows_removed.get(table, 0) + n
    report.segments_rewritten += 1
    log.info("erasure: rewrote %s without %s", rewritten.dirname, removed)
    return True


def delete_segment(log_dir: Path | Storage, name: SegmentName) -> None:
    """Delete one (superseded) segment: on storage its marker first, so a half-deleted one is not committed."""
    folder = segment_location(log_dir, name)
    if isinstance(folder, Storage):
        (folder / STATE_FILE).delete()
        folder.delete()
    else:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- status
def status_file(log_dir: LogDir, erasure_id: str) -> Path | Storage:
    local = local_dir(log_dir)
    if local is not None:
        return local / STATUS_DIR / f"{erasure_id}.json"
    assert isinstance(log_dir, Storage)
    return log_dir / f"{STATUS_DIR}/{erasure_id}.json"


def write_status(
    log_dir: LogDir, requests: Iterable[ErasureRequest], report: ErasureReport, status: str = "complete"
) -> Path | Storage:
    """Record where the requests are on this log (one file per request, written atomically).

    ``in_progress`` is written before the rewrite, with the request ids found: running consumers
    read it (:mod:`~prefpair.consumers.erasure_follower`) to leave late feedback of those requests out."""
    written: Path | Storage | None = None
    for request in requests:
        body = json.dumps({
            **request.model_dump(mode="json"),
            "status": status,
            "completed_at_ms": int(time.time() * 1000) if status == "complete" else None,
            "segments_rewritten": report.segments_rewritten,
            "rows_removed": report.rows_removed,
            "request_ids": sorted(report.request_ids),
            "removed_offsets": {str(p): sides for p, sides in sorted(report.removed_offsets.items())},
        }, indent=2)  # fmt: skip
        target = status_file(log_dir, request.erasure_id)
        if isinstance(target, Path):
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, body)
        else:
            target.write_text(body)
        written = target
    assert written is not None
    return written


def read_statuses(log_dir: LogDir) -> list[dict[str, Any]]:
    """Every completed erasure's status on this log."""
    local = local_dir(log_dir)
    if local is not None:
        folder = local / STATUS_DIR
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return [json.loads(f.read_text(encoding="utf-8")) for f in files]
    assert isinstance(log_dir, Storage)
    root = log_dir / STATUS_DIR
    return [json.loads((root / name).read_text()) for name in sorted(root.list_files()) if name.endswith(".json")]


def affected_versions(manifests: dict[str, dict[str, Any]], statuses: Sequence[dict[str, Any]]) -> list[str]:
    """Dataset versions (name -> manifest) whose input ranges held a row an erasure removed."""
    affected: list[str] = []
    for version, manifest in sorted(manifests.items()):
        ranges = manifest.get("inputs", {}).get("partitions", {})
        hit = False
        for status in statuses:
            for partition, sides in status.get("removed_offsets", {}).items():
                span = ranges.get(str(partition))
                if span is None:
                    continue
                for side in ("inference", "feedback"):
                    start, end = span.get(f"{side}_start", 0), span.get(f"{side}_end", 0)
                    if any(start <= offset < end for offset in sides.get(side, [])):
                        hit = True
        if hit:
            affected.append(version)
    return affected


# --------------------------------------------------------------------------- live consumers
ACK_DIR = "consumers"
ACK_FRESH_S = 30.0
"""A consumer's acknowledgement older than this belongs to a consumer that stopped (it refreshes twice a second)."""


def ack_file(log_dir: LogDir, instance: str) -> Path | Storage:
    local = local_dir(log_dir)
    if local is not None:
        return local / STATUS_DIR / ACK_DIR / f"{instance}.json"
    assert isinstance(log_dir, Storage)
    return log_dir / f"{STATUS_DIR}/{ACK_DIR}/{instance}.json"


def write_ack(log_dir: LogDir, instance: str, erasures_next: int, seen_ms: int) -> None:
    """A running consumer says: every segment I write from now on leaves out erasures before ``erasures_next``
    and the request ids of the statuses that existed at ``seen_ms`` (when it began reading them)."""
    body = json.dumps({"erasures_next": erasures_next, "at_ms": seen_ms})
    target = ack_file(log_dir, instance)
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, body)
    else:
        target.write_text(body)


def remove_ack(log_dir: LogDir, instance: str) -> None:
    target = ack_file(log_dir, instance)
    if isinstance(target, Path):
        target.unlink(missing_ok=True)
    else:
        target.delete()


def lagging_consumers(log_dir: LogDir, erasures_next: int, since_ms: int = 0) -> list[str]:
    """Running consumers (fresh acknowledgements) that have not yet applied erasures before ``erasures_next``,
    or not acknowledged since ``since_ms`` (when the in-progress status they must read was written)."""
    local = local_dir(log_dir)
    acks: dict[str, dict[str, Any]] = {}
    if local is not None:
        folder = local / STATUS_DIR / ACK_DIR
        for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                acks[file.stem] = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # removed or being replaced this moment
    else:
        assert isinstance(log_dir, Storage)
        root = log_dir / f"{STATUS_DIR}/{ACK_DIR}"
        for name in sorted(root.list_files()):
            try:
                acks[name.removesuffix(".json")] = json.loads((root / name).read_text())
            except (OSError, ValueError):
                continue
    now_ms = time.time() * 1000
    fresh = {instance: ack for instance, ack in acks.items() if now_ms - int(ack.get("at_ms", 0)) < ACK_FRESH_S * 1000}
    return [instance for instance, ack in fresh.items()
            if int(ack.get("erasures_next", 0)) < erasures_next or int(ack.get("at_ms", 0)) <= since_ms]  # fmt: skip
