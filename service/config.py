"""Settings of ``prefpair serve``: one frozen object built from flags > ``PREFPAIR_*`` environment > defaults.

Secrets (API keys, token signing secrets) are :class:`~pydantic.SecretStr`, so printing the
config never shows them. Environment variables:

``PREFPAIR_API_KEYS`` (comma list) / ``PREFPAIR_API_KEYS_FILE`` (one key a line, ``#`` comments),
``PREFPAIR_TOKEN_SECRETS`` (comma list of ``KID:SECRET``, the current one first; older ones are
still accepted for checking, which is how a secret is rotated) / ``PREFPAIR_TOKEN_SECRETS_FILE``,
``PREFPAIR_SERVICE_HOST``, ``PREFPAIR_SERVICE_PORT``, ``PREFPAIR_PUBLIC_URL``,
``PREFPAIR_MAX_BODY_BYTES``, ``PREFPAIR_KEY_RATE`` / ``PREFPAIR_KEY_BURST``,
``PREFPAIR_TOKEN_RATE`` / ``PREFPAIR_TOKEN_BURST``, ``PREFPAIR_CORS_ORIGINS`` (comma list),
``PREFPAIR_TRUSTED_PROXIES`` (comma list of proxy addresses or networks whose ``X-Forwarded-For`` is believed),
``PREFPAIR_TOKEN_REUSE`` (``single`` or ``expiry``), ``PREFPAIR_TOKEN_TTL`` / ``PREFPAIR_TOKEN_MAX_TTL``
(seconds), ``PREFPAIR_IDEMPOTENCY_CACHE_SIZE``, ``PREFPAIR_USED_TOKENS_CACHE_SIZE``,
``PREFPAIR_ACK_TIMEOUT``.
"""

from __future__ import annotations

import ipaddress
import os
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
    ValidationError,
    field_validator,
    model_validator,
)

from prefpair.errors import ConfigError, first_problem

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

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_keys: tuple[SecretStr, ...] = ()
    token_secrets: tuple[TokenSecret, ...] = Field(
        default=(), description="Current signing secret first; the others are only accepted when checking."
    )
    public_base_url: str | None = Field(
        default=None, description="Base of the presigned URLs handed out; default http://HOST:PORT."
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    key_rate: float = Field(default=50.0, gt=0, description="Requests per second per API key (refill).")
    key_burst: int = Field(default=200, ge=1)
    token_rate: float = Field(default=0.5, gt=0, description="Requests per second per presigned token.")
    token_burst: int = Field(default=5, ge=1)
    auth_failure_rate: float = Field(
        default=0.2, gt=0, description="Failed authentications per second a client address gets back (refill)."
    )
    auth_failure_burst: int = Field(
        default=20, ge=1, description="Failed authentications a client address may make before it is locked out."
    )
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="Addresses (or networks, or '*') of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed (uvicorn's forwarded_allow_ips); default none: the client "
        "address is the TCP peer's, so a client cannot pick the address its failed authentications count "
        "against.",
    )
    token_reuse: TokenReuse = TokenReuse.SINGLE
    token_ttl: int = Field(default=24 * 3600, ge=1, description="Default token lifetime in seconds.")
    token_max_ttl: int = Field(default=30 * 24 * 3600, ge=1)
    idempotency_cache_size: int = Field(default=100_000, ge=1)
    used_tokens_cache_size: int = Field(default=1_000_000, ge=1)
    ack_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the broker's acknowledgement."
    )
    max_batch: int = Field(default=1000, ge=1)

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

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Merge flags (highest), ``PREFPAIR_*`` environment, then defaults; raise ConfigError."""
        env = os.environ if environ is None else environ
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        values: dict[str, Any] = {}
        for field, name in _ENV_NAMES.items():
            if name in env and env[name] != "":
                values[field] = env[name]
        values.update(flags)
        keys_file = values.pop("api_keys_file", None)
        secrets_file = values.pop("token_secrets_file", None)
        try:
            keys = _split(values.pop("api_keys", None))
            if keys_file:
                keys += _read_lines(Path(keys_file), "api_keys_file")
            values["api_keys"] = tuple(keys)
            secrets = _split(values.pop("token_secrets", None))
            if secrets_file:
                secrets += _read_lines(Path(secrets_file), "token_secrets_file")
            values["token_secrets"] = tuple(_parse_secret(s) for s in secrets)
            for name in ("cors_origins", "trusted_proxies"):
                if name in values:
                    values[name] = tuple(_split(values[name]))
            return cls(**values)
        except ValidationError as exc:
            field, message = first_problem(exc, "service", indices=False)
            raise ConfigError(field, _clean(message)) from None


_ENV_NAMES = {
    "host": "PREFPAIR_SERVICE_HOST",
    "port": "PREFPAIR_SERVICE_PORT",
    "api_keys": "PREFPAIR_API_KEYS",
    "api_keys_file": "PREFPAIR_API_KEYS_FILE",
    "token_secrets": "PREFPAIR_TOKEN_SECRETS",
    "token_secrets_file": "PREFPAIR_TOKEN_SECRETS_FILE",
    "public_base_url": "PREFPAIR_PUBLIC_URL",
    "max_body_bytes": "PREFPAIR_MAX_BODY_BYTES",
    "key_rate": "PREFPAIR_KEY_RATE",
    "key_burst": "PREFPAIR_KEY_BURST",
    "token_rate": "PREFPAIR_TOKEN_RATE",
    "token_burst": "PREFPAIR_TOKEN_BURST",
    "auth_failure_rate": "PREFPAIR_AUTH_FAILURE_RATE",
    "auth_failure_burst": "PREFPAIR_AUTH_FAILURE_BURST",
    "cors_origins": "PREFPAIR_CORS_ORIGINS",
    "trusted_proxies": "PREFPAIR_TRUSTED_PROXIES",
    "token_reuse": "PREFPAIR_TOKEN_REUSE",
    "token_ttl": "PREFPAIR_TOKEN_TTL",
    "token_max_ttl": "PREFPAIR_TOKEN_MAX_TTL",
    "idempotency_cache_size": "PREFPAIR_IDEMPOTENCY_CACHE_SIZE",
    "used_tokens_cache_size": "PREFPAIR_USED_TOKENS_CACHE_SIZE",
    "ack_timeout": "PREFPAIR_ACK_TIMEOUT",
}


def _split(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return [str(part).strip() for part in raw if str(part).strip()]


def _read_lines(path: Path, field: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _parse_secret(raw: str) -> TokenSecret:
    kid, sep, secret = raw.partition(":")
    if not sep:
        raise ConfigError("token_secrets", "expected KID:SECRET (the key id goes into each token)")
    try:
        return TokenSecret(kid=kid.strip(), secret=SecretStr(secret.strip()))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"token_secrets.{first['loc'][0]}", _clean(first["msg"])) from None


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")
