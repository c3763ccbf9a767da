"""What every group of routes shares: the documented refusals, the caller's identity (the API-key
dependency, the client address) and the header that marks an idempotent replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from prefpair.service.exceptions import RefusedError
from prefpair.service.limits import retry_after_header
from prefpair.service.models import ErrorBody
from prefpair.service.state import API_KEY_HEADER, ServiceState

REPLAYED_HEADER = "Idempotent-Replayed"


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


def replay_headers(replayed: bool) -> dict[str, str]:
    return {REPLAYED_HEADER: "true"} if replayed else {}
