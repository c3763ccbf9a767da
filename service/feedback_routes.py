"""The feedback writes: ``POST /v1/feedback`` (one, and a batch), ``PATCH`` and ``DELETE`` on
``/v1/feedback/{id}``; each answers ``202`` once the broker acknowledged its event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from prefpair.schemas import FeedbackEvent, SourceType, ValidationError
from prefpair.schemas.models import now_ms
from prefpair.service.exceptions import DeliveryError, IdempotencyConflictError, RefusedError
from prefpair.service.models import Accepted, BatchAccepted, BatchBody, FeedbackCreate, FeedbackUpdate, text_of
from prefpair.service.routing import ERRORS, Caller, replay_headers
from prefpair.service.state import ServiceState, body_fingerprint


def add_feedback_routes(app: FastAPI, state: ServiceState) -> None:
    """The writes on ``/v1/feedback``, tagged ``feedback``."""

    async def create_one(body: FeedbackCreate, caller: str) -> tuple[Accepted, bool]:
        event = create_event(body, caller)
        fingerprint = body_fingerprint(body.model_dump(mode="json"), caller)
        return await state.idempotency.run(event.feedback_id, fingerprint, lambda: state.send(event))

    @app.post("/v1/feedback", status_code=202, response_model=Accepted, responses=ERRORS, tags=["feedback"])
    async def post_feedback(body: FeedbackCreate, caller: Caller, response: Response) -> Accepted:
        """Log one judgment. A repeat of the same ``id`` with the same body returns the same answer
        without a second event; the same ``id`` with another body is a 409."""
        accepted, replayed = await create_one(body, caller)
        response.headers.update(replay_headers(replayed))
        return accepted

    @app.post(
        "/v1/feedback/batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=ERRORS,
        tags=["feedback"],
    )
    async def post_batch(body: BatchBody, caller: Caller) -> BatchAccepted:
        """Log several judgments: all are checked before any is sent; each is idempotent by ``id``."""
        if len(body.feedback) > state.config.max_batch:
            raise RefusedError(
                422,
                "batch_too_large",
                f"feedback: at most {state.config.max_batch} items per batch",
                "feedback",
            )
        events = []
        for index, item in enumerate(body.feedback):
            try:
                events.append(create_event(item, caller))
            except ValidationError as exc:
                raise RefusedError(
                    422, "invalid_feedback", f"feedback[{index}].{exc}", f"feedback[{index}].{exc.field}"
                ) from None
        fingerprints = [body_fingerprint(item.model_dump(mode="json"), caller) for item in body.feedback]
        first_index: dict[str, int] = {}
        for index, (event, fingerprint) in enumerate(zip(events, fingerprints, strict=True)):
            if event.feedback_id in first_index:
                raise RefusedError(
                    422,
                    "duplicate_id",
                    f"feedback[{index}].id: {event.feedback_id!r} repeats "
                    f"feedback[{first_index[event.feedback_id]}].id",
                    f"feedback[{index}].id",
                )
            first_index[event.feedback_id] = index
            try:
                state.idempotency.cached(event.feedback_id, fingerprint)  # conflicts refused before any send
            except IdempotencyConflictError:
                raise RefusedError(
                    409,
                    "idempotency_conflict",
                    f"feedback[{index}].id: {event.feedback_id!r} was already used with a different body",
                    f"feedback[{index}].id",
                ) from None
        outcomes = await asyncio.gather(
            *(
                state.idempotency.run(event.feedback_id, fingerprint, _sender(state, event))
                for event, fingerprint in zip(events, fingerprints, strict=True)
            ),
            return_exceptions=True,
        )
        results: list[Accepted] = []
        failed: list[str] = []
        for index, (event, outcome) in enumerate(zip(events, outcomes, strict=True)):
            if isinstance(outcome, IdempotencyConflictError):
                raise RefusedError(
                    409,
                    "idempotency_conflict",
                    f"feedback[{index}].id: {event.feedback_id!r} was already used with a different body",
                    f"feedback[{index}].id",
                )
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, DeliveryError):
                    raise outcome
                failed.append(event.feedback_id)
                continue
            results.append(outcome[0])
        if failed:
            raise DeliveryError(
                state.settings.feedback_topic,
                f"{len(failed)} of {len(events)} not acknowledged (first: {failed[0]!r}); "
                "acknowledged ids are not sent twice",
            )
        return BatchAccepted(accepted=results)

    @app.patch(
        "/v1/feedback/{feedback_id}",
        status_code=202,
        response_model=Accepted,
        responses=ERRORS,
        tags=["feedback"],
    )
    async def patch_feedback(
        feedback_id: Annotated[str, Path(min_length=1, max_length=256)], body: FeedbackUpdate, caller: Caller
    ) -> Accepted:
        """Change fields of a feedback (an UPDATE event); omitted fields keep their value."""
        data = body.model_dump(exclude_none=True, exclude={"request_id"})
        if not data.get("metadata"):
            data.pop("metadata", None)
        if not data:
            raise RefusedError(422, "nothing_to_update", "body: give at least one field to update")
        request_id, existing = await locate(feedback_id, body.request_id)
        fields = body.model_dump(exclude={"request_id"})
        fields["correction"] = text_of(body.correction)
        if (
            fields["config"] is None
            and existing
            and existing.get("config")
            and (body.score is not None or body.value is not None)
        ):
            fields["config"] = existing["config"]  # check the new score against the feedback's own config
        event = FeedbackEvent.parse(
            {
                **fields,
                "event_id": uuid.uuid4().hex,
                "feedback_id": feedback_id,
                "op": "UPDATE",
                "request_id": request_id,
                "timestamp_ms": now_ms(),
            }
        )
        return await state.send(event)

    @app.delete(
        "/v1/feedback/{feedback_id}",
        status_code=202,
        response_model=Accepted,
        responses=ERRORS,
        tags=["feedback"],
    )
    async def delete_feedback(
        feedback_id: Annotated[str, Path(min_length=1, max_length=256)],
        caller: Caller,
        request_id: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=256,
                description="Needed only when the feedback is not yet in the log.",
            ),
        ] = None,
    ) -> Accepted:
        """Delete a feedback (a DELETE event; the log keeps history, reads stop showing it)."""
        rid, _ = await locate(feedback_id, request_id)
        event = FeedbackEvent.parse(
            {
                "event_id": uuid.uuid4().hex,
                "feedback_id": feedback_id,
                "op": "DELETE",
                "request_id": rid,
                "timestamp_ms": now_ms(),
            }
        )
        return await state.send(event)

    async def locate(feedback_id: str, request_id: str | None) -> tuple[str, dict[str, Any] | None]:
        """The request of a feedback: as given, from this process's recent writes, or from the log."""
        existing = await run_in_threadpool(state.reader.get_feedback, feedback_id)
        if existing is not None:
            if request_id is not None and request_id != existing["request_id"]:
                raise RefusedError(
                    409,
                    "wrong_request",
                    f"request_id: feedback {feedback_id!r} belongs to request {existing['request_id']!r}",
                    "request_id",
                )
            return str(existing["request_id"]), existing
        known = request_id or state.known_requests.get(feedback_id)
        if known is None:
            raise RefusedError(
                404,
                "feedback_not_found",
                f"feedback {feedback_id!r} is not in the log (pass request_id if it was just created)",
            )
        return known, None


def _sender(state: ServiceState, event: FeedbackEvent) -> Callable[[], Awaitable[Accepted]]:
    return lambda: state.send(event)


def create_event(body: FeedbackCreate, caller: str) -> FeedbackEvent:
    """The CREATE event of an API request, checked by the contract (raises ValidationError)."""
    data = body.model_dump(mode="json", exclude={"id"})
    data["correction"] = text_of(body.correction)
    if data["source"] is None:
        data["source"] = {"type": SourceType.API.value, "source_id": caller}
    data.update(
        event_id=uuid.uuid4().hex,
        feedback_id=body.id or str(uuid.uuid4()),
        op="CREATE",
        timestamp_ms=now_ms(),
    )
    return FeedbackEvent.parse(data)
