"""Errors of ``prefpair report``: missing or unusable input, named so the user can fix it."""

from __future__ import annotations

from pathlib import Path

from prefpair.errors import ConfigError, PrefpairError


class ReportError(PrefpairError):
    """Base class of report errors."""


class EmptyLogError(ReportError):
    """The log (or dataset) folder holds nothing to report on; keeps the ``path`` looked at."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"nothing to report in {path}: {reason}")


class ReportInputError(ReportError, ConfigError):
    """An optional input (manifest, metrics file, dataset) is unreadable; keeps ``field`` and ``reason``.

    A :class:`~prefpair.errors.ConfigError` too (``field``, ``reason``), so one ``except ConfigError``
    catches a bad setting of any area.
    """

    def __init__(self, field: str, reason: str) -> None:
        ConfigError.__init__(self, field, reason)
