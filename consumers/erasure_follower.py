"""The running consumer's side of erasure: follow the erasure topic, leave erased rows out of new segments.

:class:`ErasureFollower` reads the erasure topic to its end before the daemon consumes anything,
then keeps following it on a thread of its own. The segment writer asks it to :meth:`filter`
each sealed segment just before writing it (under :attr:`guard`, which the follower also takes
to apply new requests): rows of erased identities are left out and tombstoned like the log
rewrite does (:mod:`prefpair.consumers.erasure`), so resume still adds up. Once a request is
applied, every segment written afterwards leaves its rows out, and the follower says so in its
acknowledgement file, which ``prefpair erase`` waits for before its last pass.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaException

from prefpair.config import Settings
from prefpair.consumers.erasure import erase_from_log, read_statuses, remove_ack, write_ack
from prefpair.consumers.segments import ERASED, ERASED_LOG, PENDING, LogDir
from prefpair.consumers.writer import SealedSegment
from prefpair.erasures import ErasureError, ErasureReader, ErasureRequest, erasure_request

log = logging.getLogger(__name__)

POLL_S = 0.5
LATE_PASS_S = 30.0
"""At most this often, the follower rewrites the segments holding rows that landed before it knew
their request was erased (see :meth:`ErasureFollower.clean_early_rows`)."""


class ErasureFollower:
    """The erased identities, kept current from the erasure topic; see the module docstring."""

    def __init__(self, settings: Settings, log_dir: LogDir) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.guard = threading.Lock()
        self.instance = uuid.uuid4().hex
        self.users: set[str] = set()
        self.sessions: set[str] = set()
        self.request_ids: set[str] = set()
        self.next_offset = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: ErasureReader | None = None
        self._learned: set[str] = set()  # erased requests first seen in a segment: earlier rows may hold them
        self._last_pass = 0.0

    def start(self) -> ErasureFollower:
        """Read the topic to its end (and the log's erasure statuses), then follow it on a thread."""
        try:
            self._catch_up()
        except KafkaException as exc:
            raise ErasureError("erasure_topic", f"cannot read {self.settings.erasure_topic}: {exc.args[0]}") from None
        self._thread = threading.Thread(target=self._follow, name="prefpair-erasures", daemon=True)
        self._thread.start()
        return self

    def _catch_up(self) -> None:
        seen_ms = int(time.time() * 1000)  # the acknowledgement covers what existed from here on
        if self._reader is None:
            self._reader = ErasureReader(self.settings)
        requests, end = self._reader.read(self.next_offset)
        statuses = read_statuses(self.log_dir)  # request ids of erased users and sessions, found in the log
        with self.guard:  # after this, every segment written leaves these rows out
            self._apply(requests)
            for status in statuses:
                self.request_ids.update(status.get("request_ids", []))
            self.next_offset = end
        write_ack(self.log_dir, self.instance, self.next_offset, seen_ms)

    def _apply(self, requests: list[ErasureRequest]) -> None:
        for request in requests:
            {"user": self.users, "session": self.sessions, "request": self.request_ids}[request.kind].add(request.value)
            log.info("erasure %s: leaving %s %s out of the log from now on", request.erasure_id, request.kind,
                     request.value)  # fmt: skip

    def _follow(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._catch_up()
            except Exception as exc:  # the broker away for a moment: try again, the set only grows
                log.warning("could not read the erasure topic: %s", exc)
            if time.monotonic() - self._last_pass >= LATE_PASS_S:
                self.clean_early_rows()

    def clean_early_rows(self) -> None:
        """Remove rows that landed before the follower knew their request was erased.

        A new request of an erased user is known as theirs only when its inference event arrives;
        a signal (which waits for nothing) or an orphaned feedback of that request may have landed
        in an earlier segment. Segments holding signals or orphans are rewritten without those
        requests, by the same pass as ``prefpair erase``.
        """
        with self.guard:
            learned, self._learned = self._learned, set()
        self._last_pass = time.monotonic()
        if not learned:
            return
        requests = [erasure_request("request", request_id, "prefpair consume") for request_id in sorted(learned)]
        try:
            report = erase_from_log(self.log_dir, requests,
                                    only=lambda s: s.has("signals.parquet") or s.has("orphans.parquet"))  # fmt: skip
        except Exception as exc:  # the log busy (a compaction, an erase): the next pass tries again
            with self.guard:
                self._learned |= learned
            log.warning("could not yet remove early rows of %d erased requests: %s", len(learned), exc)
            return
        if report.segments_rewritten:
            log.info("removed early rows of %d erased requests from %d segments", len(learned),
                     report.segments_rewritten)  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.clean_early_rows()
        remove_ack(self.log_dir, self.instance)
        if self._reader is not None:
            self._reader.close()

    @property
    def empty(self) -> bool:
        return not (self.users or self.sessions or self.request_ids)

    def filter(self, segment: SealedSegment) -> SealedSegment:
        """``segment`` without rows of erased identities, their offsets tombstoned. Call under :attr:`guard`."""
        if self.empty:
            return segment
        tables: dict[str, Any] = dict(segment.tables)
        tombstones: list[tuple[str, int]] = []
        for table, data in segment.tables.items():
            if not isinstance(data, pa.Table):  # rows not yet converted (orphans, signals): below
                continue
            hit = self._hits(data)
            if hit is None:
                continue
            gone = data.filter(hit)
            if table == "inference":  # their feedback may come later, as an orphan: know the request ids
                new = set(gone.column("request_id").to_pylist()) - self.request_ids
                self._learned |= new
                self.request_ids |= new
            column = "inference_offset" if table == "inference" else "feedback_offset"
            tombstones += [(table, int(o)) for o in gone.column(column).to_pylist()]
            tables[table] = data.filter(pc.invert(hit))
        for table, offset in (("orphans", "feedback_offset"), ("signals", "signal_offset")):
            rows = segment.tables.get(table, [])
            if isinstance(rows, list):
                tables[table] = [row for row in rows if row["request_id"] not in self.request_ids]
                tombstones += [(table, int(row[offset])) for row in rows if row["request_id"] in self.request_ids]
        pending = [item for item in segment.pending if item.row["request_id"] not in self.request_ids]
        tombstones += [(PENDING, item.offset) for item in segment.pending if item.row["request_id"] in self.request_ids]
        if not tombstones:
            return segment
        tables[ERASED] = pa.table({"table": [t for t, _ in tombstones], "offset": [o for _, o in tombstones]},
                                  schema=ERASED_LOG)  # fmt: skip
        return replace(segment, tables=tables, pending=pending)

    def _hits(self, data: pa.Table) -> Any:
        mask: Any = None
        wanted = (("request_id", self.request_ids), ("user_id", self.users), ("session_id", self.sessions))
        for column, values in wanted:
            if not values or column not in data.column_names:
                continue
            hit = pc.fill_null(pc.is_in(data.column(column), value_set=pa.array(sorted(values), pa.string())), False)
            mask = hit if mask is None else pc.or_(mask, hit)
        if mask is None or not pc.any(mask).as_py():
            return None
        return mask
