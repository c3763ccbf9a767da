"""The root of every error prefpair raises on purpose.

Each subpackage keeps its own small ``exceptions.py`` whose classes derive from
:class:`PrefpairError`, so callers can catch one type, and the command line turns
any of them into a one-line message and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


class PrefpairError(Exception):
    """Base class of all prefpair errors."""


class ConfigError(PrefpairError):
    """A setting is missing, malformed or refused by the Kafka client.

    Keeps the offending ``field`` so tools can point at it, and the ``source`` of the bad value
    when it is known (the flag or ``PREFPAIR_*`` variable that gave it), which the message names.
    """

    def __init__(self, field: str, reason: str, *, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        super().__init__(f"{source or field}: {reason}")


class KafkaUnavailableError(PrefpairError):
    """The configured bootstrap servers did not answer in time."""

    def __init__(self, bootstrap_servers: str, reason: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.reason = reason
        super().__init__(f"Kafka at {bootstrap_servers} is unreachable: {reason}")


class StorageError(PrefpairError):
    """Object storage refused or failed an operation on a location (never names a credential).

    Keeps the ``url`` and the ``reason`` (what the server or the client library said).
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class S3ServerError(PrefpairError):
    """The local S3 server (:mod:`prefpair.s3server`) could not start: ``reason`` and the end of its log."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"SeaweedFS S3: {reason}" + (f"\n{log_tail}" if log_tail else ""))


def first_problem(exc: pydantic.ValidationError, default: str, *, indices: bool = True) -> tuple[str, str]:
    """The dotted field path and the message of a pydantic error's first problem.

    Every config and contract error here names one field and one reason; this is where a pydantic
    error becomes that pair (``default`` when the problem is not about one field).
    """
    first = exc.errors()[0]
    path = (str(part) for part in first["loc"] if indices or not isinstance(part, int))
    return ".".join(path) or default, first["msg"]

