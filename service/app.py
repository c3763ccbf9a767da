"""The HTTP API of ``prefpair serve`` (FastAPI; the OpenAPI spec is served at ``/openapi.json``).

Writes (``POST``/``PATCH``/``DELETE`` on ``/v1/feedback``, presigned URLs) build a
:class:`~prefpair.schemas.FeedbackEvent` with the contract's own checks and answer ``202``
only after the broker acknowledged it; the Parquet log (and so the reads) catches up once
``prefpair consume`` has flushed. Reads query the log with DuckDB.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefpair import __version__
from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.schemas import FeedbackConfig, FeedbackEvent, FeedbackOp, SourceType, ValidationError
from prefpair.schemas.models import now_ms
from prefpair.service.config import ServiceConfig, TokenReuse
from prefpair.service.exceptions import (
    BadCursorError,
    DeliveryError,
    IdempotencyConflictError,
    RefusedError,
    TokenError,
)
from prefpair.service.jsonbody import (
    MAX_BODY_DEPTH,
    TOO_DEEP,
    depth_overflow,
    field_path,
    invalid_text,
    takes_json,
)
from prefpair.service.limits import (
    BodySizeLimit,
    BodyTooLarge,
    IdempotencyCache,
    RateLimiter,
    retry_after_header,
)
from prefpair.service.models import (
    Accepted,
    BatchAccepted,
    BatchBody,
    ErrorBody,
    FeedbackCreate,
    FeedbackOut,
    FeedbackPage,
    FeedbackUpdate,
    RequestOut,
    TokenCreate,
    TokenIssued,
    TokenSubmit,
    text_of,
)
from prefpair.service.reads import MAX_LIMIT, FeedbackFilter, LogReader
from prefpair.service.sink import Delivery, FeedbackSink
from prefpair.service.tokens import TokenClaims, TokenSigner, UsedTokens

log = logging.getLogger("prefpair.service")

API_KEY_HEADER = "X-API-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TOKEN_PATH = "/v1/feedback-tokens"


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one shape of every refusal; text quoted from the request (a lone surrogate) is escaped."""
    body = ErrorBody(error=code, message=_utf8(message), field=None if field is None else _utf8(field))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def key_fingerprint(key: str) -> str:
    """A loggable, stable name for an API key (never the key itself)."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def body_fingerprint(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass
class ServiceState:
    """Everything the endpoints share; one per app (so per process)."""

    settings: Settings
    config: ServiceConfig
    signer: TokenSigner
    reader: LogReader
    sink: FeedbackSink | None = None
    used_tokens: UsedTokens = field(init=False)
    idempotency: IdempotencyCache[Accepted] = field(init=False)
    key_limiter: RateLimiter = field(init=False)
    token_limiter: RateLimiter = field(init=False)
    failure_limiter: RateLimiter = field(init=False)
    known_requests: OrderedDict[str, str] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.used_tokens = UsedTokens(self.config.used_tokens_cache_size)
        self.idempotency = IdempotencyCache(self.config.idempotency_cache_size)
        self.key_limiter = RateLimiter(self.config.key_rate, self.config.key_burst)
        self.token_limiter = RateLimiter(self.config.token_rate, self.config.token_burst)
        self.failure_limiter = RateLimiter(self.config.auth_failure_rate, self.config.auth_failure_burst)
        self._keys = [k.get_secret_value().encode("utf-8") for k in self.config.api_keys]

    def check_key(self, given: str | None) -> str:
        """The fingerprint of a valid API key; a 401 RefusedError otherwise (constant-time compare)."""
        if not given:
            raise RefusedError(401, "missing_api_key", f"missing {API_KEY_HEADER} header")
        raw = given.encode("utf-8")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(raw, key)
        if not matched:
            raise RefusedError(401, "invalid_api_key", f"invalid API key in {API_KEY_HEADER} header")
        return key_fingerprint(given)

    @contextmanager
    def authenticating(self, client: str) -> Iterator[None]:
        """Lock out a client address after too many failed authentications (key or token guessing).

        Every 401 spends one of the address's ``auth_failure_burst`` chances, which come back at
        ``auth_failure_rate`` per second; with none left, it gets 429 until one is back, even with a
        right key. Addresses are as the ASGI server sees them (behind a proxy: the proxy's).
        """
        wait = self.failure_limiter.wait(client)
        if wait > 0:
            raise RefusedError(
                429,
                "too_many_failures",
                f"too many failed authentications from {client}; retry in {wait:.1f}s",
                headers={"Retry-After": retry_after_header(wait)},
            )
        try:
            yield
        except RefusedError as exc:
            if exc.status == 401:
                self.failure_limiter.take(client)
            raise

    def remember_request(self, feedback_id: str, request_id: str) -> None:
        self.known_requests[feedback_id] = request_id
        self.known_requests.move_to_end(feedback_id)
        while len(self.known_requests) > self.config.idempotency_cache_size:
            self.known_requests.popitem(last=False)

    async def send(self, event: FeedbackEvent) -> Accepted:
        """Produce ``event``; return once the broker acknowledged it."""
        if self.sink is None:
            raise DeliveryError(self.settings.feedback_topic, "the service is not connected to Kafka")
        delivery: Delivery = await self.sink.send(event)
        log.debug("acknowledged %s %s", event.op.value, event.feedback_id)
        if event.op is FeedbackOp.DELETE:
            # A later CREATE with this id is a new feedback, not a repeat of the deleted one.
            self.idempotency.forget(event.feedback_id)
        else:
            self.remember_request(event.feedback_id, event.request_id)
        return Accepted(
            id=event.feedback_id,
            request_id=event.request_id,
            op=event.op.value,
            event_id=event.event_id,
            timestamp_ms=event.timestamp_ms,
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        )


SinkFactory = Callable[[Settings, ServiceConfig], FeedbackSink]


def default_sink(settings: Settings, config: ServiceConfig) -> FeedbackSink:
    from prefpair.service.sink import KafkaSink

    return KafkaSink(settings, ack_timeout=config.ack_timeout)


def create_app(
    settings: Settings,
    config: ServiceConfig,
    sink_factory: SinkFactory | None = None,
) -> FastAPI:
    """The ASGI app; the sink (Kafka producer) opens at startup and is flushed and closed at shutdown."""
    if not config.token_secrets:
        raise ConfigError("token_secrets", "empty: give at least one KID:SECRET")
    state = ServiceState(
        settings=settings,
        config=config,
        signer=TokenSigner(config.token_secrets),
        reader=LogReader(settings.log_dir),
    )
    factory = sink_factory or default_sink

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.sink = await run_in_threadpool(factory, settings, config)
        log.info("serving feedback to topic %s; reading %s", settings.feedback_topic, settings.log_dir)
        try:
            yield
        finally:
            sink, state.sink = state.sink, None
            if sink is not None:
                await run_in_threadpool(sink.close)
            log.info("flushed and closed the producer")

    app = FastAPI(
        title="prefpair feedback API",
        version=__version__,
        description=(
            "Log feedback on LLM inferences to Kafka, hand out presigned feedback URLs, and read the "
            "joined Parquet log. Writes answer 202 once the broker acknowledged the event."
        ),
        lifespan=lifespan,
        redirect_slashes=False,  # a path that is not a route is a 404, never a redirect to another one
    )
    app.router.route_class = CheckedJsonRoute
    app.state.prefpair = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(
            JsonRefusalCORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", API_KEY_HEADER],
            expose_headers=["Retry-After", REPLAYED_HEADER],
            max_age=600,
        )
    add_routes(app, state)
    return app


class CheckedJsonRoute(APIRoute):
    """A route whose JSON body is held to :mod:`prefpair.service.jsonbody`'s rules before FastAPI
    parses and validates it: nested too deep, or not valid Unicode, anywhere in it, is a 422
    naming the field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            if takes_json(request.headers.get("content-type")):
                await check_json_body(request)
            return await handler(request)

        return checked


async def check_json_body(request: Request) -> None:
    """Refuse a JSON body nested deeper than any field may be, or with text that is not Unicode.

    The depth is checked on the raw text, before anything recurses through it; the parsed body
    is kept by the request, so FastAPI does not parse it again.
    """
    try:
        body = await request.body()
    except BodyTooLarge:
        raise RefusedError(413, "body_too_large", "request body is larger than the limit") from None
    if not body:
        return
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads reads bytes
    except UnicodeDecodeError as exc:
        reason = f"body: not Unicode text ({exc.reason} at byte {exc.start})"
        raise RefusedError(422, "invalid_request", reason) from None
    where = depth_overflow(text, MAX_BODY_DEPTH)
    if where is not None:
        name = field_path(where)
        raise RefusedError(422, "invalid_request", f"{name}: {TOO_DEEP}", name)
    try:
        value = await request.json()
    except json.JSONDecodeError:
        return  # not JSON: FastAPI answers 422 with the parser's message
    except ValueError as exc:  # JSON that Python does not read, e.g. an integer of over 4300 digits
        raise RefusedError(422, "invalid_request", f"body: {str(exc).split(';')[0]}") from None
    problem = invalid_text(value)
    if problem is not None:
        name = field_path(problem[0])
        raise RefusedError(422, "invalid_request", f"{name or 'body'}: {problem[1]}", name or None)


class JsonRefusalCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in the API's error shape."""

    # Starlette's words for what a preflight asked for and was refused, and the header that asked.
    ASKED_BY = {
        "origin": "Origin",
        "method": "Access-Control-Request-Method",
        "headers": "Access-Control-Request-Headers",
        "private-network": "Access-Control-Request-Private-Network",
    }

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8")
        refused = [part.strip() for part in reason.removeprefix("Disallowed CORS ").split(",")]
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        return error_response(
            response.status_code,
            "cors_refused",
            f"CORS preflight refused: {reason}",
            self.ASKED_BY.get(refused[0]),
            headers,
        )


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


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "Missing or invalid API key or token",
        403: "Token not valid for this use",
        404: "Not found",
        409: "Id reused with a different body",
        413: "Body too large",
        422: "Invalid request or feedback",
        429: "Rate limit exceeded (see Retry-After)",
        503: "Broker did not acknowledge",
    }.items()
}


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


