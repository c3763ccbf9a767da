"""``POST /v1/erasures``: an erasure request over HTTP, guarded by an admin key (``X-Admin-Key``).

The request is published to the erasure topic (:func:`prefpair.erasures.publish_erasure`), the
same event ``prefpair erase`` publishes; the consumer and ``prefpair erase`` carry it out on the
log. This service stops returning the erased rows at once: the request ids of the identity are
looked up in the log and every read leaves them out from then on (:class:`ErasureAwareReader`).
Admin keys are separate from API keys (``PREFPAIR_ADMIN_KEYS``); without one the
endpoint answers 403.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
from fastapi import FastAPI, Header
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from prefpair.erasures import ErasureError, ErasureRequest, erasure_request, publish_erasure
from prefpair.schemas.log import table_files
from prefpair.service.exceptions import RefusedError
from prefpair.service.reads import FeedbackFilter, LogReader
from prefpair.service.routing import ERRORS
from prefpair.service.state import ServiceState, key_fingerprint

ADMIN_KEY_HEADER = "X-Admin-Key"


class ErasureIn(BaseModel):
    """What to erase: one identifier."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["user", "request", "session"] = Field(description="what the value identifies")
    value: str = Field(min_length=1, max_length=512, description="the user id, request id or session id")


class ErasureAccepted(BaseModel):
    erasure_id: str
    kind: str
    value: str
    requested_at_ms: int
    offset: int = Field(description="the request's offset on the erasure topic")


class ErasureAwareReader(LogReader):
    """The log's reads, less the requests erased through this service (until the log is rewritten)."""

    def __init__(self, inner: LogReader) -> None:
        super().__init__(inner.log_dir)
        self.erased: set[str] = set()

    def get_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        found = super().get_feedback(feedback_id)
        return None if found is not None and found.get("request_id") in self.erased else found

    def list_feedback(
        self, where: FeedbackFilter, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        items, next_cursor = super().list_feedback(where, limit, cursor)
        return [item for item in items if item.get("request_id") not in self.erased], next_cursor

    def get_inference(self, request_id: str) -> dict[str, Any] | None:
        return None if request_id in self.erased else super().get_inference(request_id)

    def get_request(self, request_id: str) -> dict[str, Any] | None:
        return None if request_id in self.erased else super().get_request(request_id)


def request_ids_of(log_dir: Path, request: ErasureRequest) -> set[str]:
    """The request ids an erasure covers in the committed log: the one named, or the user's or session's."""
    if request.kind == "request":
        return {request.value}
    files = [str(f) for table in ("inference", "feedback") for f in table_files(log_dir, table)]
    if not files:
        return set()
    rows = duckdb.connect().execute(
        f"SELECT DISTINCT request_id FROM read_parquet(?, union_by_name = true) WHERE {request.column} = ?",
        [files, request.value],
    ).fetchall()
    return {str(row[0]) for row in rows}


def add_erasure_routes(app: FastAPI, state: ServiceState) -> None:
    """``POST /v1/erasures``, tagged ``admin``; wraps the state's reader so reads leave erased rows out."""
    reader = ErasureAwareReader(state.reader)
    state.reader = reader
    admin_keys = [k.get_secret_value().encode("utf-8") for k in state.config.admin_keys]

    @app.post("/v1/erasures", status_code=202, response_model=ErasureAccepted, responses=ERRORS, tags=["admin"])
    async def request_erasure(
        body: ErasureIn, x_admin_key: Annotated[str | None, Header(alias=ADMIN_KEY_HEADER)] = None
    ) -> dict[str, Any]:
        """Erase every row of a user, a request or a session: published to the erasure topic, left out of reads."""
        if not admin_keys:
            raise RefusedError(403, "erasure_disabled", "no admin key is configured (PREFPAIR_ADMIN_KEYS)")
        given = (x_admin_key or "").encode("utf-8")
        matched = False
        for key in admin_keys:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise RefusedError(401, "invalid_admin_key", f"missing or invalid {ADMIN_KEY_HEADER} header")
        try:
            request = erasure_request(body.kind, body.value, f"service admin key {key_fingerprint(x_admin_key or '')}")
        except ErasureError as exc:
            raise RefusedError(422, "invalid_erasure", str(exc), exc.field) from None
        offset = await run_in_threadpool(publish_erasure, state.settings, request)
        ids = await run_in_threadpool(request_ids_of, reader.log_dir, request)
        reader.erased.update(ids)
        return {**request.model_dump(include={"erasure_id", "kind", "value", "requested_at_ms"}), "offset": offset}
