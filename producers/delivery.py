"""How the logger's events reach the broker, and what it learns of their fate.

:class:`EventDelivery` is the delivery half of :class:`~prefpair.producers.PreferenceLogger`:
the producer's config (idempotence and ``acks=all`` always on, the delivery timeout), sending
an encoded event (the size limit, the queue-full policy), delivery reports and client errors,
the thread that serves reports while the caller is idle, and ``flush`` / ``close`` with their
:class:`DeliveryReport`. It is a base class rather than a member so that a log call reaches the
producer and the counters through ``self`` as directly as before the split: no extra lookup or
call on the hot path.

Delivery reports (success counts, failures, the ``on_delivery_error`` callback) are served
by ``poll(0)`` after each log call and by a background thread of the logger's own, so a logger
that sits idle still learns of a failure when it happens; ``on_delivery_error`` may therefore
run on that thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Producer

from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.kafka import client_config, create_producer
from prefpair.producers.exceptions import (
    DeliveryError,
    FailedEvent,
    LoggerClosedError,
    ProducerError,
    QueueFullError,
)
from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.wire import Codec, codec_for

log = logging.getLogger("prefpair.producers")

QueueFullPolicy = Literal["block", "raise"]

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's message.max.bytes default: key + value
DEFAULT_DELIVERY_TIMEOUT_MS = 300_000  # librdkafka's default; after it an event is a failure
DEFAULT_QUEUE_FULL_TIMEOUT = 5.0
DEFAULT_LINGER_MS = 5
DEFAULT_KEEP_FAILED = 100_000
CLOSE_MARGIN_S = 5.0  # close() waits the delivery timeout plus this, so every event resolves
PURGE_GRACE_S = 5.0
REQUIRED_PRODUCER_CONFIG = {"enable.idempotence": True, "acks": "all"}
_DELIVERY_TIMEOUT_KEYS = ("delivery.timeout.ms", "message.timeout.ms")

IDLE_POLL_S = 0.25
"""How often the logger's own thread serves delivery reports when the caller has not logged."""


@dataclass(frozen=True)
class LoggerStats:
    """Counters since the logger was created. ``queued``: handed to librdkafka, not yet resolved."""

    sent: int
    delivered: int
    failed: int
    queued: int


@dataclass(frozen=True)
class DeliveryReport:
    """What ``close()`` could and could not deliver.

    ``pending`` counts events whose fate is unknown (close gave up waiting before librdkafka's
    delivery timeout, and purging did not report back in time).
    """

    sent: int
    delivered: int
    failed: int
    pending: int
    failed_events: tuple[FailedEvent, ...]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.pending == 0

    @property
    def failed_event_ids(self) -> list[str]:
        return [f.event_id for f in self.failed_events if f.event_id is not None]

    def raise_for_failures(self) -> None:
        """Raise :class:`DeliveryError` (keeping the failed events) unless everything was delivered."""
        if self.failed_events or self.pending:
            raise DeliveryError(self.failed_events)


def producer_settings(
    settings: Settings, overrides: Mapping[str, Any] | None, delivery_timeout_ms: int | None
) -> dict[str, Any]:
    """The librdkafka config of the logger: settings' options, then ``overrides``, then ours."""
    config = client_config(settings)
    config.setdefault("linger.ms", DEFAULT_LINGER_MS)
    config.update(overrides or {})
    for name, required in REQUIRED_PRODUCER_CONFIG.items():
        given = config.get(name, required)
        if str(given).lower() != str(required).lower():
            expected = str(required).lower()
            raise ConfigError(name, f"the preference logger needs {name}={expected}, got {given!r}")
        config[name] = required
    if delivery_timeout_ms is None:
        configured = [config.pop(k) for k in _DELIVERY_TIMEOUT_KEYS if k in config]
        delivery_timeout_ms = int(configured[0]) if configured else DEFAULT_DELIVERY_TIMEOUT_MS
    else:
        for k in _DELIVERY_TIMEOUT_KEYS:
            config.pop(k, None)
    if delivery_timeout_ms <= 0:
        raise ConfigError("delivery_timeout_ms", "must be positive")
    config["delivery.timeout.ms"] = delivery_timeout_ms
    return config


