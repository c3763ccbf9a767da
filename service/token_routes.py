"""Presigned feedback URLs: ``POST /v1/feedback-tokens`` hands one out (API key); ``POST`` or ``GET``
on the URL submits a judgment with the token alone, which decides the request, key and config."""

from __future__ import annotations

import html
import logging
import uuid
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from prefpair.schemas import FeedbackConfig, FeedbackEvent, SourceType
from prefpair.schemas.models import now_ms
from prefpair.service.config import TokenReuse
from prefpair.service.exceptions import IdempotencyConflictError, RefusedError, TokenError
from prefpair.service.limits import retry_after_header
from prefpair.service.models import Accepted, TokenCreate, TokenIssued, TokenSubmit, text_of
from prefpair.service.routing import ERRORS, Caller, client_address, replay_headers
from prefpair.service.state import ServiceState, body_fingerprint
from prefpair.service.tokens import TokenClaims

log = logging.getLogger("prefpair.service")

TOKEN_PATH = "/v1/feedback-tokens"

TokenPath = Annotated[str, Path(max_length=8192, description="The token from the presigned URL")]


def add_token_routes(app: FastAPI, state: ServiceState) -> None:
    """Issuing presigned URLs and submitting through them, tagged ``tokens``."""

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

    @app.post(TOKEN_PATH + "/{token}", status_code=202, response_model=Accepted, responses=ERRORS, tags=["tokens"])
    async def post_with_token(token: TokenPath, body: TokenSubmit, response: Response, request: Request) -> Accepted:
        """Submit feedback through a presigned URL (no API key)."""
        accepted, replayed = await submit_with_token(token, body, client_address(request))
        response.headers.update(replay_headers(replayed))
        return accepted

    @app.get(TOKEN_PATH + "/{token}", status_code=202, response_model=Accepted, responses=ERRORS, tags=["tokens"])
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
                raise RefusedError(403, "token_used", "token was already used (single-use token)", "token") from None
            raise


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