KEY_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="One of the configured API keys")


async def api_key(request: Request, given: Annotated[str | None, Security(KEY_HEADER)] = None) -> str:
    """Dependency: the caller's key fingerprint, after the key check and its rate limit."""
    state: ServiceState = request.app.state.prefpair
    with state.authenticating(client_address(request)):
        identity = state.check_key(given)
    wait = state.key_limiter.take(identity)
    if wait > 0:
        raise RefusedError(
            429,
            "rate_limited",
            f"rate limit of this API key exceeded; retry in {wait:.1f}s",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return identity


Caller = Annotated[str, Depends(api_key)]
TokenPath = Annotated[str, Path(max_length=8192, description="The token from the presigned URL")]


def add_routes(app: FastAPI, state: ServiceState) -> None:
    async def create_one(body: FeedbackCreate, caller: str) -> tuple[Accepted, bool]:
        event = create_event(body, caller)
        fingerprint = body_fingerprint(body.model_dump(mode="json"), caller)
        return await state.idempotency.run(event.feedback_id, fingerprint, lambda: state.send(event))

    def replay_headers(replayed: bool) -> dict[str, str]:
        return {REPLAYED_HEADER: "true"} if replayed else {}

    # ------------------------------------------------------------------ writes
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

    # ------------------------------------------------------------------ presigned tokens
    @app.post(TOKEN_PATH, status_code=201, response_model=TokenIssued, responses=ERRORS, tags=["tokens"])
    async def create_token(body: TokenCreate, caller: Caller) -> TokenIssued:
        """A presigned URL accepting a judgment with ``feedback_key`` on ``request_id``, no API key needed."""
        ttl = body.expires_in or state.config.token_ttl
        if ttl > state.config.token_max_ttl:
            raise RefusedError(
                422,
                "invalid_request",
                f"expires_in: {ttl}s is above the maximum of {state.config.token_max_ttl}s",
                "expires_in",
            )
        config = None
        if body.config is not None:
            config = FeedbackConfig.parse(body.config.model_dump(mode="json")).to_avro()
        token, claims = state.signer.issue(
            body.request_id, body.feedback_key, ttl, body.reuse or state.config.token_reuse, config
        )
        log.info(
            "issued token %s for request %s key %s (%s)",
            claims.token_id,
            claims.request_id,
            claims.key,
            caller,
        )
        return TokenIssued(
            id=claims.token_id,
            token=token,
            url=f"{state.config.base_url}{TOKEN_PATH}/{token}",
            expires_at=claims.expires_at_iso,
            request_id=claims.request_id,
            feedback_key=claims.key,
            reuse=claims.reuse,
        )

    @app.post(
        TOKEN_PATH + "/{token}", status_code=202, response_model=Accepted, responses=ERRORS, tags=["tokens"]
    )
    async def post_with_token(token: TokenPath, body: TokenSubmit, response: Response, request: Request) -> Accepted:
        """Submit feedback through a presigned URL (no API key)."""
        accepted, replayed = await submit_with_token(token, body, client_address(request))
        response.headers.update(replay_headers(replayed))
        return accepted

    @app.get(
        TOKEN_PATH + "/{token}", status_code=202, response_model=Accepted, responses=ERRORS, tags=["tokens"]
    )
    async def get_with_token(
        request: Request,
        token: TokenPath,
        score: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        value: Annotated[str | None, Query(max_length=4096)] = None,
        comment: Annotated[str | None, Query(max_length=4096)] = None,
        correction: Annotated[str | None, Query(max_length=4096)] = None,
        candidate_id: Annotated[str | None, Query(max_length=256)] = None,
        id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    ) -> Response:
        """Submit feedback by following a link (``?score=1``), e.g. from an email or a chat message.

        Browsers (``Accept: text/html``) get a short thank-you page instead of JSON.
        """
        body = TokenSubmit(
            score=score, value=value, comment=comment, correction=correction, candidate_id=candidate_id, id=id
        )
        accepted, replayed = await submit_with_token(token, body, client_address(request))
        headers = replay_headers(replayed)
        if "text/html" in request.headers.get("accept", ""):
            page = (
                "<!doctype html><title>Thank you</title><p>Thank you: your feedback on "
                f"{html.escape(accepted.request_id)} was recorded.</p>"
            )
            return HTMLResponse(page, status_code=202, headers=headers)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers=headers)

    async def submit_with_token(token: str, body: TokenSubmit, client: str) -> tuple[Accepted, bool]:
        with state.authenticating(client):
            try:
                claims = state.signer.verify(token)
            except TokenError as exc:
                raise RefusedError(exc.status, exc.code, exc.reason, "token") from None
        wait = state.token_limiter.take(claims.token_id)
        if wait > 0:
            raise RefusedError(
                429,
                "rate_limited",
                f"rate limit of this token exceeded; retry in {wait:.1f}s",
                headers={"Retry-After": retry_after_header(wait)},
            )
        if body.request_id is not None and body.request_id != claims.request_id:
            raise RefusedError(
                403,
                "token_wrong_request",
                f"token is for request {claims.request_id!r}, not {body.request_id!r}",
                "request_id",
            )
        if body.key is not None and body.key != claims.key:
            raise RefusedError(
                403, "token_wrong_key", f"token is for feedback key {claims.key!r}, not {body.key!r}", "key"
            )
        single = claims.reuse is TokenReuse.SINGLE
        # Ids live under the token, so a token holder can never touch feedback it did not create.
        feedback_id = f"tok-{claims.token_id}"
        if not single:
            feedback_id += f"-{body.id or uuid.uuid4().hex}"
        event = token_event(claims, body, feedback_id)
        fingerprint = body_fingerprint(body.model_dump(mode="json"), claims.token_id)

        async def action() -> Accepted:
            if single and not state.used_tokens.claim(claims.token_id, claims.expires_at):
                raise RefusedError(403, "token_used", "token was already used (single-use token)", "token")
            try:
                return await state.send(event)
            except BaseException:
                if single:
                    state.used_tokens.release(claims.token_id)
                raise

        try:
            return await state.idempotency.run(feedback_id, fingerprint, action)
        except IdempotencyConflictError:
            if single:
                raise RefusedError(
                    403, "token_used", "token was already used (single-use token)", "token"
                ) from None
            raise

    # ------------------------------------------------------------------ reads
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
        cursor: Annotated[
            str | None, Query(max_length=2048, description="next_cursor of the previous page")
        ] = None,
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

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness: whether the producer is open."""
        return {"status": "ok" if state.sink is not None else "starting", "version": __version__}


def _sender(state: ServiceState, event: FeedbackEvent) -> Callable[[], Awaitable[Accepted]]:
    return lambda: state.send(event)


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


def token_event(claims: TokenClaims, body: TokenSubmit, feedback_id: str) -> FeedbackEvent:
    """The CREATE event a presigned URL submission makes (key, request and config from the token)."""
    return FeedbackEvent.parse(
        {
            "event_id": uuid.uuid4().hex,
            "feedback_id": feedback_id,
            "op": "CREATE",
            "request_id": claims.request_id,
            "timestamp_ms": now_ms(),
            "key": claims.key,
            "kind": "SCORE",
            "candidate_id": body.candidate_id,
            "score": body.score,
            "value": body.value,
            "comment": body.comment,
            "correction": text_of(body.correction),
            "config": claims.config,
            "source": {"type": SourceType.APP_USER.value, "source_id": f"token:{claims.token_id}"},
            "metadata": body.metadata,
        }
    )
