"""Errors of the producer SDK. Bad input is a :class:`prefpair.schemas.ValidationError`; these
are about getting valid events to Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prefpair.errors import PrefpairError


@dataclass(frozen=True)
class FailedEvent:
    """One event librdkafka gave up on: where it was going, which event, and why.

    ``value`` is the encoded message as it would have been written, so a caller can re-send
    it or park it; ``event_id``, ``request_id`` and ``feedback_id`` are read back from it.
    """

    topic: str
    event_id: str | None
    request_id: str | None
    feedback_id: str | None
    reason: str
    retriable: bool
    value: bytes = field(repr=False)


class ProducerError(PrefpairError):
    """Base class of the producer SDK's errors."""


class QueueFullError(ProducerError):
    """librdkafka's local queue stayed full: the event was NOT accepted (never a silent drop).

    Raised at once with ``queue_full="raise"``, or after ``timeout`` seconds of waiting with
    ``queue_full="block"``. ``queued`` is how many messages were waiting for the broker.
    """

    def __init__(self, queued: int, timeout: float) -> None:
        self.queued = queued
        self.timeout = timeout
        waited = f"after waiting {timeout:g} s" if timeout > 0 else "at once (queue_full='raise')"
        super().__init__(f"local producer queue is full ({queued} messages waiting); event refused {waited}")


class DeliveryError(ProducerError):
    """Events the broker never acknowledged; ``failed`` keeps each one (with its bytes)."""

    def __init__(self, failed: Sequence[FailedEvent]) -> None:
        self.failed = tuple(failed)
        first = f": {self.failed[0].reason}" if self.failed else ""
        super().__init__(f"{len(self.failed)} event(s) were not delivered{first}")


class LoggerClosedError(ProducerError):
    """A log call on a PreferenceLogger that was already closed."""

    def __init__(self) -> None:
        super().__init__("this PreferenceLogger is closed; create a new one")
