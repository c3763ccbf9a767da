"""The ``prefpair`` command: one subcommand per concern, each registered by its own package.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args, settings) -> int``. Errors that prefpair raises on purpose end as one line on
stderr and exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from prefpair import __version__
from prefpair.config import Settings, parse_kafka_options
from prefpair.errors import PrefpairError

# Modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = (
    "prefpair.broker.cli",
    "prefpair.topics",
    "prefpair.consumers.cli",
    "prefpair.compile.cli",
    "prefpair.service.cli",
    "prefpair.report.cli",
    "prefpair.demo",
)

SETTINGS_FLAGS = (
    "bootstrap_servers",
    "home",
    "inference_topic",
    "feedback_topic",
    "dead_letter_topic",
    "schema_registry_url",
)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command; each overrides its PREFPAIR_* variable."""
    group = parser.add_argument_group("connection and storage (flags > PREFPAIR_* environment > defaults)")
    group.add_argument("--bootstrap-servers", help="Kafka bootstrap servers [PREFPAIR_BOOTSTRAP_SERVERS]")
    group.add_argument(
        "--home", help="data directory: local broker, log, datasets [PREFPAIR_HOME, .prefpair]"
    )
    group.add_argument("--inference-topic", help="[PREFPAIR_INFERENCE_TOPIC, prefpair.inference]")
    group.add_argument("--feedback-topic", help="[PREFPAIR_FEEDBACK_TOPIC, prefpair.feedback]")
    group.add_argument("--dead-letter-topic", help="[PREFPAIR_DEAD_LETTER_TOPIC, prefpair.dead-letters]")
    group.add_argument(
        "--schema-registry-url", help="use Schema Registry framing [PREFPAIR_SCHEMA_REGISTRY_URL]"
    )
    group.add_argument(
        "--kafka-option",
        action="append",
        metavar="KEY=VALUE",
        help="librdkafka option passed through unchanged; repeatable [PREFPAIR_KAFKA_<KEY>]",
    )
    group.add_argument(
        "--log-level", default=None, help="DEBUG, INFO (default), WARNING [PREFPAIR_LOG_LEVEL]"
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text (default) or json: one JSON object per line, for log shippers [PREFPAIR_LOG_FORMAT]",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in SETTINGS_FLAGS}
    flags["kafka"] = parse_kafka_options(getattr(args, "kafka_option", None))
    for name in ("partitions", "replication_factor", "retention_ms"):
        if getattr(args, name, None) is not None:
            flags[name] = getattr(args, name)
    return Settings.load(flags)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefpair",
        description="Turn production LLM traffic into preference datasets, on Kafka.",
        epilog="Run `prefpair demo` to see the whole pipeline on a local broker.",
    )
    parser.add_argument("--version", action="version", version=f"prefpair {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for sub in subparsers.choices.values():
        for leaf in _leaf_parsers(sub):
            add_settings_arguments(leaf)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that end a command line: ``broker start`` rather than ``broker``.

    Shared flags go on the leaves so ``prefpair broker start --home x`` works; a nested
    parser would otherwise reset flags given to its parent back to their defaults.
    """
    nested = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not nested:
        return [parser]
    leaves: list[argparse.ArgumentParser] = []
    for action in nested:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            leaves.extend(_leaf_parsers(child))
    return leaves


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str | None, fmt: str | None = None) -> None:
    chosen = (level or os.environ.get("PREFPAIR_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    if (fmt or os.environ.get("PREFPAIR_LOG_FORMAT") or "text").lower() == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=getattr(logging, chosen, logging.INFO), handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_level", None), getattr(args, "log_format", None))
    try:
        settings = settings_from_args(args)
        code: int = args.func(args, settings)
    except PrefpairError as exc:
        print(f"prefpair {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prefpair {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
