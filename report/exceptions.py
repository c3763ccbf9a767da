"""Errors of ``prefpair report``: missing or unusable input, named so the user can fix it."""

from __future__ import annotations

from pathlib import Path

from prefpair.errors import PrefpairError


class ReportError(PrefpairError):
    """Base class of report errors."""


class EmptyLogError(ReportError):
    """The log (or dataset) folder holds nothing to report on; keeps the ``path`` looked at."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"nothing to report in {path}: {reason}")


class ReportInputError(ReportError):
    """An optional input (manifest, metrics file, dataset) is unreadable; keeps ``field`` and ``reason``."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
