"""Erasure requests: events on their own topic, the audit trail of who asked to erase what, and when.

A request names one identifier (a user id, a request id or a session id) and nothing else
personal; :func:`publish_erasure` appends it to ``Settings.erasure_topic`` (one partition, kept
for ever, created on first use) and :func:`read_erasures` reads them all back. Carrying a request
out (rewriting the log, dropping late events) is the consumer's part
(:mod:`prefpair.consumers.erasure`); the SDK, the service and ``prefpair erase`` only publish.

The events are JSON, not Avro: a handful of small, rare control events read by prefpair alone,
never joined or compiled, that must stay readable by an operator with any Kafka tool
(``kcat -C -t prefpair.erasures``) long after the data contract has evolved.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported without __all__
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefpair.config import Settings
from prefpair.errors import PrefpairError
from prefpair.kafka import client_config, create_admin, create_consumer, create_producer, resolve_bootstrap
from prefpair.topics import TopicError, wait_for_leaders

ErasureKind = Literal["user", "request", "session"]
KIND_FIELDS: dict[str, str] = {"user": "user_id", "request": "request_id", "session": "session_id"}
"""Which inference column each kind of identifier is."""


class ErasureError(PrefpairError):
    """An erasure request is malformed, or could not be published or read."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ErasureRequest(BaseModel):
    """One request to erase every row of one identifier: who asked, what, when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    erasure_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    kind: ErasureKind
    value: str = Field(min_length=1, max_length=512)
    requested_by: str = Field(min_length=1, max_length=256, description="who asked (an operator, a service key)")
    requested_at_ms: int = Field(default_factory=lambda: int(time.time() * 1000), ge=0)

    @property
    def column(self) -> str:
        return KIND_FIELDS[self.kind]


def erasure_request(kind: str, value: str, requested_by: str) -> ErasureRequest:
    """A validated request; a bad kind or an empty identifier is an ErasureError naming the field."""
    if kind not in KIND_FIELDS:
        raise ErasureError("kind", f"expected one of {', '.join(KIND_FIELDS)}, got {kind!r}")
    try:
        return ErasureRequest.model_validate({"kind": kind, "value": value, "requested_by": requested_by})
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ErasureError(".".join(str(p) for p in problem["loc"]) or "request", problem["msg"]) from None


def ensure_erasure_topic(settings: Settings, timeout: float = 30.0) -> None:
    """Create the erasure topic (one partition, retention -1: the audit trail) unless it exists, and
    return once its partition has a leader (as :func:`~prefpair.topics.create_topics` does), so the
    first read or write after a creation finds it."""
    admin = create_admin(client_config(settings))
    topic = settings.erasure_topic
    if topic not in admin.list_topics(timeout=timeout).topics:
        new = NewTopic(topic, num_partitions=1, replication_factor=settings.replication_factor,
                       config={"retention.ms": "-1"})  # fmt: skip
        for future in admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ErasureError("erasure_topic", f"cannot create {topic}: {exc.args[0].str()}") from None
    try:
        wait_for_leaders(admin, resolve_bootstrap(settings), (topic,), timeout)
    except TopicError as exc:
        raise ErasureError("erasure_topic", str(exc)) from None


def publish_erasure(settings: Settings, request: ErasureRequest, timeout: float = 30.0) -> int:
    """Append ``request`` to the erasure topic and wait for the broker's ack; its offset."""
    ensure_erasure_topic(settings, timeout)
    producer = create_producer(client_config(settings, enable_idempotence=True, acks="all"))
    delivered: list[int] = []
    failed: list[str] = []

    def report(error: KafkaError | None, message: object) -> None:
        if error is not None:
            failed.append(error.str())
        else:
            delivered.append(message.offset())  # type: ignore[attr-defined]

    producer.produce(settings.erasure_topic, request.model_dump_json().encode(), key=request.value.encode(),
                     on_delivery=report)  # fmt: skip
    producer.flush(timeout)
    if failed or not delivered:
        reason = failed[0] if failed else f"no acknowledgement within {timeout:.0f} s"
        raise ErasureError("erasure_topic", f"cannot publish to {settings.erasure_topic}: {reason}")
    return delivered[0]


def read_erasures(settings: Settings, start: int = 0, timeout: float = 30.0) -> tuple[list[ErasureRequest], int]:
    """Every request on the erasure topic from offset ``start`` to its end, and the offset after them."""
    reader = ErasureReader(settings, timeout)
    try:
        return reader.read(start, timeout)
    finally:
        reader.close()


_NOT_YET_KNOWN = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
                            KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION})  # fmt: skip
"""Errors of a topic the client does not know yet (just created), not of a broker that is away."""


class ErasureReader:
    """One open consumer of the erasure topic (no group), for reading it again and again cheaply."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        ensure_erasure_topic(settings, timeout)
        self.topic = settings.erasure_topic
        self._consumer = create_consumer(client_config(settings, group_id=f"prefpair-erasures-{uuid.uuid4().hex}",
                                                       enable_auto_commit=False))  # fmt: skip
        self._position: int | None = None

    def read(self, start: int, timeout: float = 30.0) -> tuple[list[ErasureRequest], int]:
        """The requests from offset ``start`` to the topic's end now, and the offset after them."""
        end = self._end(timeout)
        requests: list[ErasureRequest] = []
        if end <= start:
            return requests, max(start, end)
        if self._position != start:
            self._consumer.assign([TopicPartition(self.topic, 0, start)])
        deadline = time.monotonic() + timeout
        position = start
        while position < end:
            if time.monotonic() > deadline:
                raise ErasureError("erasure_topic", f"could not read {self.topic} to {end} in {timeout} s")
            message = self._consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            position = (message.offset() or 0) + 1
            try:
                requests.append(ErasureRequest.model_validate_json(message.value() or b""))
            except ValidationError:
                continue  # not ours to act on: a malformed event erases nothing
        self._position = position
        return requests, position

    def _end(self, timeout: float) -> int:
        """The topic's end offset, once this client knows the topic.

        :func:`ensure_erasure_topic` returns once the topic has a leader, but a topic another
        process created a moment ago (or recreated) can still be missing from this client's
        metadata: asked then, librdkafka answers "unknown partition" at once. That is asked again
        until ``timeout``, so a consumer's first start does not fail on it (it did, now and then,
        under load).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                remaining = max(deadline - time.monotonic(), 0.1)
                _, end = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=remaining)
                return int(end)
            except KafkaException as exc:
                if exc.args[0].code() not in _NOT_YET_KNOWN or time.monotonic() >= deadline:
                    raise
            time.sleep(0.2)

    def close(self) -> None:
        self._consumer.close()
