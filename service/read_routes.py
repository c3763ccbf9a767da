"""Reads of the log: a feedback, a page of feedback, a request with all its feedback, each resolved
by :class:`~prefpair.service.reads.LogReader` (DuckDB, in a worker thread)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.concurrency import run_in_threadpool

from prefpair.schemas import SourceType
from prefpair.service.exceptions import BadCursorError, RefusedError
from prefpair.service.models import FeedbackOut, FeedbackPage, RequestOut
from prefpair.service.reads import MAX_LIMIT, FeedbackFilter
from prefpair.service.routing import ERRORS, Caller
from prefpair.service.state import ServiceState


def add_read_routes(app: FastAPI, state: ServiceState) -> None:
    """The reads of feedback and requests, tagged ``reads``."""

    @app.get("/v1/feedback/{feedback_id}", response_model=FeedbackOut, responses=ERRORS, tags=["reads"])
    async def get_feedback(
        feedback_id: Annotated[str, Path(min_length=1, max_length=256)], caller: Caller
    ) -> dict[str, Any]:
        """A feedback as resolved from the log (updates applied; deleted ones are 404)."""
        found = await run_in_threadpool(state.reader.get_feedback, feedback_id)
        if found is None:
            raise RefusedError(
                404, "feedback_not_found", f"feedback {feedback_id!r} is not in the log (or was deleted)"
            )
        return found

    @app.get("/v1/feedback", response_model=FeedbackPage, responses=ERRORS, tags=["reads"])
    async def list_feedback(
        caller: Caller,
        request_id: Annotated[str | None, Query(max_length=256)] = None,
        key: Annotated[str | None, Query(max_length=256)] = None,
        source_type: SourceType | None = None,
        has_score: bool | None = None,
        has_comment: bool | None = None,
        since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="Created before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page")] = None,
    ) -> dict[str, Any]:
        """Resolved feedback in (created, id) order, one page at a time."""
        where = FeedbackFilter(
            request_id=request_id,
            key=key,
            source_type=source_type.value if source_type else None,
            has_score=has_score,
            has_comment=has_comment,
            since_ms=to_ms(since, "since"),
            until_ms=to_ms(until, "until"),
        )
        try:
            items, next_cursor = await run_in_threadpool(state.reader.list_feedback, where, limit, cursor)
        except BadCursorError as exc:
            raise RefusedError(422, "invalid_cursor", str(exc), "cursor") from None
        return {"items": items, "next_cursor": next_cursor}

    @app.get("/v1/requests/{request_id}", response_model=RequestOut, responses=ERRORS, tags=["reads"])
    async def get_request(
        request_id: Annotated[str, Path(min_length=1, max_length=256)], caller: Caller
    ) -> dict[str, Any]:
        """A request's inference event and all its (resolved) feedback."""
        found = await run_in_threadpool(state.reader.get_request, request_id)
        if found is None:
            raise RefusedError(404, "request_not_found", f"request {request_id!r} is not in the log")
        return found


def to_ms(moment: datetime | None, name: str) -> int | None:
    """Epoch milliseconds of a query time (UTC when it has no zone); 422 when out of range."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        raise RefusedError(422, "invalid_request", f"{name}: time out of range", name) from None
