"""Errors of the local broker: missing Java or Maven, a busy port, a broker that won't come up.

Each message is one line that says what failed and what to do; the command line prints it
as is. When the broker itself failed, :attr:`BrokerError.log_tail` keeps the last lines of
its log (or of Maven's output) so the command line can show them above that line.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefpair.errors import PrefpairError


class BrokerError(PrefpairError):
    """The local Kafka broker could not be fetched, started or stopped."""

    def __init__(self, message: str, log_tail: Sequence[str] = (), tail_title: str = "") -> None:
        self.log_tail = tuple(log_tail)
        self.tail_title = tail_title or "last lines of the output"
        super().__init__(message)


class JavaNotFoundError(BrokerError):
    """No usable ``java`` (17 or newer) on PATH or in JAVA_HOME."""


class FetchError(BrokerError):
    """Maven is missing or could not resolve the Kafka jars."""


class PortInUseError(BrokerError):
    """The broker or controller port is already taken on 127.0.0.1."""


class BrokerStartError(BrokerError):
    """The broker process exited or did not answer in time during start-up."""
