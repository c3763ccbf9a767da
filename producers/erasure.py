"""``request_erasure``: serving code asks for a user's, a request's or a session's rows to be erased.

Publishes the same event as ``prefpair erase`` and the service's ``POST /v1/erasures``
(:mod:`prefpair.erasures`) and returns once the broker acknowledged it; the consumer and
``prefpair erase`` carry it out on the log.
"""

from __future__ import annotations

from prefpair.config import Settings
from prefpair.erasures import ErasureError, ErasureRequest, erasure_request, publish_erasure


def request_erasure(
    *,
    user: str | None = None,
    request_id: str | None = None,
    session_id: str | None = None,
    requested_by: str = "sdk",
    settings: Settings | None = None,
) -> ErasureRequest:
    """Publish an erasure of exactly one identifier; the request as published (its id, when)."""
    given = [(kind, value) for kind, value in (("user", user), ("request", request_id), ("session", session_id))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        raise ErasureError("user", "give exactly one of user, request_id, session_id")
    request = erasure_request(given[0][0], given[0][1], requested_by)
    publish_erasure(settings or Settings.load(), request)
    return request