def default_codec(settings: Settings) -> Codec:
    """Single-object encoding, or Schema Registry framing when a registry URL is configured."""
    return codec_for(settings)


class EventDelivery:
    """Sends encoded events with an idempotent producer and keeps account of what became of them.

    The parameters are :class:`~prefpair.producers.PreferenceLogger`'s (documented there). Its
    counters and ``_lock`` are the logger's: subclasses guard their own state with the same lock.
    """

    def __init__(
        self,
        settings: Settings | None,
        *,
        queue_full: QueueFullPolicy,
        queue_full_timeout: float,
        delivery_timeout_ms: int | None,
        on_delivery_error: Callable[[FailedEvent], None] | None,
        codec: Codec | None,
        producer_config: Mapping[str, Any] | None,
        max_message_bytes: int,
        keep_failed: int,
    ) -> None:
        if queue_full not in ("block", "raise"):
            raise ConfigError("queue_full", f"expected 'block' or 'raise', got {queue_full!r}")
        if queue_full_timeout < 0:
            raise ConfigError("queue_full_timeout", "must not be negative")
        if max_message_bytes <= 0:
            raise ConfigError("max_message_bytes", "must be positive")
        self.settings = settings if settings is not None else Settings.load()
        self.queue_full: QueueFullPolicy = queue_full
        self.queue_full_timeout = queue_full_timeout
        self.max_message_bytes = max_message_bytes
        self.on_delivery_error = on_delivery_error
        self.codec: Codec = codec if codec is not None else default_codec(self.settings)

        config = producer_settings(self.settings, producer_config, delivery_timeout_ms)
        self.delivery_timeout_ms = int(config["delivery.timeout.ms"])
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        self._producer: Producer = create_producer(config)

        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._sent = self._delivered = self._failed = 0
        self._failures: deque[FailedEvent] = deque(maxlen=keep_failed)
        self._fatal: str | None = None
        self._closed = False
        self._report: DeliveryReport | None = None
        self._stop_polling = threading.Event()
        self._last_poll = time.monotonic()
        self._poller = threading.Thread(target=self._poll_loop, name="prefpair-logger-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        """Serve delivery reports while the caller is idle. While it logs, its own ``poll(0)`` does,
        and this thread stays out of the way (it would compete for the GIL on the hot path)."""
        while not self._stop_polling.wait(IDLE_POLL_S):
            if time.monotonic() - self._last_poll >= IDLE_POLL_S:
                self._producer.poll(0)

    # ------------------------------------------------------------------ sending
    def _check_open(self) -> None:
        if self._closed:
            raise LoggerClosedError()
        if self._fatal is not None:
            raise ProducerError(f"the Kafka producer hit a fatal error and cannot send: {self._fatal}")

    def _send(self, topic: str, name: str, request_id: str, record: dict[str, Any]) -> None:
        self._send_encoded(topic, request_id, self.codec.encode(name, record))

    def _send_encoded(self, topic: str, request_id: str, value: bytes) -> None:
        """Hand an encoded event to librdkafka, keyed by its request id (refused if over the size limit)."""
        key = request_id.encode()
        size = len(value) + len(key)
        if size > self.max_message_bytes:
            raise ValidationError(
                "message",
                f"{size} bytes is {size - self.max_message_bytes} bytes over the limit of "
                f"{self.max_message_bytes} bytes",
            )
        producer = self._producer
        try:
            producer.produce(topic, value, key)
        except BufferError:
            self._produce_when_room(topic, value, key)
        except KafkaException as exc:
            raise ProducerError(f"Kafka refused the event: {_reason(exc)}") from None
        with self._lock:
            self._sent += 1
        producer.poll(0)
        self._last_poll = time.monotonic()

    def _produce_when_room(self, topic: str, value: bytes, key: bytes) -> None:
        if self.queue_full == "raise":
            raise QueueFullError(len(self._producer), 0)
        deadline = time.monotonic() + self.queue_full_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QueueFullError(len(self._producer), self.queue_full_timeout)
            self._producer.poll(min(0.05, left))  # serves delivery reports, which frees room
            try:
                self._producer.produce(topic, value, key)
                return
            except BufferError:
                continue
            except KafkaException as exc:
                raise ProducerError(f"Kafka refused the event: {_reason(exc)}") from None

    # ------------------------------------------------------------------ flush and close
    def flush(self, timeout: float | None = None) -> int:
        """Wait until every event is delivered or failed, at most ``timeout`` seconds (default: the
        delivery timeout plus a margin); returns how many are still unresolved."""
        wait = self._default_wait() if timeout is None else timeout
        remaining: int = self._producer.flush(wait)
        return remaining

    async def aflush(self, timeout: float | None = None) -> int:
        """:meth:`flush` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = None) -> DeliveryReport:
        """Stop accepting events, wait for delivery (see :meth:`flush`) and report; raises nothing.

        Events still unresolved when ``timeout`` runs out are purged and reported as failed.
        Calling it again returns the same report.
        """
        with self._close_lock:
            if self._report is not None:
                return self._report
            self._closed = True
            remaining = self.flush(timeout)
            if remaining:
                self._producer.purge(in_queue=True, in_flight=True, blocking=False)
                remaining = self._producer.flush(PURGE_GRACE_S)
            self._stop_polling.set()
            self._poller.join(5)
            with self._lock:
                self._report = DeliveryReport(
                    sent=self._sent,
                    delivered=self._delivered,
                    failed=self._failed,
                    pending=remaining,
                    failed_events=tuple(self._failures),
                )
            if not self._report.ok:
                log.warning(
                    "closed with %d event(s) not delivered and %d unresolved",
                    self._report.failed, self._report.pending,
                )  # fmt: skip
            return self._report

    async def aclose(self, timeout: float | None = None) -> DeliveryReport:
        """:meth:`close` in a worker thread."""
        return await asyncio.to_thread(self.close, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> LoggerStats:
        with self._lock:
            return LoggerStats(self._sent, self._delivered, self._failed, len(self._producer))

    def _default_wait(self) -> float:
        return self.delivery_timeout_ms / 1000 + CLOSE_MARGIN_S

    # ------------------------------------------------------------------ reports
    # Delivery reports and client errors, served by poll()/flush() in whichever thread calls them.
    def _on_delivery(self, err: KafkaError | None, msg: confluent_kafka.Message) -> None:
        if err is None:
            with self._lock:
                self._delivered += 1
            return
        failed = self._failed_event(err, msg)
        with self._lock:
            self._failed += 1
            self._failures.append(failed)
        log.debug("event %s to %s not delivered: %s", failed.event_id, failed.topic, failed.reason)
        if self.on_delivery_error is not None:
            try:
                self.on_delivery_error(failed)
            except Exception:  # a broken callback must not break delivery of the rest
                log.exception("on_delivery_error callback raised")

    def _failed_event(self, err: KafkaError, msg: confluent_kafka.Message) -> FailedEvent:
        value: bytes = msg.value() or b""
        key: bytes | None = msg.key()
        event_id = feedback_id = None
        request_id = key.decode(errors="replace") if key is not None else None
        try:
            _, record = self.codec.decode(value)
            event_id = record.get("event_id")
            feedback_id = record.get("feedback_id")
            request_id = record.get("request_id", request_id)
        except Exception:  # we wrote these bytes; failing to read them back must not lose the report
            log.debug("could not decode an undelivered message", exc_info=True)
        return FailedEvent(
            topic=msg.topic() or "",
            event_id=event_id,
            request_id=request_id,
            feedback_id=feedback_id,
            reason=err.str(),
            retriable=bool(err.retriable()),
            value=value,
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err.str()
            log.error("Kafka producer fatal error: %s", err.str())
        else:
            log.debug("Kafka producer error: %s", err.str())


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return str(error.str()) if hasattr(error, "str") else str(error)
