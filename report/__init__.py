"""``prefpair report``: analytics over the log as a self-contained HTML page and a JSON of
every number in it: model ratings (Bradley-Terry, Elo), bias checks (position, length),
agreement between sources and raters, and feedback health."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefpair.report.config import ReportConfig
from prefpair.report.exceptions import EmptyLogError, ReportError, ReportInputError

if TYPE_CHECKING:
    from prefpair.report.build import Report, build_report


def __getattr__(name: str) -> Any:
    """``Report`` and ``build_report`` on first use: the analyses import matplotlib and scipy
    (about 0.6 s), which every other command (``prefpair consume``...) would pay at start-up."""
    if name in ("Report", "build_report"):
        return getattr(importlib.import_module("prefpair.report.build"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["EmptyLogError", "Report", "ReportConfig", "ReportError", "ReportInputError", "build_report"]
