"""The daemon's garbage-collection policy: no automatic cyclic collection while it runs, a full one now and then.

The daemon holds hundreds of thousands of decoded rows (fastavro builds about ten dicts and lists
per inference event: the hot state, the open segments, waiting feedback). CPython's automatic
collector walks young containers every 700 allocations and rescans the survivors as they age,
so with rows piling up between flushes it cost about a third of the decode time, which a plain
decode loop (rows dropped at once) never pays. The rows hold no reference cycles and are freed by
reference counting; only rare objects make cycles (a caught exception's traceback, a failed
future). So while a daemon runs in the process, automatic collection is off and
:class:`PeriodicCollection` runs a full collection every ``interval_s`` seconds of wall clock:
uncollected cycles are bounded by that interval, and the pause (one walk over the hot state, well
under a second at the default budget) costs a fraction of a percent.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

COLLECT_INTERVAL_S = 60.0
"""Seconds between the daemon's full collections."""

_lock = threading.Lock()
_running = 0
_was_enabled = False


@contextmanager
def manual_collection() -> Iterator[None]:
    """Automatic cyclic collection off while the block runs (counted across daemons of one process:
    the last one out restores what was there before the first one came)."""
    global _running, _was_enabled
    with _lock:
        if _running == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _was_enabled:
                gc.enable()


class PeriodicCollection:
    """A full collection when :meth:`tick` finds ``interval_s`` passed since the last one."""

    def __init__(self, interval_s: float = COLLECT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last = time.monotonic()
        self.collections = 0

    def tick(self, now: float) -> None:
        if now - self._last >= self.interval_s:
            gc.collect()
            self._last = time.monotonic()
            self.collections += 1
