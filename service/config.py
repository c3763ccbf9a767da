"""Settings of ``prefpair serve``: one frozen object built from flags > ``PREFPAIR_*`` environment > defaults.

Secrets (API keys, token signing secrets) are :class:`~pydantic.SecretStr`, so printing the
config never shows them, and they come from the environment or files, never from flags:
``PREFPAIR_API_KEYS`` (comma list) / ``PREFPAIR_API_KEYS_FILE`` (one key a line, ``#`` comments),
``PREFPAIR_TOKEN_SECRETS`` (comma list of ``KID:SECRET``, the current one first; older ones are
still accepted for checking, which is how a secret is rotated) / ``PREFPAIR_TOKEN_SECRETS_FILE``.
Every other field is a flag and a variable (:data:`SERVICE_FLAGS`; ``prefpair serve --help``
lists them): ``--port`` / ``PREFPAIR_SERVICE_PORT``, ``--key-rate`` / ``PREFPAIR_KEY_RATE``, ...
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prefpair.event_topics import DEFAULT_TOKEN_MAX_TTL_S
from prefpair.flags import Flags

KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class TokenReuse(StrEnum):
    """Whether a presigned token takes one submission or any number until it expires."""

    SINGLE = "single"
    EXPIRY = "expiry"


class TokenSecret(BaseModel):
    """One signing secret and the key id written into the tokens it signs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kid: str
    secret: SecretStr

    @field_validator("kid")
    @classmethod
    def _kid(cls, value: str) -> str:
        if not KID_PATTERN.match(value):
            raise ValueError("a key id is 1-32 letters, digits, '_' or '-'")
        return value

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("a token secret needs at least 16 characters")
        return value


