"""What the endpoints of one app share: the API keys, limiters, idempotency cache and the sink.

:class:`ServiceState` checks API keys (constant-time), locks out addresses that fail to
authenticate too often, and sends an event to the broker, remembering its request for later
updates. One per app, so per process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefpair.config import Settings
from prefpair.schemas import FeedbackEvent, FeedbackOp
from prefpair.service.config import ServiceConfig
from prefpair.service.exceptions import DeliveryError, RefusedError
from prefpair.service.followers import FollowerStarter
from prefpair.service.limits import IdempotencyCache, RateLimiter, retry_after_header
from prefpair.service.models import Accepted
from prefpair.service.reads import LogReader
from prefpair.service.sink import Delivery, FeedbackSink
from prefpair.service.token_ledger import TokenEvents, TokenLedger
from prefpair.service.tokens import TokenSigner, UsedTokens

log = logging.getLogger("prefpair.service")

API_KEY_HEADER = "X-API-Key"


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
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    """Names this process in token events and in its followers' group ids."""
    ledger: TokenLedger = field(init=False)
    token_events: TokenEvents | None = None
    followers: FollowerStarter | None = None

    def __post_init__(self) -> None:
        self.used_tokens = UsedTokens(self.config.used_tokens_cache_size)
        self.idempotency = IdempotencyCache(self.config.idempotency_cache_size)
        self.key_limiter = RateLimiter(self.config.key_rate, self.config.key_burst)
        self.token_limiter = RateLimiter(self.config.token_rate, self.config.token_burst)
        self.failure_limiter = RateLimiter(self.config.auth_failure_rate, self.config.auth_failure_burst)
        self._keys = [k.get_secret_value().encode("utf-8") for k in self.config.api_keys]
        self.ledger = TokenLedger(on_used=self._used_elsewhere)

    def _used_elsewhere(self, token_id: str, expires_at: int) -> None:
        """A single-use token was used (through any instance): refuse it here too."""
        self.used_tokens.claim(token_id, expires_at)

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
