"""``prefpair report``: the analytics page over the log (or a compiled dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pydantic

from prefpair.config import Settings
from prefpair.errors import first_problem
from prefpair.report.build import build_report
from prefpair.report.config import DEFAULT_BOOTSTRAP_ROUNDS, DEFAULT_CONFIDENCE, ReportConfig
from prefpair.report.exceptions import ReportInputError


def _dead_letters(value: str) -> int | Path:
    """A count, or the path of the consumer's JSON metrics file."""
    return int(value) if value.strip().isdigit() else Path(value)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="model ratings, bias checks, agreement and feedback health as HTML + JSON",
        description="Analyse the Parquet log (or a compiled dataset) and write report.html "
        "(self-contained: plots inline, nothing fetched) and report.json (every number in the page).",
    )
    parser.add_argument("--log-dir", type=Path, help="the consumer's Parquet log [HOME/log]")
    parser.add_argument("--out", type=Path, help="folder for report.html and report.json [HOME/report]")
    parser.add_argument("--dataset", type=Path, metavar="DIR", help="report over a compiled dataset instead of the log")
    parser.add_argument("--manifest", type=Path, help="manifest.json of the last compile: shows its drop counts")
    parser.add_argument(
        "--dead-letters",
        type=_dead_letters,
        metavar="N|FILE",
        help="dead-letter count, or the consumer's JSON metrics file holding one",
    )
    parser.add_argument(
        "--bootstrap-rounds",
        type=int,
        default=DEFAULT_BOOTSTRAP_ROUNDS,
        help=f"bootstrap rounds of the rating intervals [{DEFAULT_BOOTSTRAP_ROUNDS}]",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap [0]")
    parser.add_argument("--per-source", action="store_true", help="also rate models per source type")
    parser.add_argument(
        "--score-pairs",
        action="store_true",
        help="also rate models (and check bias across all sources) from pairs implied by two scores of one "
        "source, such as a reward model's; they always count in their own source type's rows",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=DEFAULT_CONFIDENCE,
        help=f"level of every interval, between 0.5 and 1 [{DEFAULT_CONFIDENCE}]",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        config = ReportConfig(
            bootstrap_rounds=args.bootstrap_rounds,
            seed=args.seed,
            per_source=args.per_source,
            score_pairs_in_ratings=args.score_pairs,
            confidence=args.confidence,
            dead_letters=args.dead_letters,
            manifest=args.manifest,
            dataset=args.dataset,
        )
    except pydantic.ValidationError as exc:
        raise ReportInputError(*first_problem(exc, "report")) from None
    log_dir = args.log_dir or settings.log_dir
    out_dir = args.out or settings.home / "report"
    report = build_report(log_dir, out_dir, config)
    ratings = report.ratings
    print(f"report: {report.html_path}")
    print(f"data:   {report.json_path}")
    summary = f"{ratings['comparisons']} comparisons between {len(ratings['models'])} models"
    health = report.health
    if health is not None and health["coverage"]["share"] is not None:
        summary += f"; {health['coverage']['share']:.1%} of inferences have feedback"
    print(summary)
    return 0
