"""Writes sealed segments on one background thread while the daemon goes on consuming.

Parquet encoding, compression and fsync release the GIL, so on a machine with a second core the
write of one segment overlaps the decoding and joining of the next. The order of operations that
makes the log exactly-once does not change: segments of a partition are written one after the
other, each through the same atomic commit (:func:`~prefpair.consumers.segments.write_segment`: a rename,
or on object storage a conditional put of the marker),
and the daemon commits a segment's offsets only after it has *settled* it (seen it on disk). It
settles the segments in flight before it seals the next ones, before a revoke hands partitions
over, and before it stops, so at most one flush is ever in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from prefpair.consumers.exceptions import SegmentCommitError
from prefpair.consumers.segments import LogDir, PendingItem, ResumeState, write_segment
from prefpair.schemas.log import SegmentName


@dataclass
class SealedSegment:
    """One partition's rows between two offsets, ready to be written."""

    partition: int
    name: SegmentName
    tables: dict[str, list[dict[str, Any]] | pa.Table]
    state: ResumeState
    pending: Sequence[PendingItem]
    joined: int
    orphans: int

    @property
    def rows(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


class SegmentFilter(Protocol):
    """What the writer asks of the erasure follower: a lock, and a segment without erased rows."""

    guard: threading.Lock

    def filter(self, segment: SealedSegment) -> SealedSegment: ...


Outcome = tuple[SealedSegment, BaseException | None]
"""A segment and what became of it: None (committed), SegmentCommitError, or the error that stopped the writes."""


class SegmentWriter:
    """One writer thread; :meth:`submit` a flush's segments, :meth:`settle` to learn their outcomes."""

    def __init__(self, log_dir: LogDir, compression: str) -> None:
        self.log_dir = log_dir
        self.compression = compression
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefpair-segment-writer")
        self._inflight: Future[list[Outcome]] | None = None
        self.erasures: SegmentFilter | None = None
        """Leaves erased rows out of each segment just before it is written (erasure_follower)."""

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    @property
    def done(self) -> bool:
        """Whether the flush in flight (if any) has finished."""
        return self._inflight is None or self._inflight.done()

    def submit(self, segments: list[SealedSegment]) -> None:
        if self._inflight is not None:
            raise RuntimeError("settle the segments in flight before submitting more")
        self._inflight = self._executor.submit(self._write_all, segments)

    def settle(self) -> list[Outcome]:
        """Wait for the flush in flight; its segments' outcomes, in order (empty when none)."""
        inflight, self._inflight = self._inflight, None
        return inflight.result() if inflight is not None else []

    def _write_all(self, segments: list[SealedSegment]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, segment in enumerate(segments):
            try:
                if self.erasures is not None:
                    with self.erasures.guard:
                        self._write(self.erasures.filter(segment))
                else:
                    self._write(segment)
            except SegmentCommitError as exc:  # another owner now: the daemon gives the partition up
                outcomes.append((segment, exc))
            except BaseException as exc:  # the disk refused: nothing after this is written either
                outcomes.append((segment, exc))
                outcomes += [(later, exc) for later in segments[index + 1:]]
                break
            else:
                outcomes.append((segment, None))
        return outcomes

    def _write(self, segment: SealedSegment) -> None:
        write_segment(self.log_dir, segment.name, segment.tables, segment.state, pending=segment.pending,
                      compression=self.compression)  # fmt: skip

    def close(self) -> None:
        """Let a write in flight finish (it commits whole or not at all), then stop the thread."""
        self._executor.shutdown(wait=True)
