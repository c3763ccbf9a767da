"""Errors of the wire contract: bad content, and bytes that cannot be decoded."""

from __future__ import annotations

from prefpair.errors import PrefpairError


class ContractError(PrefpairError):
    """Base class of contract errors."""


class ValidationError(ContractError):
    """An event breaks the contract; ``field`` names where, ``reason`` says why.

    Raised before anything is sent, so nothing half-valid reaches a topic.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[type[ValidationError], tuple[str, str]]:
        return (type(self), (self.field, self.reason))


class DecodeError(ContractError):
    """Bytes on a topic are not a decodable event; keeps the bytes for the dead-letter topic."""

    def __init__(self, reason: str, payload: bytes | None = None) -> None:
        self.reason = reason
        self.payload = payload
        super().__init__(reason)


class BadMagicError(DecodeError):
    """The message does not start with a known framing marker."""


class UnknownSchemaError(DecodeError):
    """The writer schema's fingerprint (or registry id) is not one we know."""

    def __init__(self, fingerprint: str, payload: bytes | None = None) -> None:
        self.fingerprint = fingerprint
        super().__init__(f"unknown writer schema {fingerprint}", payload)
