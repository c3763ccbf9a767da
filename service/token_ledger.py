"""Token management: every issue, use and revocation of a presigned token is an event on the tokens
topic (``Settings.tokens_topic``), and every service instance follows that topic.

Verification stays stateless (:class:`~prefpair.service.tokens.TokenSigner` checks the HMAC and the
expiry); the ledger adds what a signature cannot say: whether the token was revoked since it was
signed, and (for single-use tokens) whether another instance saw it used. Each instance reads the
topic from its beginning at start (a follower with a group id of its own, see
:mod:`prefpair.event_topics`) and keeps following it, so a revocation made through one instance is
refused by all of them as soon as their follower has read it (typically well under a second; the
follower's fetches wait at most 100 ms).

Events are JSON, keyed by request id (one partition, so they are read in the order written):

- ``issued``: token id, request, feedback key, reuse policy, issue and expiry times, who asked;
- ``used``: a submission through the token was acknowledged (its feedback id, the client address);
- ``revoked``: one token (``token_id``) or, without one, every token of ``request_id`` issued
  until then.

The topic is created keeping events for the longest token lifetime the service hands out plus a
day (or ``Settings.retention_ms`` if longer); the ledger's memory holds every token it still has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import Settings
from prefpair.event_topics import (
    EventTopicError,
    TopicFollower,
    TopicRecord,
    TopicWriter,
    ensure_topic,
    tokens_retention_ms,
)
from prefpair.schemas.models import now_ms
from prefpair.service.exceptions import DeliveryError
from prefpair.service.tokens import TokenClaims

log = logging.getLogger("prefpair.service")

TokenEventType = Literal["issued", "used", "revoked"]
MAX_USES_KEPT = 1000
"""Uses kept per token for its audit trail (the count goes on)."""


class TokenEvent(BaseModel):
    """One event of the tokens topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: TokenEventType
    request_id: str
    at_ms: int = Field(default_factory=now_ms)
    instance: str | None = None
    token_id: str | None = None
    feedback_key: str | None = None
    reuse: str | None = None
    issued_at: int | None = None
    expires_at: int | None = None
    by: str | None = None
    client: str | None = None
    feedback_id: str | None = None
    reason: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, value: bytes) -> TokenEvent:
        return cls.model_validate(json.loads(value))