class ServiceConfig(BaseModel):
    """What ``prefpair serve`` listens on, whom it lets in and how much it accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(
        default="127.0.0.1", description="Address to listen on.", json_schema_extra={"env": "PREFPAIR_SERVICE_HOST"}
    )
    port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Port to listen on.",
        json_schema_extra={"env": "PREFPAIR_SERVICE_PORT"},
    )
    api_keys_file: Path | None = Field(
        default=None, description="File with one API key a line (# comments); adds to PREFPAIR_API_KEYS."
    )
    api_keys: tuple[SecretStr, ...] = Field(
        default=(),
        validate_default=True,
        description="API keys, comma separated (never a flag: flags show in process lists).",
        json_schema_extra={"flag": None},
    )
    admin_keys: tuple[SecretStr, ...] = Field(
        default=(),
        description="Admin keys for POST /v1/erasures, comma separated (never a flag); none: erasure over HTTP is off.",
        json_schema_extra={"flag": None},
    )
    token_secrets_file: Path | None = Field(
        default=None, description="File with KID:SECRET lines, the current one first; adds to PREFPAIR_TOKEN_SECRETS."
    )
    token_secrets: tuple[TokenSecret, ...] = Field(
        default=(),
        validate_default=True,
        description="KID:SECRET signing secrets, comma separated, the current one first; the others are only "
        "accepted when checking (how a secret is rotated).",
        json_schema_extra={"flag": None},
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base of the presigned URLs handed out; unset means http://HOST:PORT.",
        json_schema_extra={"flag": "--public-url", "env": "PREFPAIR_PUBLIC_URL"},
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Larger request bodies get 413.")
    key_rate: float = Field(default=50.0, gt=0, description="Requests per second per API key (refill).")
    key_burst: int = Field(default=200, ge=1, description="Burst of requests per API key.")
    token_rate: float = Field(default=0.5, gt=0, description="Requests per second per presigned token.")
    token_burst: int = Field(default=5, ge=1, description="Burst of requests per presigned token.")
    auth_failure_rate: float = Field(
        default=0.2, gt=0, description="Failed authentications per second a client address gets back (refill)."
    )
    auth_failure_burst: int = Field(
        default=20, ge=1, description="Failed authentications a client address may make before it is locked out."
    )
    cors_origins: tuple[str, ...] = Field(
        default=(), description="Allowed browser origins.", json_schema_extra={"flag": "--cors-origin"}
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="Addresses (or networks, or '*') of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed (uvicorn's forwarded_allow_ips); default none: the client "
        "address is the TCP peer's, so a client cannot pick the address its failed authentications count "
        "against.",
        json_schema_extra={"flag": "--trusted-proxy"},
    )
    token_reuse: TokenReuse = Field(
        default=TokenReuse.SINGLE, description="single: one submission per token; expiry: any until it expires."
    )
    token_ttl: int = Field(default=24 * 3600, ge=1, description="Default token lifetime in seconds.")
    token_max_ttl: int = Field(
        default=DEFAULT_TOKEN_MAX_TTL_S, ge=1, description="Longest token lifetime a caller may ask for."
    )
    idempotency_cache_size: int = Field(
        default=100_000, ge=1, description="Idempotency keys remembered (their answers are replayed)."
    )
    used_tokens_cache_size: int = Field(
        default=1_000_000, ge=1, description="Single-use tokens remembered as used."
    )
    ack_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for the broker's acknowledgement.")
    max_batch: int = Field(default=1000, ge=1, description="Feedback events per batch request at most.")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value and len(value) > 1:
            raise ValueError("'*' (trust any proxy) stands alone")
        for entry in value:
            if entry == "*":
                continue
            try:  # as uvicorn reads them (which takes anything else as a name no client address has)
                ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (like 10.0.0.0/8)") from None
        return value

    @field_validator("api_keys_file", "token_secrets_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            _read_lines(value)
        return value

    @field_validator("admin_keys", mode="before")
    @classmethod
    def _admin_keys(cls, value: Any) -> tuple[Any, ...]:
        return tuple(_listed(value))

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any, info: ValidationInfo) -> tuple[Any, ...]:
        """The keys given, then those of ``api_keys_file``."""
        path = info.data.get("api_keys_file")
        return (*_listed(value), *(_read_lines(path) if path else ()))

    @field_validator("token_secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any, info: ValidationInfo) -> tuple[Any, ...]:
        """The secrets given, then those of ``token_secrets_file``; ``KID:SECRET`` text is parsed."""
        path = info.data.get("token_secrets_file")
        return tuple(_secret(item) for item in (*_listed(value), *(_read_lines(path) if path else ())))

    @model_validator(mode="after")
    def _check(self) -> ServiceConfig:
        if self.token_ttl > self.token_max_ttl:
            raise ValueError(f"token_ttl {self.token_ttl} is above token_max_ttl {self.token_max_ttl}")
        kids = [s.kid for s in self.token_secrets]
        if len(set(kids)) != len(kids):
            raise ValueError("token secrets need distinct key ids")
        return self

    @property
    def base_url(self) -> str:
        """Where clients reach this service (used to build presigned URLs)."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"ServiceConfig(host={self.host!r}, port={self.port}, api_keys={len(self.api_keys)}, "
            f"token_secrets={[s.kid for s in self.token_secrets]})"
        )

    __str__ = __repr__

    @classmethod
    def load(
        cls, flags: argparse.Namespace | Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Merge flags (highest), ``PREFPAIR_*`` environment, then defaults; raise ConfigError."""
        return SERVICE_FLAGS.load(flags, environ)


SERVICE_FLAGS = Flags(ServiceConfig, env_prefix="PREFPAIR_")
"""The flags and variables of :class:`ServiceConfig` (``--port``, ``PREFPAIR_SERVICE_PORT``, ...)."""


def _listed(raw: Any) -> list[Any]:
    """A comma list (text) or a sequence as a list; blanks dropped."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return [part.strip() if isinstance(part, str) else part for part in raw if part != ""]


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _secret(item: Any) -> Any:
    """``KID:SECRET`` as the fields of a TokenSecret; anything else is left to validation."""
    if not isinstance(item, str):
        return item
    kid, sep, secret = item.partition(":")
    if not sep:
        raise ValueError("expected KID:SECRET (the key id goes into each token)")
    return {"kid": kid.strip(), "secret": secret.strip()}
