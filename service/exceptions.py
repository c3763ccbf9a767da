"""Errors of the feedback service; each keeps what it was about.

:class:`RefusedError` is what the HTTP layer answers with (status, machine code, message, field);
the others are raised by the parts underneath (sink, tokens, reads, idempotency cache) and turned
into a refusal by the app, or into a one-line error by the command line.
"""

from __future__ import annotations

from prefpair.errors import PrefpairError


class ServiceError(PrefpairError):
    """Base class of feedback service errors."""


class RefusedError(ServiceError):
    """A request is refused: HTTP ``status``, a machine ``code``, a ``reason`` naming the problem."""

    def __init__(
        self,
        status: int,
        code: str,
        reason: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.reason = reason
        self.field = field
        self.headers = headers
        super().__init__(reason)


class DeliveryError(ServiceError):
    """The broker did not acknowledge an event (delivery error, full queue or timeout): answer 503."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"{topic}: {reason}")


class TokenError(ServiceError):
    """A presigned token is refused: 401 (not authentic, malformed, expired) or 403 (not for this use)."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        self.status = status
        self.code = code
        self.reason = reason
        super().__init__(reason)


class IdempotencyConflictError(ServiceError):
    """A feedback id was used earlier with a different body."""

    def __init__(self, feedback_id: str) -> None:
        self.feedback_id = feedback_id
        super().__init__(f"feedback id {feedback_id!r} was already used with a different body")


class BadCursorError(ServiceError):
    """A pagination cursor that this service did not hand out."""

    def __init__(self, cursor: str, reason: str = "not a cursor this service handed out") -> None:
        self.cursor = cursor
        self.reason = reason
        super().__init__(f"cursor {cursor[:40]!r}: {reason}")
