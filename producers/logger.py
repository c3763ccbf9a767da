"""``PreferenceLogger``: what serving code calls to log inferences and feedback.

Every call validates the event against the contract (:mod:`prefpair.schemas.models`), encodes
it (Avro single-object encoding, or Schema Registry framing when a registry URL is set) and
hands it to librdkafka, all in the calling thread, then returns. Bad input raises
:class:`~prefpair.schemas.ValidationError` naming the field before anything is sent.
librdkafka delivers in the background with an idempotent producer (``acks=all``), keyed by
request id so an inference and its feedback land in the same partition number of their topics.

Thread-safe: librdkafka's producer is, and the logger guards its own counters. From asyncio
code the log calls can be made directly on the loop: they take tens of microseconds and never
wait on the network (only a full local queue under ``queue_full="block"`` can wait, up to
``queue_full_timeout``; use ``queue_full="raise"`` on a loop). ``flush`` and ``close`` wait for
the broker: use :meth:`~PreferenceLogger.aflush` / :meth:`~PreferenceLogger.aclose` there.

Delivery reports (success counts, failures, the ``on_delivery_error`` callback) are served
by ``poll(0)`` after each log call and by a background thread of the logger's own, so a logger
that sits idle still learns of a failure when it happens; ``on_delivery_error`` may therefore
run on that thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

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
from prefpair.schemas.models import (
    Candidate,
    FeedbackConfig,
    FeedbackEvent,
    FeedbackOp,
    FeedbackSource,
    InferenceEvent,
    JudgmentKind,
    Message,
    PairwiseOutcome,
    SourceType,
    now_ms,
)
from prefpair.schemas.registry import FEEDBACK, INFERENCE
from prefpair.schemas.wire import Codec, codec_for

log = logging.getLogger("prefpair.producers")

QueueFullPolicy = Literal["block", "raise"]
SourceLike = FeedbackSource | Mapping[str, Any] | SourceType | str
ConfigLike = FeedbackConfig | Mapping[str, Any]

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's message.max.bytes default: key + value
DEFAULT_DELIVERY_TIMEOUT_MS = 300_000  # librdkafka's default; after it an event is a failure
DEFAULT_QUEUE_FULL_TIMEOUT = 5.0
DEFAULT_LINGER_MS = 5
DEFAULT_REMEMBER_REQUESTS = 10_000
DEFAULT_KEEP_FAILED = 100_000
CLOSE_MARGIN_S = 5.0  # close() waits the delivery timeout plus this, so every event resolves
PURGE_GRACE_S = 5.0
REQUIRED_PRODUCER_CONFIG = {"enable.idempotence": True, "acks": "all"}
_DELIVERY_TIMEOUT_KEYS = ("delivery.timeout.ms", "message.timeout.ms")


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


IDLE_POLL_S = 0.25
"""How often the logger's own thread serves delivery reports when the caller has not logged."""


