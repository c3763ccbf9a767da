"""``prefpair consume`` (the daemon) and ``prefpair compact`` (merge small log segments)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import Settings
from prefpair.consumers.compaction import DEFAULT_DELETE_AFTER_S, DEFAULT_TARGET_ROWS, compact
from prefpair.consumers.config import CONSUMER_FLAGS
from prefpair.consumers.daemon import ConsumerDaemon, log_storage
from prefpair.consumers.retention import apply_retention
from prefpair.flags import Flags


class ConsumeRun(BaseModel):
    """How long ``prefpair consume`` runs (the daemon's knobs are :class:`ConsumerConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    until_caught_up: bool = Field(
        default=False,
        description="Stop once every assigned partition is consumed to its end and no feedback waits (batch use).",
    )


class CompactOptions(BaseModel):
    """Options of ``prefpair compact``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_rows: int = Field(default=DEFAULT_TARGET_ROWS, ge=1, description="Rows per merged segment at most.")
    delete_after_s: float = Field(
        default=DEFAULT_DELETE_AFTER_S,
        ge=0,
        description="Seconds merged parts stay on disk for readers that listed them earlier.",
        json_schema_extra={"flag": "--delete-after"},
    )
    retain_days: float | None = Field(
        default=None,
        gt=0,
        description="Also remove segments written more than this many days ago (never a partition's newest, nor "
        "one feedback may still wait in); see prefpair.consumers.retention for what it means for compiles.",
    )


CONSUME_RUN_FLAGS = Flags(ConsumeRun, env_prefix="PREFPAIR_CONSUMER_")
COMPACT_FLAGS = Flags(CompactOptions, env_prefix="PREFPAIR_COMPACT_")


def register(subparsers: Any) -> None:
    consume = subparsers.add_parser(
        "consume",
        help="run the consumer daemon: join feedback to inference into the Parquet log",
        description=(
            "Consume the inference and feedback topics as a consumer group, join feedback to its "
            "inference on request id and append both to the Parquet log (<home>/log, or --log-dir: a "
            "folder or s3://bucket/prefix), exactly once. Run any number of instances with the same "
            "--group-id. SIGTERM or SIGINT flush, commit and leave the group."
        ),
    )
    CONSUMER_FLAGS.add_arguments(consume)
    CONSUME_RUN_FLAGS.add_arguments(consume)
    consume.set_defaults(func=run_consume)

    compact_parser = subparsers.add_parser(
        "compact",
        help="merge small segments of the Parquet log (keeps offsets and exactly-once)",
        description="Merge runs of small contiguous log segments into bigger ones; safe beside a running consumer.",
    )
    CONSUMER_FLAGS.add_arguments(compact_parser, only=("log_dir",))  # the consumer's --log-dir: the same log
    COMPACT_FLAGS.add_arguments(compact_parser)
    compact_parser.set_defaults(func=run_compact)


def run_consume(args: argparse.Namespace, settings: Settings) -> int:
    config = CONSUMER_FLAGS.load(args)
    until_caught_up = CONSUME_RUN_FLAGS.load(args).until_caught_up
    stats = ConsumerDaemon(settings, config).run(until_caught_up=until_caught_up)
    print(json.dumps({"group_id": config.group_id, **stats.to_json()}, sort_keys=True))
    return 0


def run_compact(args: argparse.Namespace, settings: Settings) -> int:
    options = COMPACT_FLAGS.load(args)
    log_dir = log_storage(settings, CONSUMER_FLAGS.load(args))
    if options.retain_days is not None:
        retained = apply_retention(log_dir, options.retain_days)
        print(f"retention on {log_dir}: {retained.segments_removed} segments older than {options.retain_days:g} days "
              f"removed, {retained.segments_kept} kept")  # fmt: skip
    report = compact(log_dir, target_rows=options.target_rows, delete_after_s=options.delete_after_s)
    print(
        f"compacted {log_dir}: {report.segments_before} -> {report.segments_after} segments "
        f"in {report.partitions} partitions; {report.parts_deleted} merged parts deleted"
    )
    return 0
