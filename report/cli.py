"""``prefpair report``: the analytics page over the log (or a compiled dataset)."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import Settings
from prefpair.flags import Flags
from prefpair.report.config import REPORT_FLAGS
from prefpair.storage import Location, location


class ReportJob(BaseModel):
    """Where a report reads and writes (what it computes is :class:`ReportConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_dir: Location | None = Field(
        default=None, description="The consumer's Parquet log, a folder or s3://bucket/prefix; unset means <home>/log."
    )
    out: Location | None = Field(
        default=None,
        description="Folder or s3://bucket/prefix for report.html and report.json; unset means <home>/report.",
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
    # Imported here: the analyses load matplotlib and scipy, which the other commands need not pay.
    from prefpair.report.build import build_report
    from prefpair.report.experiments import definitions_from_topic

    job = JOB_FLAGS.load(args)
    config = REPORT_FLAGS.load(args)
    options = settings.s3_options()
    log_dir = location(job.log_dir or settings.log_dir, options)
    # Experiment names and arms: from --experiments FILE if given, else from the experiments topic.
    definitions = definitions_from_topic(settings) if config.experiments is None else None
    out = location(job.out or settings.home / "report", options)
    report = build_report(log_dir, out, config, definitions, s3=options)
    ratings = report.ratings
    print(f"report: {report.html_path}")
    print(f"data:   {report.json_path}")
    summary = f"{ratings['comparisons']} comparisons between {len(ratings['models'])} models"
    health = report.health
    if health is not None and health["coverage"]["share"] is not None:
        summary += f"; {health['coverage']['share']:.1%} of inferences have feedback"
    print(summary)
    return 0
