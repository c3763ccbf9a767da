"""``prefpair report``: analytics over the log as a self-contained HTML page and a JSON of
every number in it: model ratings (Bradley-Terry, Elo), bias checks (position, length),
agreement between sources and raters, and feedback health."""

from prefpair.report.build import Report, build_report
from prefpair.report.config import ReportConfig
from prefpair.report.exceptions import EmptyLogError, ReportError, ReportInputError

__all__ = ["EmptyLogError", "Report", "ReportConfig", "ReportError", "ReportInputError", "build_report"]
