"""Retention of the Parquet log: segments older than ``retain_days`` removed, whole, under the log's lock.

A segment's age is when it was written (``written_at_ms`` of its ``state.json``; a merged
segment carries its newest part's). Never removed: the newest segment of a partition (it is the
resume point) and any segment that may still hold feedback waiting for its inference (ending past
the newest state's ``pending_from``). Removal is safe for readers the way compaction's is: a
local segment is first renamed to a temporary name (readers never list those) and deleted after
``reader_grace_s``; on object storage its commit marker goes first, then its files.

Removing old segments changes no offset and no resume point. What it changes: feedback arriving
for a request whose inference was removed can no longer be joined from the landed log (it becomes
an orphan after the grace), a full compile sees only what is retained, and an incremental compile
still leaves out the pairs earlier versions emitted (their ids are kept in the versions), so
nothing is emitted twice; versions already written are files of their own and keep their pairs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from prefpair.consumers.compaction import log_lock
from prefpair.consumers.erasure import delete_segment
from prefpair.consumers.segments import STATE_FILE, LogDir, StoredSegment, log_location, segments_with_files
from prefpair.schemas.log import TEMP_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionReport:
    segments_removed: int
    segments_kept: int


def _written_at_ms(segment: StoredSegment) -> int | None:
    state = segment.file(STATE_FILE)
    try:
        text = state.read_text(encoding="utf-8") if isinstance(state, Path) else state.read_text()
        value = json.loads(text).get("written_at_ms")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) else None


def _pending_from(segment: StoredSegment) -> int | None:
    state = segment.file(STATE_FILE)
    text = state.read_text(encoding="utf-8") if isinstance(state, Path) else state.read_text()
    value = json.loads(text).get("pending_from")
    return int(value) if isinstance(value, int) else None


def apply_retention(
    log_dir: LogDir, retain_days: float, *, now_ms: int | None = None, reader_grace_s: float = 5.0
) -> RetentionReport:
    """Remove the segments written more than ``retain_days`` ago (see the module docstring)."""
    root = log_location(log_dir)
    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(retain_days * 86_400_000)
    removed: list[StoredSegment] = []
    kept = 0
    with log_lock(root):
        by_partition: dict[int, list[StoredSegment]] = {}
        for segment in segments_with_files(root):
            by_partition.setdefault(segment.name.partition, []).append(segment)
        for segments in by_partition.values():
            segments.sort(key=lambda item: item.name.resume_key)
            newest = segments[-1]
            pending_from = _pending_from(newest)
            for segment in segments[:-1]:
                written = _written_at_ms(segment)
                waiting = pending_from is not None and segment.name.feedback_end > pending_from
                if written is None or written >= cutoff or waiting:
                    kept += 1
                    continue
                removed.append(segment)
            kept += 1
        hidden: list[Path] = []
        for segment in removed:
            if isinstance(segment.folder, Path):  # hide at once, delete after the readers' grace
                target = segment.folder.with_name(f"{TEMP_PREFIX}expired-{segment.name.dirname}-{uuid.uuid4().hex[:8]}")
                os.rename(segment.folder, target)
                hidden.append(target)
            else:
                delete_segment(root, segment.name)
            log.info("retention: removed %s (older than %s days)", segment.name.dirname, retain_days)
        if hidden and reader_grace_s > 0:
            time.sleep(reader_grace_s)
        for folder in hidden:
            shutil.rmtree(folder, ignore_errors=True)
    return RetentionReport(len(removed), kept)
