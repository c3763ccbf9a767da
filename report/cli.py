"""``prefpair report``: the analytics page over the log (or a compiled dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import Settings
from prefpair.flags import Flags
from prefpair.report.build import build_report
from prefpair.report.config import REPORT_FLAGS


class ReportJob(BaseModel):
    """Where a report reads and writes (what it computes is :class:`ReportConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_dir: Path | None = Field(default=None, description="The consumer's Parquet log; unset means <home>/log.")
    out: Path | None = Field(
        default=None, description="Folder for report.html and report.json; unset means <home>/report."
    )


JOB_FLAGS = Flags(ReportJob, env_prefix="PREFPAIR_REPORT_")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="model ratings, bias checks, agreement and feedback health as HTML + JSON",
        description="Analyse the Parquet log (or a compiled dataset) and write report.html "
        "(self-contained: plots inline, nothing fetched) and report.json (every number in the page).",
    )
    JOB_FLAGS.add_arguments(parser)
    REPORT_FLAGS.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    job = JOB_FLAGS.load(args)
    config = REPORT_FLAGS.load(args)
    report = build_report(job.log_dir or settings.log_dir, job.out or settings.home / "report", config)
    ratings = report.ratings
    print(f"report: {report.html_path}")
    print(f"data:   {report.json_path}")
    summary = f"{ratings['comparisons']} comparisons between {len(ratings['models'])} models"
    health = report.health
    if health is not None and health["coverage"]["share"] is not None:
        summary += f"; {health['coverage']['share']:.1%} of inferences have feedback"
    print(summary)
    return 0
