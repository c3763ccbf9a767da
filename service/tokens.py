"""Presigned feedback tokens: HMAC-SHA256-signed claims, checked without any database.

A token is ``pp1.<kid>.<claims>.<signature>``: ``claims`` is base64url JSON (token id, request
id, feedback key, optional feedback config, expiry, reuse policy), ``signature`` is
HMAC-SHA256 over ``pp1.<kid>.<claims>`` with the secret named by ``kid``. The current secret
signs; previous secrets listed in the config still verify, so a secret is rotated by adding a
new one in front and dropping the old one once its tokens have expired.

Single-use tokens are remembered in :class:`UsedTokens`, a bounded in-memory set: it is per
process (replicas do not share it; a restart forgets it), entries leave once the token has
expired (an expired token is refused anyway), and when more than ``capacity`` unexpired tokens
have been used, those closest to expiry are forgotten and could be used once more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefpair.errors import ConfigError
from prefpair.service.config import TokenReuse, TokenSecret
from prefpair.service.exceptions import TokenError

TOKEN_VERSION = "pp1"


@dataclass(frozen=True)
class TokenClaims:
    """What a token grants: feedback with ``key`` on ``request_id`` until ``expires_at``."""

    token_id: str
    request_id: str
    key: str
    expires_at: int
    issued_at: int
    reuse: TokenReuse
    config: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tid": self.token_id,
            "rid": self.request_id,
            "key": self.key,
            "exp": self.expires_at,
            "iat": self.issued_at,
            "reuse": self.reuse.value,
            "cfg": self.config,
        }

    @classmethod
    def from_json(cls, data: Any) -> TokenClaims:
        if not isinstance(data, dict):
            raise ValueError("claims are not an object")
        try:
            config = data.get("cfg")
            if config is not None and not isinstance(config, dict):
                raise ValueError("cfg is not an object")
            return cls(
                token_id=_str(data["tid"]),
                request_id=_str(data["rid"]),
                key=_str(data["key"]),
                expires_at=_int(data["exp"]),
                issued_at=_int(data["iat"]),
                reuse=TokenReuse(data["reuse"]),
                config=config,
            )
        except KeyError as exc:
            raise ValueError(f"claim {exc.args[0]!r} is missing") from None

    @property
    def expires_at_iso(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).isoformat().replace("+00:00", "Z")


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string claim")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("expected an integer claim")
    return value


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(c not in _B64_CHARS for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenSigner:
    """Signs with the first secret, verifies with any configured one (key id in the token)."""

    def __init__(self, secrets_: tuple[TokenSecret, ...]) -> None:
        if not secrets_:
            raise ConfigError("token_secrets", "at least one token secret is needed")
        self._current = secrets_[0]
        self._by_kid = {s.kid: s.secret.get_secret_value().encode("utf-8") for s in secrets_}

    @property
    def current_kid(self) -> str:
        return self._current.kid

    def issue(
        self,
        request_id: str,
        key: str,
        ttl_seconds: int,
        reuse: TokenReuse,
        config: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> tuple[str, TokenClaims]:
        """A new token and its claims."""
        issued = int(time.time() if now is None else now)
        claims = TokenClaims(
            token_id=secrets.token_urlsafe(12),
            request_id=request_id,
            key=key,
            expires_at=issued + ttl_seconds,
            issued_at=issued,
            reuse=reuse,
            config=config,
        )
        return self.sign(claims), claims

    def sign(self, claims: TokenClaims, kid: str | None = None) -> str:
        kid = kid or self._current.kid
        body = _b64encode(json.dumps(claims.to_json(), separators=(",", ":"), sort_keys=True).encode("utf-8"))
        signed = f"{TOKEN_VERSION}.{kid}.{body}"
        return f"{signed}.{_b64encode(self._mac(kid, signed))}"

    def _mac(self, kid: str, signed: str) -> bytes:
        return hmac.new(self._by_kid[kid], signed.encode("ascii"), hashlib.sha256).digest()

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """The claims of an authentic, unexpired token; TokenError naming the problem otherwise."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION:
            raise TokenError(
                401, "token_malformed", f"malformed token: expected {TOKEN_VERSION}.KID.CLAIMS.SIG"
            )
        _, kid, body, signature = parts
        if kid not in self._by_kid:
            raise TokenError(
                401,
                "token_unknown_key",
                f"token signed with unknown key id {kid[:32]!r} (forged or rotated out)",
            )
        try:
            _b64decode(body)  # before it is signed over as ASCII
            given = _b64decode(signature)
        except (ValueError, binascii.Error):
            raise TokenError(
                401, "token_malformed", "malformed token: claims or signature are not base64url"
            ) from None
        if not hmac.compare_digest(given, self._mac(kid, f"{TOKEN_VERSION}.{kid}.{body}")):
            raise TokenError(
                401, "token_bad_signature", "token signature does not match: forged or tampered with"
            )
        try:
            claims = TokenClaims.from_json(json.loads(_b64decode(body)))
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            # Only reachable with a valid signature, i.e. a token we signed from bad claims: still refuse.
            raise TokenError(401, "token_malformed", f"malformed token claims: {exc}") from None
        current = time.time() if now is None else now
        if current >= claims.expires_at:
            raise TokenError(401, "token_expired", f"token expired at {claims.expires_at_iso}")
        return claims


class UsedTokens:
    """Bounded, thread-safe set of used single-use token ids (per process; see module doc)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._expiry: dict[str, int] = {}
        self._order: list[tuple[int, int, str]] = []  # heap of (expires_at, sequence, token id)
        self._seq = 0
        self._lock = threading.Lock()

    def claim(self, token_id: str, expires_at: int, now: float | None = None) -> bool:
        """Mark ``token_id`` used; False when it already was."""
        current = time.time() if now is None else now
        with self._lock:
            self._purge(current)
            if token_id in self._expiry:
                return False
            self._expiry[token_id] = expires_at
            self._seq += 1
            heapq.heappush(self._order, (expires_at, self._seq, token_id))
            while len(self._expiry) > self.capacity:
                self._pop()
            return True

    def release(self, token_id: str) -> None:
        """Forget a claim whose submission failed, so the token can be tried again."""
        with self._lock:
            self._expiry.pop(token_id, None)

    def __contains__(self, token_id: object) -> bool:
        with self._lock:
            return token_id in self._expiry

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._order and self._order[0][0] <= now:
            self._pop()

    def _pop(self) -> None:
        expires_at, _, token_id = heapq.heappop(self._order)
        if self._expiry.get(token_id) == expires_at:
            del self._expiry[token_id]
