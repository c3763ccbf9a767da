"""``prefpair serve``: feedback over HTTP (API keys, presigned URLs) into Kafka, and reads of the log.

The HTTP app (:func:`prefpair.service.app.create_app`) needs the ``service`` extra (FastAPI,
uvicorn); what is exported here does not, so ``prefpair feedback list|show`` works without it.
"""

from prefpair.service.config import ServiceConfig, TokenReuse, TokenSecret
from prefpair.service.exceptions import (
    BadCursorError,
    DeliveryError,
    IdempotencyConflictError,
    RefusedError,
    ServiceError,
    TokenError,
)
from prefpair.service.reads import FeedbackFilter, LogReader
from prefpair.service.tokens import TokenClaims, TokenSigner

__all__ = [
    "BadCursorError",
    "DeliveryError",
    "FeedbackFilter",
    "IdempotencyConflictError",
    "LogReader",
    "RefusedError",
    "ServiceConfig",
    "ServiceError",
    "TokenClaims",
    "TokenError",
    "TokenReuse",
    "TokenSecret",
    "TokenSigner",
]
