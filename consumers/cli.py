"""``prefpair consume`` (the daemon) and ``prefpair compact`` (merge small log segments)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefpair.config import Settings
from prefpair.consumers.compaction import DEFAULT_DELETE_AFTER_S, DEFAULT_TARGET_ROWS, compact
from prefpair.consumers.config import ConsumerConfig
from prefpair.consumers.daemon import ConsumerDaemon
from prefpair.errors import first_problem

_FLAGS = {
    "group_id": ("--group-id", str),
    "instance_id": ("--instance-id", str),
    "grace_ms": ("--grace-ms", int),
    "flush_interval_ms": ("--flush-interval-ms", int),
    "flush_rows": ("--flush-rows", int),
    "flush_bytes": ("--flush-bytes", int),
    "hot_state_bytes": ("--hot-state-bytes", int),
    "dedup_ids": ("--dedup-ids", int),
    "compression": ("--compression", str),
    "batch_size": ("--batch-size", int),
    "progress_interval_s": ("--progress-interval", float),
    "metrics_path": ("--metrics-file", str),
    "session_timeout_ms": ("--session-timeout-ms", int),
}


def register(subparsers: Any) -> None:
    consume = subparsers.add_parser(
        "consume",
        help="run the consumer daemon: join feedback to inference into the Parquet log",
        description=(
            "Consume the inference and feedback topics as a consumer group, join feedback to its "
            "inference on request id and append both to the Parquet log under <home>/log, exactly "
            "once. Run any number of instances with the same --group-id. SIGTERM or SIGINT flush, "
            "commit and leave the group. Each option also reads PREFPAIR_CONSUMER_<NAME>."
        ),
    )
    defaults = ConsumerConfig()
    for field, (flag, kind) in _FLAGS.items():
        info = ConsumerConfig.model_fields[field]
        consume.add_argument(flag, type=kind, default=None, help=f"{info.description} [{getattr(defaults, field)}]")
    consume.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop once every assigned partition is consumed to its end and no feedback waits (batch use)",
    )
    consume.set_defaults(func=run_consume)

    compact_parser = subparsers.add_parser(
        "compact",
        help="merge small segments of the Parquet log (keeps offsets and exactly-once)",
        description="Merge runs of small contiguous log segments into bigger ones; safe beside a running consumer.",
    )
    compact_parser.add_argument(
        "--target-rows", type=int, default=DEFAULT_TARGET_ROWS,
        help=f"rows per merged segment at most [{DEFAULT_TARGET_ROWS}]",
    )  # fmt: skip
    compact_parser.add_argument(
        "--delete-after", type=float, default=DEFAULT_DELETE_AFTER_S,
        help=f"seconds merged parts stay on disk for readers that listed them earlier [{DEFAULT_DELETE_AFTER_S:g}]",
    )  # fmt: skip
    compact_parser.set_defaults(func=run_compact)


def consumer_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ConsumerConfig:
    """Flags > PREFPAIR_CONSUMER_* environment > defaults."""
    import os

    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in _FLAGS:
        raw = env.get(f"PREFPAIR_CONSUMER_{field.upper()}")
        if raw is not None:
            values[field] = raw
        flag = getattr(args, field, None)
        if flag is not None:
            values[field] = flag
    from pydantic import ValidationError

    from prefpair.errors import ConfigError

    try:
        return ConsumerConfig(**values)
    except ValidationError as exc:
        raise ConfigError(*first_problem(exc, "consumer")) from None


def run_consume(args: argparse.Namespace, settings: Settings) -> int:
    config = consumer_config(args)
    stats = ConsumerDaemon(settings, config).run(until_caught_up=args.until_caught_up)
    print(json.dumps({"group_id": config.group_id, **stats.to_json()}, sort_keys=True))
    return 0


def run_compact(args: argparse.Namespace, settings: Settings) -> int:
    report = compact(Path(settings.log_dir), target_rows=args.target_rows, delete_after_s=args.delete_after)
    print(
        f"compacted {settings.log_dir}: {report.segments_before} -> {report.segments_after} segments "
        f"in {report.partitions} partitions; {report.parts_deleted} merged parts deleted"
    )
    return 0
