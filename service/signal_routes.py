"""The implicit-signal write: ``POST /v1/signals`` (what browser code sends when a user copies,
edits, regenerates, dwells on... an output); ``202`` once the broker acknowledged its event."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel, Field

from prefpair.schemas import SignalEvent
from prefpair.schemas.models import SIGNAL_KINDS, now_ms
from prefpair.service.exceptions import DeliveryError
from prefpair.service.limits import IdempotencyCache
from prefpair.service.models import ID_MAX, TEXT_MAX, _Body
from prefpair.service.routing import ERRORS, Caller, replay_headers
from prefpair.service.state import ServiceState, body_fingerprint


class SignalCreate(_Body):
    """``POST /v1/signals``: one implicit signal on a request (``signal.avsc``)."""

    id: str | None = Field(
        default=None, min_length=1, max_length=ID_MAX, description="Signal id; a new one when omitted."
    )
    request_id: str = Field(min_length=1, max_length=ID_MAX)
    kind: str = Field(min_length=1, max_length=64, description=f"One of: {', '.join(SIGNAL_KINDS)}.")
    candidate_id: str | None = Field(default=None, max_length=ID_MAX)
    value: float | None = Field(default=None, allow_inf_nan=False)
    text: str | None = Field(default=None, max_length=TEXT_MAX, description="edit: the user's edited text.")
    dwell_ms: int | None = Field(default=None, ge=0)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=100)


class SignalAccepted(BaseModel):
    """The broker acknowledged the signal: it is durable and will reach the log."""

    id: str = Field(description="The signal id.")
    request_id: str
    kind: str
    timestamp_ms: int
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def signal_event(body: SignalCreate, caller: str) -> SignalEvent:
    """The event of an API request, checked by the contract (raises ValidationError naming the field)."""
    data: dict[str, Any] = body.model_dump(mode="json", exclude={"id"})
    data.update(signal_id=body.id or str(uuid.uuid4()), timestamp_ms=now_ms(), source=f"api:{caller}")
    return SignalEvent.parse(data)


def add_signal_routes(app: FastAPI, state: ServiceState) -> None:
    """``POST /v1/signals``, tagged ``signals``; idempotent by signal id (a cache of its own)."""
    idempotency: IdempotencyCache[SignalAccepted] = IdempotencyCache(state.config.idempotency_cache_size)

    async def send(event: SignalEvent) -> SignalAccepted:
        if state.sink is None:
            raise DeliveryError(state.settings.feedback_topic, "the service is not connected to Kafka")
        delivery = await state.sink.send(event)
        return SignalAccepted(
            id=event.signal_id, request_id=event.request_id, kind=event.kind, timestamp_ms=event.timestamp_ms,
            topic=delivery.topic, partition=delivery.partition, offset=delivery.offset,
        )  # fmt: skip

    @app.post("/v1/signals", status_code=202, response_model=SignalAccepted, responses=ERRORS, tags=["signals"])
    async def post_signal(body: SignalCreate, caller: Caller, response: Response) -> SignalAccepted:
        """Log one implicit signal. A repeat of the same ``id`` with the same body returns the same answer
        without a second event; the same ``id`` with another body is a 409."""
        event = signal_event(body, caller)
        fingerprint = body_fingerprint(body.model_dump(mode="json"), caller)
        accepted, replayed = await idempotency.run(event.signal_id, fingerprint, lambda: send(event))
        response.headers.update(replay_headers(replayed))
        return accepted
