"""Request limits: token-bucket rate limiting, a body-size cap (413), and the idempotency cache.

All state is in memory and per process: with several replicas behind a load balancer each
enforces its own rates, and a restart forgets buckets, used tokens and cached answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prefpair.service.exceptions import IdempotencyConflictError

T = TypeVar("T")


class RateLimiter:
    """One token bucket per identity: ``burst`` requests at once, refilled at ``rate`` per second.

    At most ``max_identities`` buckets are kept; the least recently used is dropped first
    (a dropped bucket comes back full, so the bound trades a little leniency for memory).
    """

    def __init__(self, rate: float, burst: int, max_identities: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # identity -> (tokens, at)
        self._lock = threading.Lock()

    def wait(self, identity: str, now: float | None = None) -> float:
        """Seconds until ``identity`` may spend again (0.0: it may now); spends nothing."""
        current = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(identity, (self.burst, current))
        tokens = min(self.burst, tokens + (current - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, identity: str, now: float | None = None) -> float:
        """Spend one request; 0.0 when allowed, else the seconds until one is available."""
        current = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(identity, (self.burst, current))
            tokens = min(self.burst, tokens + (current - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[identity] = (tokens - 1.0, current)
                wait = 0.0
            else:
                self._buckets[identity] = (tokens, current)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
            return wait


def retry_after_header(wait: float) -> str:
    """Whole seconds for a ``Retry-After`` header (at least 1)."""
    return str(max(1, math.ceil(wait)))


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodySizeLimit:
    """ASGI middleware answering 413 when a request body is larger than ``max_bytes``.

    A declared ``Content-Length`` is refused before reading; a chunked body is counted as it
    streams and refused as soon as it passes the limit (whatever the app made of the aborted
    read is dropped).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        started = False
        too_large = False

        async def counting_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_large:  # the app's answer to the aborted body (FastAPI makes it a 400) is replaced
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, tracking_send)
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = (
            b'{"error":"body_too_large","message":"request body is larger than the limit of '
            + str(self.max_bytes).encode()
            + b' bytes"}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class IdempotencyCache(Generic[T]):
    """Answers of acknowledged requests by idempotency key, with the fingerprint of their body.

    A repeat with the same key and fingerprint gets the stored answer without running again;
    a concurrent repeat waits for the first to finish; the same key with another fingerprint
    raises :class:`~prefpair.service.exceptions.IdempotencyConflictError`. Failures are not
    stored, so a retry runs again.

    Limits: bounded to ``capacity`` answers (least recently used dropped first), per process,
    lost on restart. A repeat that misses the cache produces a second, identical CREATE event;
    readers resolve by feedback id (the latest event wins), so the feedback is not doubled.
    Lives on one event loop (not thread-safe).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._done: OrderedDict[str, tuple[str, T]] = OrderedDict()
        self._running: dict[str, tuple[str, asyncio.Future[T]]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def cached(self, key: str, fingerprint: str) -> T | None:
        """The stored answer for a repeat, or None; raises IdempotencyConflictError on another body."""
        entry = self._done.get(key)
        if entry is None:
            return None
        if entry[0] != fingerprint:
            raise IdempotencyConflictError(key)
        self._done.move_to_end(key)
        return entry[1]

    async def run(self, key: str, fingerprint: str, action: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The answer for ``key`` and whether it was replayed rather than produced now."""
        hit = self.cached(key, fingerprint)
        if hit is not None:
            return hit, True
        running = self._running.get(key)
        if running is not None:
            if running[0] != fingerprint:
                raise IdempotencyConflictError(key)
            return await asyncio.shield(running[1]), True
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = (fingerprint, future)
        try:
            result = await action()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody may be waiting
            raise
        else:
            future.set_result(result)
            self.store(key, fingerprint, result)
            return result, False
        finally:
            self._running.pop(key, None)

    def store(self, key: str, fingerprint: str, result: T) -> None:
        self._done[key] = (fingerprint, result)
        self._done.move_to_end(key)
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)

    def forget(self, key: str) -> None:
        """Drop the stored answer of ``key`` (its feedback was deleted: the id may be created anew)."""
        self._done.pop(key, None)
