"""Starting the instance's event-topic followers (tokens, experiments) without holding up the service.

Each part creates its topic when missing, reads it to its end and keeps following it. Start-up
waits for them a bounded time (the ack timeout); while Kafka does not answer they are retried in
the background, and the routes that need them answer 503 until they are ready (a token is never
accepted by an instance that could have missed its revocation).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from prefpair.errors import PrefpairError

log = logging.getLogger("prefpair.service")

RETRY_S = 2.0
START_TIMEOUT_S = 30.0


class Followed(Protocol):
    """A part that follows an event topic: ``start`` leaves nothing open when it raises."""

    def start(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class FollowerStarter:
    """Starts ``parts`` in order on a thread of its own, retrying each until it starts or :meth:`close`."""

    def __init__(self, parts: Sequence[Followed]) -> None:
        self._parts = list(parts)
        self._started: list[Followed] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefpair-followers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for part in self._parts:
            while not self._stop.is_set():
                try:
                    part.start(START_TIMEOUT_S)
                except PrefpairError as exc:
                    log.warning("event topics not followed yet (retrying in %gs): %s", RETRY_S, exc)
                    self._stop.wait(RETRY_S)
                    continue
                if self._stop.is_set():
                    part.close()
                    return
                self._started.append(part)
                break
        if not self._stop.is_set():
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        for part in reversed(self._started):
            part.close()
