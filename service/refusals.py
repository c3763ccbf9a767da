"""How every refusal is answered: one JSON shape (:class:`~prefpair.service.models.ErrorBody`:
``error``, ``message``, ``field``), whatever raised it (the service, the contract's checks,
FastAPI's request validation, Starlette's 404 and 405)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefpair.schemas import ValidationError
from prefpair.service.exceptions import DeliveryError, IdempotencyConflictError, RefusedError
from prefpair.service.jsonbody import field_path
from prefpair.service.models import ErrorBody


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one shape of every refusal; text quoted from the request (a lone surrogate) is escaped."""
    body = ErrorBody(error=code, message=_utf8(message), field=None if field is None else _utf8(field))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal becomes an :class:`ErrorBody` (``error``, ``message``, ``field``)."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RefusedError)
        return error_response(exc.status, exc.code, exc.reason, exc.field, exc.headers)

    async def contract_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return error_response(422, "invalid_feedback", str(exc), exc.field)

    async def request_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field_name = field_path(loc) or None
        message = f"{field_name}: {first.get('msg')}" if field_name else str(first.get("msg"))
        return error_response(422, "invalid_request", message, field_name)

    async def conflict(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, IdempotencyConflictError)
        return error_response(409, "idempotency_conflict", str(exc), "id")

    async def unavailable(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DeliveryError)
        return error_response(
            503,
            "broker_unavailable",
            f"the broker did not acknowledge ({exc.reason}); retry with the same feedback id",
            None,
            {"Retry-After": "5"},
        )

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None, dict(exc.headers or {}))

    app.add_exception_handler(RefusedError, api_error)
    app.add_exception_handler(ValidationError, contract_error)
    app.add_exception_handler(RequestValidationError, request_error)
    app.add_exception_handler(IdempotencyConflictError, conflict)
    app.add_exception_handler(DeliveryError, unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)
