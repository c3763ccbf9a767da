"""Presigned feedback URLs: ``POST /v1/feedback-tokens`` hands one out (API key); ``POST`` or ``GET``
on the URL submits a judgment with the token alone, which decides the request, key and config."""

from __future__ import annotations

import html
import logging
import time
import uuid
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from prefpair.schemas import FeedbackConfig, FeedbackEvent, SourceType
from prefpair.schemas.models import now_ms
from prefpair.service.config import TokenReuse
from prefpair.service.exceptions import DeliveryError, IdempotencyConflictError, RefusedError, TokenError
from prefpair.service.limits import retry_after_header
from prefpair.service.models import (
    Accepted,
    TokenAudit,
    TokenAuditEvent,
    TokenCreate,
    TokenInfo,
    TokenIssued,
    TokenList,
    TokenRevoke,
    TokenRevoked,
    TokenSubmit,
    text_of,
)
from prefpair.service.routing import ERRORS, Caller, client_address, replay_headers
from prefpair.service.state import ServiceState, body_fingerprint
from prefpair.service.token_ledger import TokenEvent, TokenEvents, iso_s
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
        await events(state).publish(
            TokenEvent(
                type="issued", request_id=claims.request_id, token_id=claims.token_id, feedback_key=claims.key,
                reuse=claims.reuse.value, issued_at=claims.issued_at, expires_at=claims.expires_at, by=caller,
            ),
            state.config.ack_timeout,
        )  # fmt: skip
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
        events(state)  # not yet following the tokens topic: a revocation could have been missed
        revoked = state.ledger.revocation(claims)
        if revoked is not None:
            what = "token" if revoked.scope == "token" else f"every token of request {claims.request_id!r}"
            raise RefusedError(
                403, "token_revoked", f"token was revoked ({what}, at {iso_s(revoked.at_ms / 1000)})", "token"
            )
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
            accepted, replayed = await state.idempotency.run(feedback_id, fingerprint, action)
        except IdempotencyConflictError:
            if single:
                raise RefusedError(403, "token_used", "token was already used (single-use token)", "token") from None
            raise
        if not replayed:
            events(state).publish_nowait(
                TokenEvent(
                    type="used", request_id=claims.request_id, token_id=claims.token_id, feedback_key=claims.key,
                    reuse=claims.reuse.value, expires_at=claims.expires_at, client=client, feedback_id=feedback_id,
                )
            )  # fmt: skip
        return accepted, replayed


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


def events(state: ServiceState) -> TokenEvents:
    """The instance's tokens topic; a 503 until start-up has read it."""
    if state.token_events is None or not state.token_events.ready:
        raise DeliveryError(state.settings.tokens_topic, "the service is not connected to Kafka yet")
    return state.token_events


REVOCATIONS_PATH = "/v1/token-revocations"
TokenIdPath = Annotated[str, Path(min_length=1, max_length=256, description="The token id (``id`` when issued)")]


def add_token_admin_routes(app: FastAPI, state: ServiceState) -> None:
    """Token management (API key): list issued tokens, one token's audit trail, revocations; tagged ``tokens``."""

    @app.get(TOKEN_PATH, response_model=TokenList, responses=ERRORS, tags=["tokens"])
    async def list_tokens(
        caller: Caller,
        request_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        feedback_key: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        status: Annotated[
            Literal["active", "used", "expired", "revoked"] | None,
            Query(description="revoked first, then expired, then used (submitted through at least once), else active"),
        ] = None,
        used: Annotated[bool | None, Query(description="Submitted through at least once, or never.")] = None,
        revoked: bool | None = None,
        expires_after: Annotated[int | None, Query(ge=0, description="Epoch seconds: expiring at or after.")] = None,
        expires_before: Annotated[int | None, Query(ge=0, description="Epoch seconds: expiring before.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> TokenList:
        """Issued presigned tokens, newest first, as every instance's token events tell them."""
        rows = state.ledger.listing(
            time.time(), request_id=request_id, feedback_key=feedback_key, status=status, used=used,
            revoked=revoked, expires_after=expires_after, expires_before=expires_before, limit=limit,
        )  # fmt: skip
        return TokenList(items=[TokenInfo(**row) for row in rows])

    @app.get(TOKEN_PATH + "/{token_id}/audit", response_model=TokenAudit, responses=ERRORS, tags=["tokens"])
    async def token_audit(token_id: TokenIdPath, caller: Caller) -> TokenAudit:
        """One token and its audit trail: its issue, each use (client address, feedback id), its revocation."""
        record = state.ledger.known(token_id)
        if record is None:
            raise RefusedError(404, "token_not_found", f"no token {token_id!r} on record")
        return TokenAudit(
            token=TokenInfo(**record.to_json(time.time())),
            events=[TokenAuditEvent(**event) for event in state.ledger.audit(token_id)],
        )

    @app.post(REVOCATIONS_PATH, response_model=TokenRevoked, responses=ERRORS, tags=["tokens"])
    async def revoke(body: TokenRevoke, caller: Caller) -> TokenRevoked:
        """Revoke one token, or every token of a request issued until now. Every instance refuses them
        once it has read the revocation from the tokens topic (within about a second)."""
        if body.token_id is None and body.request_id is None:
            raise RefusedError(422, "invalid_request", "body: give token_id, or request_id to revoke all its tokens")
        request_id = body.request_id
        if body.token_id is not None:
            record = state.ledger.known(body.token_id)
            if record is not None:
                if request_id is not None and request_id != record.request_id:
                    raise RefusedError(
                        409, "wrong_request",
                        f"request_id: token {body.token_id!r} is for request {record.request_id!r}", "request_id",
                    )  # fmt: skip
                request_id = record.request_id
            elif request_id is None:
                raise RefusedError(
                    404, "token_not_found",
                    f"no token {body.token_id!r} on record (pass request_id to revoke it anyway)",
                )  # fmt: skip
        assert request_id is not None
        event = TokenEvent(type="revoked", request_id=request_id, token_id=body.token_id, by=caller, reason=body.reason)
        await events(state).publish(event, state.config.ack_timeout)
        covered = [body.token_id] if body.token_id is not None else state.ledger.tokens_of(request_id)
        log.info("revoked %s of request %s (%s)", body.token_id or "every token", request_id, caller)
        return TokenRevoked(
            request_id=request_id, token_id=body.token_id, revoked=covered, revoked_at=iso_s(event.at_ms / 1000)
        )
