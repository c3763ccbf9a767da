"""Where the service sends feedback events: an idempotent Kafka producer whose acknowledgement
the HTTP answer waits for.

:class:`FeedbackSink` is what the HTTP layer needs (send one validated event, resolve once the
broker acknowledged it; ``close`` flushes). :class:`KafkaSink` provides it with a
confluent-kafka producer built by :mod:`prefpair.kafka`: the event is encoded with the contract's
codec (Avro single-object encoding, or Schema Registry framing when
``settings.schema_registry_url`` is set), keyed by its request id (so it lands in the partition
of its inference), and a background thread polls the producer so delivery callbacks resolve
the waiting request's future on its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException

from prefpair.config import Settings
from prefpair.errors import PrefpairError
from prefpair.kafka import client_config, create_producer
from prefpair.schemas import FeedbackEvent, SignalEvent
from prefpair.schemas.registry import FEEDBACK, SIGNAL
from prefpair.schemas.wire import Codec, codec_for
from prefpair.service.exceptions import DeliveryError

log = logging.getLogger("prefpair.service")

POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored an acknowledged event."""

    topic: str
    partition: int
    offset: int


class FeedbackSink(Protocol):
    """Sends feedback events; :meth:`send` returns only once the broker acknowledged."""

    async def send(self, event: FeedbackEvent | SignalEvent) -> Delivery: ...

    def close(self) -> None: ...


class KafkaSink:
    """Acknowledged sends to ``settings.feedback_topic`` with an idempotent producer (``acks=all``).

    ``ack_timeout`` bounds both librdkafka's own delivery timeout and the wait, so a send ends
    with a definite answer: acknowledged, or :class:`DeliveryError` (the client retries; the
    feedback id keeps a retry from doubling the feedback, see the service README).
    """

    def __init__(self, settings: Settings, ack_timeout: float = 30.0, codec: Codec | None = None) -> None:
        self.topic = settings.feedback_topic
        self.ack_timeout = ack_timeout
        self._codec = codec or codec_for(settings)
        self._producer = create_producer(
            client_config(
                settings,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                delivery_timeout_ms=max(1000, int(ack_timeout * 1000)),
            )
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="prefpair-service-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_INTERVAL_S)

    async def send(self, event: FeedbackEvent | SignalEvent) -> Delivery:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()

        def settle(outcome: Delivery | DeliveryError) -> None:
            if future.done():  # the waiter timed out or was cancelled
                return
            if isinstance(outcome, DeliveryError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        def on_delivery(err: Any, msg: Any) -> None:  # runs on the poll thread
            outcome: Delivery | DeliveryError
            if err is not None:
                outcome = DeliveryError(self.topic, err.str())
            else:
                outcome = Delivery(msg.topic(), msg.partition(), msg.offset())
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody waits
                loop.call_soon_threadsafe(settle, outcome)

        if self._closed.is_set():
            raise DeliveryError(self.topic, "the service is shutting down")
        try:
            payload = self._codec.encode(SIGNAL if isinstance(event, SignalEvent) else FEEDBACK, event.to_avro())
        except PrefpairError as exc:  # the Schema Registry refused or did not answer
            raise DeliveryError(self.topic, str(exc)) from None
        try:
            self._producer.produce(
                self.topic, key=event.request_id.encode("utf-8"), value=payload, on_delivery=on_delivery
            )
        except BufferError:
            raise DeliveryError(self.topic, "producer queue is full; retry shortly") from None
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            raise DeliveryError(self.topic, error.str() if hasattr(error, "str") else str(error)) from None
        try:
            # librdkafka reports a failure by delivery.timeout.ms; the margin covers the callback's way here.
            return await asyncio.wait_for(asyncio.shield(future), self.ack_timeout + 5)
        except TimeoutError:
            raise DeliveryError(self.topic, f"no acknowledgement within {self.ack_timeout:g}s") from None

    def close(self) -> None:
        """Stop polling, then deliver what is still queued (at most ``ack_timeout`` seconds)."""
        self._closed.set()
        self._poller.join(timeout=5)
        remaining = self._producer.flush(self.ack_timeout)
        if remaining:
            log.warning("%d feedback events were not acknowledged before shutdown", remaining)
