"""``prefpair broker fetch|start|stop|status``: the local Kafka broker from the command line.

``start`` prints only the bootstrap address on stdout, so a shell can capture it::

    export PREFPAIR_BOOTSTRAP_SERVERS=$(prefpair broker start)

``status`` exits 0 when the broker runs and 3 when it does not (as ``systemctl status`` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.broker.exceptions import BrokerError
from prefpair.broker.manager import (
    CACHE_ENV,
    DEFAULT_HEAP,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    KAFKA_VERSION,
    LocalBroker,
    fetch,
    is_fetched,
)
from prefpair.config import Settings
from prefpair.flags import Flags

EXIT_NOT_RUNNING = 3


class BrokerCommand(BaseModel):
    """Options of ``prefpair broker fetch|start|stop|status``; each action takes the ones it uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path | None = Field(default=None, description="Broker data directory; unset means <home>/broker.")
    cache_dir: Path | None = Field(
        default=None,
        description="Where the jars are cached; unset means $XDG_CACHE_HOME/prefpair or ~/.cache/prefpair.",
        json_schema_extra={"env": CACHE_ENV},
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Broker port on 127.0.0.1; unset means the recorded port, else a free one.",
    )
    controller_port: int | None = Field(
        default=None, ge=1, le=65535, description="KRaft controller port on 127.0.0.1; unset means recorded, else free."
    )
    heap: str = Field(default=DEFAULT_HEAP, pattern=r"^[0-9]+[kKmMgG]?$", description="JVM max heap, e.g. 512m or 1g.")
    start_timeout: float = Field(
        default=DEFAULT_START_TIMEOUT, gt=0, description="Seconds to wait for the broker to answer.",
        json_schema_extra={"flag": "--timeout"},
    )  # fmt: skip
    stop_timeout: float = Field(
        default=DEFAULT_STOP_TIMEOUT, gt=0, description="Seconds to wait after SIGTERM before SIGKILL.",
        json_schema_extra={"flag": "--timeout"},
    )  # fmt: skip


BROKER_FLAGS = Flags(BrokerCommand, env_prefix="PREFPAIR_BROKER_")  # heap: PREFPAIR_BROKER_HEAP, as the manager reads


def register(subparsers: Any) -> None:
    """Add ``prefpair broker`` and its actions to the top-level command."""
    parser = subparsers.add_parser(
        "broker",
        help=f"run a local single-node Apache Kafka {KAFKA_VERSION} (KRaft, no Docker)",
        description=(
            f"A real Apache Kafka {KAFKA_VERSION} broker+controller in one JVM, for development and "
            "tests. Needs Java 17+; jars come from Maven Central once (needs mvn). Other commands "
            "use it automatically when no bootstrap servers are configured."
        ),
    )
    actions = parser.add_subparsers(dest="broker_command", metavar="ACTION", required=True)

    fetch_parser = actions.add_parser(
        "fetch", help="download the broker's jars from Maven Central (once; later calls are instant)"
    )
    BROKER_FLAGS.add_arguments(fetch_parser, only=("cache_dir",))
    fetch_parser.set_defaults(func=_fetch)

    start = actions.add_parser("start", help="start the broker and print its bootstrap address")
    BROKER_FLAGS.add_arguments(
        start, only=("data_dir", "cache_dir", "port", "controller_port", "start_timeout", "heap")
    )
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the broker (data is kept)")
    BROKER_FLAGS.add_arguments(stop, only=("data_dir", "stop_timeout"))
    stop.set_defaults(func=_stop)

    status = actions.add_parser("status", help="say whether the broker runs; exit 0 if so, 3 if not")
    BROKER_FLAGS.add_arguments(status, only=("data_dir",))
    status.set_defaults(func=_status)


def _broker(options: BrokerCommand, settings: Settings) -> LocalBroker:
    return LocalBroker(
        data_dir=options.data_dir or settings.broker_dir,
        cache_dir=options.cache_dir,
        port=options.port,
        controller_port=options.controller_port,
        heap=options.heap,
    )


def _show_tail(exc: BrokerError) -> None:
    """Print the output behind a failure above the one-line error that cli.main prints."""
    if exc.log_tail:
        print(f"--- {exc.tail_title} ---", file=sys.stderr)
        for line in exc.log_tail:
            print(f"    {line}", file=sys.stderr)


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    cache_dir = BROKER_FLAGS.load(args).cache_dir
    cached = is_fetched(cache_dir)
    try:
        libs = fetch(cache_dir)
    except BrokerError as exc:
        _show_tail(exc)
        raise
    note = "already cached" if cached else "fetched"
    print(f"Kafka {KAFKA_VERSION} jars {note} in {libs}", file=sys.stderr)
    print(libs)
    return 0


def _start(args: argparse.Namespace, settings: Settings) -> int:
    options = BROKER_FLAGS.load(args)
    broker = _broker(options, settings)
    try:
        address = broker.start(timeout=options.start_timeout)
    except BrokerError as exc:
        _show_tail(exc)
        raise
    print(address)
    return 0


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    options = BROKER_FLAGS.load(args)
    broker = _broker(options, settings)
    stopped = broker.stop(timeout=options.stop_timeout)
    print("stopped" if stopped else f"not running (data dir {broker.data_dir})")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = _broker(BROKER_FLAGS.load(args), settings).status()
    print(status.describe())
    return 0 if status.running else EXIT_NOT_RUNNING


__all__ = ["EXIT_NOT_RUNNING", "register"]