def iso_s(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class TokenRecord:
    """What the ledger knows of one token."""

    token_id: str
    request_id: str
    feedback_key: str | None = None
    reuse: str | None = None
    issued_at: int | None = None  # seconds, as in the token's claims
    issued_ms: int | None = None
    expires_at: int | None = None
    issued_by: str | None = None
    revoked_ms: int | None = None
    revoked_by: str | None = None
    revoked_reason: str | None = None
    revoked_scope: Literal["token", "request"] = "token"
    use_count: int = 0
    audit: list[TokenEvent] = field(default_factory=list)

    def status(self, now_s: float) -> str:
        if self.revoked_ms is not None:
            return "revoked"
        if self.expires_at is not None and now_s >= self.expires_at:
            return "expired"
        return "used" if self.use_count else "active"

    def to_json(self, now_s: float) -> dict[str, Any]:
        return {
            "id": self.token_id,
            "request_id": self.request_id,
            "feedback_key": self.feedback_key,
            "reuse": self.reuse,
            "issued_at": iso_s(self.issued_at),
            "expires_at": iso_s(self.expires_at),
            "issued_by": self.issued_by,
            "status": self.status(now_s),
            "used": self.use_count > 0,
            "uses": self.use_count,
            "expired": self.expires_at is not None and now_s >= self.expires_at,
            "revoked": self.revoked_ms is not None,
            "revoked_at": iso_s(None if self.revoked_ms is None else self.revoked_ms / 1000),
            "revoked_by": self.revoked_by,
        }


@dataclass(frozen=True)
class Revocation:
    at_ms: int
    by: str | None
    scope: Literal["token", "request"]


class TokenLedger:
    """The state of every token, folded from the tokens topic's events (thread-safe).

    ``on_used(token_id, expires_at)`` is called for each use of a single-use token, so the
    instance's own used-token set learns of uses made through other instances.
    """

    def __init__(self, on_used: Callable[[str, int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenRecord] = {}
        self._request_revoked: dict[str, tuple[int, str | None]] = {}  # request id -> (at ms, by)
        self._on_used = on_used
        self._sent_here: dict[str, Literal["expected", "applied", "echoed"]] = {}
        self.applied = 0

    def apply(self, event: TokenEvent, *, local: bool = False) -> None:
        """Fold one event in. ``local``: sent by this instance and applied at once; its copy read
        back from the topic later is then skipped."""
        with self._lock:
            state = self._sent_here.get(event.event_id)
            if local:
                if state == "echoed":
                    del self._sent_here[event.event_id]
                else:
                    self._sent_here[event.event_id] = "applied"
            elif state == "expected":
                self._sent_here[event.event_id] = "echoed"  # read back before its sender applied it
                return
            elif state == "applied":
                del self._sent_here[event.event_id]
                return
            self.applied += 1
            if event.type == "revoked" and event.token_id is None:
                before = self._request_revoked.get(event.request_id)
                if before is None or before[0] < event.at_ms:
                    self._request_revoked[event.request_id] = (event.at_ms, event.by)
                for covered in self._tokens.values():
                    if covered.request_id == event.request_id and covered.revoked_ms is None and (
                        covered.issued_ms is None or covered.issued_ms <= event.at_ms
                    ):
                        self._revoke(covered, event)
                return
            if event.token_id is None:
                return
            record = self._tokens.get(event.token_id)
            if record is None:
                record = self._tokens[event.token_id] = TokenRecord(event.token_id, event.request_id)
            if event.type == "issued":
                record.feedback_key = event.feedback_key
                record.reuse = event.reuse
                record.issued_at = event.issued_at
                record.issued_ms = event.at_ms
                record.expires_at = event.expires_at
                record.issued_by = event.by
                cut = self._request_revoked.get(record.request_id)
                if cut is not None and record.revoked_ms is None and event.at_ms <= cut[0]:
                    record.revoked_ms, record.revoked_by = cut
                    record.revoked_scope = "request"
            elif event.type == "used":
                record.use_count += 1
                if record.expires_at is None and event.expires_at is not None:
                    record.expires_at = event.expires_at
                if self._on_used is not None and event.reuse == "single" and event.expires_at is not None:
                    self._on_used(event.token_id, event.expires_at)
            elif event.type == "revoked":
                self._revoke(record, event)
                return
            if len(record.audit) < MAX_USES_KEPT:
                record.audit.append(event)

    def expect(self, event_id: str) -> None:
        """This instance is sending ``event_id`` and will apply it once acknowledged (:meth:`apply` local)."""
        with self._lock:
            self._sent_here[event_id] = "expected"

    def forget(self, event_id: str) -> None:
        """A send that failed: nothing of it will come back."""
        with self._lock:
            self._sent_here.pop(event_id, None)

    @staticmethod
    def _revoke(record: TokenRecord, event: TokenEvent) -> None:
        if any(e.event_id == event.event_id for e in record.audit):
            return
        if record.revoked_ms is None:
            record.revoked_ms, record.revoked_by, record.revoked_reason = event.at_ms, event.by, event.reason
            record.revoked_scope = "token" if event.token_id is not None else "request"
        record.audit.append(event)

    def revocation(self, claims: TokenClaims) -> Revocation | None:
        """Why a verified token no longer counts (None: it still does)."""
        with self._lock:
            record = self._tokens.get(claims.token_id)
            if record is not None and record.revoked_ms is not None:
                return Revocation(record.revoked_ms, record.revoked_by, record.revoked_scope)
            cut = self._request_revoked.get(claims.request_id)
            if cut is None:
                return None
            issued_ms = record.issued_ms if record is not None and record.issued_ms is not None else None
            if issued_ms is None:
                issued_ms = claims.issued_at * 1000
            return Revocation(cut[0], cut[1], "request") if issued_ms <= cut[0] else None

    def known(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            return self._tokens.get(token_id)

    def tokens_of(self, request_id: str) -> list[str]:
        with self._lock:
            return sorted(t for t, r in self._tokens.items() if r.request_id == request_id)

    def listing(
        self,
        now_s: float,
        *,
        request_id: str | None = None,
        feedback_key: str | None = None,
        status: str | None = None,
        used: bool | None = None,
        revoked: bool | None = None,
        expires_after: int | None = None,
        expires_before: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Tokens matching every filter given, newest issue first."""
        with self._lock:
            records = list(self._tokens.values())
        rows = []
        for record in records:
            if request_id is not None and record.request_id != request_id:
                continue
            if feedback_key is not None and record.feedback_key != feedback_key:
                continue
            if status is not None and record.status(now_s) != status:
                continue
            if used is not None and (record.use_count > 0) != used:
                continue
            if revoked is not None and (record.revoked_ms is not None) != revoked:
                continue
            if expires_after is not None and (record.expires_at is None or record.expires_at < expires_after):
                continue
            if expires_before is not None and (record.expires_at is None or record.expires_at >= expires_before):
                continue
            rows.append(record)
        rows.sort(key=lambda r: (-(r.issued_ms or 0), r.token_id))
        return [r.to_json(now_s) for r in rows[:limit]]

    def audit(self, token_id: str) -> list[dict[str, Any]]:
        """The token's events in order: issue, each use (with its client and feedback id), revocation."""
        with self._lock:
            record = self._tokens.get(token_id)
            events = list(record.audit) if record is not None else []
        return [
            {
                "type": e.type,
                "at": iso_s(e.at_ms / 1000),
                "at_ms": e.at_ms,
                "instance": e.instance,
                "by": e.by,
                "client": e.client,
                "feedback_id": e.feedback_id,
                "reason": e.reason,
            }
            for e in events  # in the order the topic (or this instance) applied them
        ]


class TokenEvents:
    """The tokens topic for one service instance: a writer, and a follower folding events into ``ledger``."""

    def __init__(self, settings: Settings, ledger: TokenLedger, instance: str, longest_token_s: int) -> None:
        self.settings = settings
        # Keep events at least as long as the longest-lived token (and a day), so none loses its history.
        self.retention_ms = tokens_retention_ms(settings, longest_token_s)
        self.ledger = ledger
        self.instance = instance
        self._writer: TopicWriter | None = None
        self._follower: TopicFollower | None = None

    def start(self, timeout: float) -> None:
        """Create the topic when missing, read it to its end (at most ``timeout`` s), keep following it."""
        topic = self.settings.tokens_topic
        ensure_topic(self.settings, topic, retention_ms=self.retention_ms, timeout=timeout)
        follower = TopicFollower(
            self.settings, topic, self._on_record, group_prefix=f"prefpair-serve-{self.instance}"
        )
        follower.start()
        if not follower.wait_caught_up(timeout):
            follower.close()
            raise EventTopicError(topic, f"not read to its end within {timeout:g}s: revocations would be missed")
        self._follower = follower
        self._writer = TopicWriter(self.settings, topic)
        log.info("token ledger: read %d events of %s", self.ledger.applied, topic)

    @property
    def ready(self) -> bool:
        return self._writer is not None

    def _on_record(self, record: TopicRecord) -> None:
        try:
            event = TokenEvent.from_bytes(record.value)
        except ValueError:
            log.warning("skipped a token event that is not one (offset %d)", record.offset)
            return
        self.ledger.apply(event)

    async def publish(self, event: TokenEvent, timeout: float) -> None:
        """Send ``event``, wait for the broker's acknowledgement, and apply it here at once."""
        topic = self.settings.tokens_topic
        if self._writer is None:
            raise DeliveryError(topic, "the service is not connected to Kafka")
        event = event.model_copy(update={"instance": self.instance})
        self.ledger.expect(event.event_id)
        try:
            future = self._writer.send(event.request_id, event.to_bytes())
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            self.ledger.forget(event.event_id)
            raise DeliveryError(topic, f"no acknowledgement within {timeout:g}s") from None
        except EventTopicError as exc:
            self.ledger.forget(event.event_id)
            raise DeliveryError(topic, exc.reason) from None
        except BaseException:
            self.ledger.forget(event.event_id)
            raise
        self.ledger.apply(event, local=True)

    def publish_nowait(self, event: TokenEvent) -> None:
        """Send ``event`` without waiting (a use: the feedback is already acknowledged); apply it here."""
        if self._writer is None:
            return
        event = event.model_copy(update={"instance": self.instance})
        self.ledger.apply(event, local=True)
        try:
            future = self._writer.send(event.request_id, event.to_bytes())
        except EventTopicError as exc:
            log.warning("token use of %s not recorded: %s", event.token_id, exc)
            return
        future.add_done_callback(_log_failure)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
        if self._writer is not None:
            self._writer.close()


def _log_failure(future: Future[TopicRecord]) -> None:
    error = future.exception()
    if error is not None:
        log.warning("token event not recorded: %s", error)