def new_id() -> str:
    """A fresh request or feedback id: uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


def new_event_id() -> str:
    """A fresh event id: 128 random bits as 32 hex digits (a fifth of uuid4's cost, as unique)."""
    return os.urandom(16).hex()



class PreferenceLogger:
    """Logs inference and feedback events to Kafka for prefpair.

    ``settings``: connection and topics (default: :meth:`Settings.load`, i.e. ``PREFPAIR_*``).
    ``queue_full``: what a call does when librdkafka's local queue is full: ``"block"`` serves
    delivery reports and retries for up to ``queue_full_timeout`` seconds, ``"raise"`` raises
    :class:`QueueFullError` at once. Either way an event is sent or the call raises.
    ``delivery_timeout_ms``: how long librdkafka keeps retrying an event (e.g. while the broker
    is down) before reporting it failed (default: the option in the Kafka config, else 300 s).
    ``on_delivery_error(FailedEvent)``: called for each failed event, from the thread serving
    delivery reports. ``codec``: message framing (default: single-object encoding; Schema
    Registry framing when ``settings.schema_registry_url`` is set). ``producer_config``:
    librdkafka options on top of the settings' passthrough options (idempotence and
    ``acks=all`` cannot be turned off). ``max_message_bytes``: the largest key + value sent.
    ``remember_requests``: how many recent inferences' candidate ids are kept to reject feedback
    naming an unknown candidate.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        queue_full: QueueFullPolicy = "block",
        queue_full_timeout: float = DEFAULT_QUEUE_FULL_TIMEOUT,
        delivery_timeout_ms: int | None = None,
        on_delivery_error: Callable[[FailedEvent], None] | None = None,
        codec: Codec | None = None,
        producer_config: Mapping[str, Any] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        remember_requests: int = DEFAULT_REMEMBER_REQUESTS,
        keep_failed: int = DEFAULT_KEEP_FAILED,
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
        self._inference_topic = self.settings.inference_topic
        self._feedback_topic = self.settings.feedback_topic

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
        self._remember_requests = remember_requests
        self._known: OrderedDict[str, frozenset[str]] = OrderedDict()
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

    # ------------------------------------------------------------------ inference
    def log_inference(
        self,
        *,
        prompt: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        system_prompt: str | None = None,
        candidates: Sequence[Candidate | Mapping[str, Any]],
        request_id: str | None = None,
        presentation_order: Sequence[str] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        environment: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Log one model call as shown to the user; returns its request id (generated if not given)."""
        self._check_open()
        if request_id is None:
            request_id = new_id()
        event = InferenceEvent.parse(
            {
                "event_id": new_event_id(),
                "request_id": request_id,
                "timestamp_ms": now_ms() if timestamp_ms is None else timestamp_ms,
                "system_prompt": system_prompt,
                "prompt": prompt,
                "messages": messages,
                "candidates": candidates,
                "presentation_order": () if presentation_order is None else presentation_order,
                "user_id": user_id,
                "session_id": session_id,
                "environment": environment,
                "tags": () if tags is None else tags,
                "metadata": {} if metadata is None else metadata,
            }
        )
        self._send(self._inference_topic, INFERENCE, request_id, inference_record(event))
        self._remember(request_id, frozenset(c.candidate_id for c in event.candidates))
        return request_id

    # ------------------------------------------------------------------ feedback
    def log_preference(
        self,
        request_id: str,
        *,
        chosen: str,
        rejected: str,
        outcome: PairwiseOutcome | str = PairwiseOutcome.PREFERRED,
        key: str = "preference",
        source: SourceLike | None = SourceType.API,
        feedback_id: str | None = None,
        comment: str | None = None,
        config: ConfigLike | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Log a pairwise judgment (``chosen`` beat ``rejected``, a TIE or BOTH_BAD); returns the feedback id.

        ``candidates``: the inference's candidate ids, if known, to reject unknown ids (the
        logger also checks against inferences it logged itself recently).
        """
        return self._log_feedback(
            FeedbackOp.CREATE, feedback_id, request_id, candidates,
            key=key, kind=JudgmentKind.PAIRWISE, outcome=_outcome(outcome), chosen_id=chosen,
            rejected_id=rejected, comment=comment, config=config, source=_source(source),
            metadata=metadata, timestamp_ms=timestamp_ms,
        )  # fmt: skip

    def log_ranking(
        self,
        request_id: str,
        *,
        ranking: Sequence[Sequence[str]] | Sequence[str],
        key: str = "ranking",
        source: SourceLike | None = SourceType.API,
        feedback_id: str | None = None,
        comment: str | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Log a ranking, best first; ``[["a"], ["b", "c"]]`` ties b and c, ``["a", "b"]`` has no ties."""
        return self._log_feedback(
            FeedbackOp.CREATE, feedback_id, request_id, candidates,
            key=key, kind=JudgmentKind.RANKING, ranking=_ranking(ranking), comment=comment,
            source=_source(source), metadata=metadata, timestamp_ms=timestamp_ms,
        )  # fmt: skip

    def log_feedback(
        self,
        request_id: str,
        *,
        key: str,
        score: float | None = None,
        value: str | None = None,
        candidate: str | None = None,
        comment: str | None = None,
        correction: str | None = None,
        config: ConfigLike | None = None,
        source: SourceLike | None = SourceType.API,
        feedback_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Log a score or value (thumbs, rating, category, reward) on one candidate; returns its feedback id.

        ``config`` (continuous min/max, or allowed categories) is checked here and travels with
        the event.
        """
        _check_score(score)
        return self._log_feedback(
            FeedbackOp.CREATE, feedback_id, request_id, candidates,
            key=key, kind=JudgmentKind.SCORE, candidate_id=candidate, score=score, value=value,
            comment=comment, correction=correction, config=config, source=_source(source),
            metadata=metadata, timestamp_ms=timestamp_ms,
        )  # fmt: skip

    def update_feedback(
        self,
        feedback_id: str,
        *,
        request_id: str,
        key: str | None = None,
        chosen: str | None = None,
        rejected: str | None = None,
        outcome: PairwiseOutcome | str | None = None,
        ranking: Sequence[Sequence[str]] | Sequence[str] | None = None,
        score: float | None = None,
        value: str | None = None,
        candidate: str | None = None,
        comment: str | None = None,
        correction: str | None = None,
        config: ConfigLike | None = None,
        source: SourceLike | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Change earlier feedback: a new UPDATE event with the same ``feedback_id``; None keeps a field.

        ``request_id`` is required because it is the Kafka key: the update must land in the
        partition of the feedback it changes, so the consumer sees both in order (the
        logger cannot look it up; the feedback may have been logged by another process). A
        changed judgment is restated whole: ``chosen`` and ``rejected`` (outcome defaults to
        PREFERRED), or the full ``ranking``, or ``score``/``value`` with ``candidate``.
        """
        kind = _update_kind(chosen, rejected, outcome, ranking, score, value, candidate)
        if kind is JudgmentKind.PAIRWISE and outcome is None:
            outcome = PairwiseOutcome.PREFERRED
        _check_score(score)
        self._log_feedback(
            FeedbackOp.UPDATE, feedback_id, request_id, candidates,
            key=key, kind=kind, outcome=None if outcome is None else _outcome(outcome),
            chosen_id=chosen, rejected_id=rejected,
            ranking=None if ranking is None else _ranking(ranking), candidate_id=candidate,
            score=score, value=value, comment=comment, correction=correction, config=config,
            source=_source(source), metadata=metadata, timestamp_ms=timestamp_ms,
        )  # fmt: skip

    def delete_feedback(
        self,
        feedback_id: str,
        *,
        request_id: str,
        source: SourceLike | None = None,
        metadata: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Withdraw earlier feedback: a DELETE event with the same ``feedback_id``.

        ``request_id`` is required for the same reason as in :meth:`update_feedback`.
        """
        self._log_feedback(
            FeedbackOp.DELETE, feedback_id, request_id, None,
            source=_source(source), metadata=metadata, timestamp_ms=timestamp_ms,
        )  # fmt: skip

    # ------------------------------------------------------------------ delivery
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"PreferenceLogger({state}, inference_topic={self._inference_topic!r}, "
                f"feedback_topic={self._feedback_topic!r})")  # fmt: skip

    # ------------------------------------------------------------------ internals
    def _log_feedback(
        self,
        op: FeedbackOp,
        feedback_id: str | None,
        request_id: str,
        candidates: Iterable[str] | None,
        *,
        key: str | None = None,
        kind: JudgmentKind | None = None,
        outcome: PairwiseOutcome | str | None = None,
        chosen_id: str | None = None,
        rejected_id: str | None = None,
        ranking: list[list[str]] | None = None,
        candidate_id: str | None = None,
        score: float | None = None,
        value: str | None = None,
        comment: str | None = None,
        correction: str | None = None,
        config: ConfigLike | None = None,
        source: FeedbackSource | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        self._check_open()
        if feedback_id is None:
            feedback_id = new_id()
        event = FeedbackEvent.parse(
            {
                "event_id": new_event_id(),
                "feedback_id": feedback_id,
                "op": op,
                "request_id": request_id,
                "timestamp_ms": now_ms() if timestamp_ms is None else timestamp_ms,
                "key": key,
                "kind": kind,
                "outcome": outcome,
                "chosen_id": chosen_id,
                "rejected_id": rejected_id,
                "ranking": ranking,
                "candidate_id": candidate_id,
                "score": score,
                "value": value,
                "comment": comment,
                "correction": correction,
                "config": config,
                "source": source,
                "metadata": {} if metadata is None else metadata,
            }
        )
        self._check_candidates(event, candidates)
        self._send(self._feedback_topic, FEEDBACK, request_id, feedback_record(event))
        return feedback_id

    def _check_open(self) -> None:
        if self._closed:
            raise LoggerClosedError()
        if self._fatal is not None:
            raise ProducerError(f"the Kafka producer hit a fatal error and cannot send: {self._fatal}")

    def _send(self, topic: str, name: str, request_id: str, record: dict[str, Any]) -> None:
        value = self.codec.encode(name, record)
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

    def _remember(self, request_id: str, candidate_ids: frozenset[str]) -> None:
        if self._remember_requests <= 0:
            return
        with self._lock:
            known = self._known
            known.pop(request_id, None)
            known[request_id] = candidate_ids
            if len(known) > self._remember_requests:
                known.popitem(last=False)

    def _check_candidates(self, event: FeedbackEvent, candidates: Iterable[str] | None) -> None:
        """Reject candidate ids the inference does not have, when we know its candidates."""
        if event.op is FeedbackOp.DELETE:
            return
        known: frozenset[str] | None
        if candidates is not None:
            known = frozenset(candidates)
        else:
            with self._lock:
                known = self._known.get(event.request_id)
        if known is None:
            return
        named = (("chosen_id", event.chosen_id), ("rejected_id", event.rejected_id),
                 ("candidate_id", event.candidate_id))  # fmt: skip
        for field, candidate_id in named:
            if candidate_id is not None and candidate_id not in known:
                raise _unknown_candidate(field, candidate_id, event.request_id, known)
        for group in event.ranking or ():
            for candidate_id in group:
                if candidate_id not in known:
                    raise _unknown_candidate("ranking", candidate_id, event.request_id, known)

    def _default_wait(self) -> float:
        return self.delivery_timeout_ms / 1000 + CLOSE_MARGIN_S

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


# --------------------------------------------------------------------------- helpers
# The dicts fastavro writes, read straight off validated models: the same content as
# ``model_dump()`` (the models forbid extra fields) at a tenth of its cost on the hot path.
def inference_record(event: InferenceEvent) -> dict[str, Any]:
    record = dict(event.__dict__)
    if event.messages is not None:
        record["messages"] = [m.__dict__ for m in event.messages]
    record["candidates"] = [_candidate_record(c) for c in event.candidates]
    return record


def _candidate_record(candidate: Candidate) -> dict[str, Any]:
    if candidate.messages is None:
        return candidate.__dict__
    return {**candidate.__dict__, "messages": [m.__dict__ for m in candidate.messages]}


def feedback_record(event: FeedbackEvent) -> dict[str, Any]:
    record = dict(event.__dict__)
    if event.config is not None:
        record["config"] = {**event.config.__dict__, "categories": [c.__dict__ for c in event.config.categories]}
    if event.source is not None:
        record["source"] = event.source.__dict__
    return record


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


_SOURCES = {member: FeedbackSource(type=member) for member in SourceType}


def _source(source: SourceLike | None) -> FeedbackSource | Mapping[str, Any] | None:
    """Accept a FeedbackSource, a dict, a SourceType or its name in any case (``"app_user"``)."""
    if source is None or isinstance(source, FeedbackSource):
        return source
    if isinstance(source, str):  # SourceType is a str too
        try:
            return _SOURCES[SourceType(source.upper())]
        except ValueError:
            allowed = ", ".join(m.value.lower() for m in SourceType)
            raise ValidationError("source", f"unknown source type {source!r} (one of {allowed})") from None
    if isinstance(source, Mapping):
        kind = source.get("type")
        if isinstance(kind, str) and not isinstance(kind, SourceType):
            return {**source, "type": kind.upper()}
        return source
    raise ValidationError(
        "source", f"expected a FeedbackSource, dict or source type name, got {type(source).__name__}"
    )


def _outcome(outcome: PairwiseOutcome | str) -> PairwiseOutcome | str:
    if isinstance(outcome, str) and not isinstance(outcome, PairwiseOutcome):
        return outcome.upper()
    return outcome


def _ranking(ranking: Sequence[Sequence[str]] | Sequence[str]) -> list[list[str]]:
    """``["a", "b"]`` means ``[["a"], ["b"]]``: no ties."""
    if isinstance(ranking, str):
        raise ValidationError("ranking", "expected a list of candidate ids, got a string")
    return [[item] if isinstance(item, str) else list(item) for item in ranking]


def _check_score(score: float | None) -> None:
    if score is not None and isinstance(score, int | float) and not math.isfinite(score):
        raise ValidationError("score", f"{score} is not a finite number")


def _update_kind(
    chosen: str | None, rejected: str | None, outcome: object, ranking: object,
    score: float | None, value: str | None, candidate: str | None,
) -> JudgmentKind | None:  # fmt: skip
    """Which judgment an update restates (None: only comment, correction, metadata...)."""
    kinds = []
    if chosen is not None or rejected is not None or outcome is not None:
        kinds.append((JudgmentKind.PAIRWISE, "chosen_id"))
    if ranking is not None:
        kinds.append((JudgmentKind.RANKING, "ranking"))
    if score is not None or value is not None or candidate is not None:
        kinds.append((JudgmentKind.SCORE, "score"))
    if len(kinds) > 1:
        first, second = kinds[0][0], kinds[1][0]
        raise ValidationError(kinds[1][1], f"an update restates one judgment, not {first} and {second}")
    return kinds[0][0] if kinds else None


def _unknown_candidate(field: str, candidate: str, request_id: str, known: frozenset[str]) -> ValidationError:
    listed = ", ".join(sorted(known))
    return ValidationError(field, f"unknown candidate id {candidate!r} for request {request_id!r} ({listed})")


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return str(error.str()) if hasattr(error, "str") else str(error)
