"""Small keyed topics of JSON events beside the data topics: experiment definitions and token events.

The data topics (inference, feedback) carry the Avro contract and are joined by the consumer;
these carry a handful of events that every reader wants *all* of (an experiment's definition, a
token's issue, uses and revocation). They have one partition, so a reader sees them in the order
they were written, and they are read from the beginning by each reader:

- :func:`ensure_topic` creates one when it is missing (``cleanup.policy=compact`` for topics whose
  latest event per key is the state, such as experiment definitions);
  ``prefpair topics create`` creates both of prefpair's up front (:mod:`prefpair.topics`);
- :class:`TopicWriter` sends events with an idempotent producer (``acks=all``) and hands back a
  future that resolves once the broker acknowledged;
- :class:`TopicFollower` reads a topic from its beginning on a thread of its own and keeps
  following it, calling back for each event; :func:`read_topic` reads it once, to its end.

Followers are assigned every partition directly (no group membership, nothing committed), with a
group id of their own, so every reader (each service instance) sees every event.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

from prefpair.config import Settings
from prefpair.errors import KafkaUnavailableError, PrefpairError
from prefpair.kafka import client_config, create_admin, create_consumer, create_producer, resolve_bootstrap

log = logging.getLogger(__name__)

POLL_S = 0.1
DEFAULT_TOKEN_MAX_TTL_S = 30 * 24 * 3600
"""The longest presigned token life the service allows unless told (``--token-max-ttl``)."""
TOKEN_HISTORY_SLACK_S = 86_400
FETCH_WAIT_MS = 100  # how long the broker may hold a fetch: bounds how late a follower sees an event


class EventTopicError(PrefpairError):
    """An event topic could not be created, written or read."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"topic {topic}: {reason}")
        self.topic = topic
        self.reason = reason


@dataclass(frozen=True)
class TopicRecord:
    """One event read from an event topic."""

    key: bytes | None
    value: bytes
    partition: int
    offset: int
    timestamp_ms: int


def ensure_topic(
    settings: Settings, topic: str, *, compact: bool = False, retention_ms: int | None = None, timeout: float = 30.0
) -> None:
    """Create ``topic`` (one partition, the settings' replication; ``retention_ms`` or the settings')
    unless it exists."""
    admin = create_admin(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=min(timeout, 10.0))
    except KafkaException as exc:
        raise KafkaUnavailableError(resolve_bootstrap(settings), str(exc.args[0])) from None
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        return
    retention = settings.retention_ms if retention_ms is None else retention_ms
    config = {"cleanup.policy": "compact"} if compact else {"retention.ms": str(retention)}
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=settings.replication_factor, config=config)],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    try:
        futures[topic].result()
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise EventTopicError(topic, f"cannot create it: {error.str()}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # producers need a leader before they can write
        found = admin.list_topics(topic, timeout=5).topics.get(topic)
        if found is not None and found.error is None and all(p.leader >= 0 for p in found.partitions.values()):
            return
        time.sleep(0.1)
    raise EventTopicError(topic, f"no leader within {timeout:g}s after creating it")


def tokens_retention_ms(settings: Settings, longest_token_s: int = DEFAULT_TOKEN_MAX_TTL_S) -> int:
    """Retention of the tokens topic: the settings' retention, but at least the longest token's life and a
    day, so no live token loses its issue or revocation event (-1, keep for ever, stays -1)."""
    if settings.retention_ms == -1:
        return -1
    return max(settings.retention_ms, (longest_token_s + TOKEN_HISTORY_SLACK_S) * 1000)


class TopicWriter:
    """Acknowledged sends to one event topic; a thread serves the delivery reports."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self._producer = create_producer(
            client_config(settings, enable_idempotence=True, acks="all", linger_ms=0)
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=f"prefpair-writer-{topic}", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_S)

    def send(self, key: str, value: bytes) -> Future[TopicRecord]:
        """Send one event keyed by ``key``; the future resolves once the broker acknowledged it
        (or fails with :class:`EventTopicError`)."""
        future: Future[TopicRecord] = Future()

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                future.set_exception(EventTopicError(self.topic, f"not acknowledged: {err.str()}"))
            else:
                future.set_result(
                    TopicRecord(msg.key(), msg.value(), msg.partition(), msg.offset(), msg.timestamp()[1])
                )

        if self._closed.is_set():
            raise EventTopicError(self.topic, "the writer is closed")
        try:
            self._producer.produce(self.topic, key=key.encode("utf-8"), value=value, on_delivery=on_delivery)
        except (BufferError, KafkaException) as exc:
            raise EventTopicError(self.topic, f"cannot send: {exc}") from None
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (at most ``timeout`` seconds), then stop."""
        self._closed.set()
        self._poller.join(timeout=5)
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d events to %s were not acknowledged before closing", remaining, self.topic)


class TopicFollower:
    """Reads ``topic`` from its beginning and keeps following it on a thread, calling ``on_record``
    for each event in offset order; :meth:`wait_caught_up` waits until what the topic held at
    :meth:`start` has been handed over."""

    def __init__(
        self, settings: Settings, topic: str, on_record: Callable[[TopicRecord], None], *, group_prefix: str
    ) -> None:
        self.topic = topic
        self.group_id = f"{group_prefix}-{uuid.uuid4().hex[:12]}"
        self._settings = settings
        self._on_record = on_record
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self) -> None:
        self._consumer = create_consumer(
            client_config(
                self._settings,
                group_id=self.group_id,
                enable_auto_commit=False,
                enable_partition_eof=True,
                fetch_wait_max_ms=FETCH_WAIT_MS,
            )
        )
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=10)
        except KafkaException as exc:
            self._consumer.close()
            raise KafkaUnavailableError(resolve_bootstrap(self._settings), str(exc.args[0])) from None
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            self._consumer.close()
            raise EventTopicError(self.topic, "does not exist")
        partitions = sorted(found.partitions)
        self._pending_eof = set(partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        self._thread = threading.Thread(target=self._run, name=f"prefpair-follow-{self.topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stop.is_set():
                message = consumer.poll(POLL_S)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._pending_eof.discard(message.partition())
                        if not self._pending_eof:
                            self._caught_up.set()
                    else:
                        log.warning("reading %s: %s", self.topic, error.str())
                    continue
                record = TopicRecord(
                    message.key(), message.value(), message.partition(), message.offset(), message.timestamp()[1]
                )
                try:
                    self._on_record(record)
                except Exception:  # one bad event must not stop the follower
                    log.exception("skipped event %s/%d/%d", self.topic, record.partition, record.offset)
        finally:
            consumer.close()

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[TopicRecord]:
    """Every event ``topic`` holds now, in offset order (an empty list when it does not exist)."""
    records: list[TopicRecord] = []
    lock = threading.Lock()

    def keep(record: TopicRecord) -> None:
        with lock:
            records.append(record)

    follower = TopicFollower(settings, topic, keep, group_prefix="prefpair-read")
    try:
        follower.start()
    except EventTopicError:
        return []
    try:
        if not follower.wait_caught_up(timeout):
            raise EventTopicError(topic, f"not read to its end within {timeout:g}s")
    finally:
        follower.close()
    with lock:
        return sorted(records, key=lambda r: (r.partition, r.offset))
