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

from prefpair.broker.exceptions import BrokerError
from prefpair.broker.manager import (
    CACHE_ENV,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    KAFKA_VERSION,
    LocalBroker,
    fetch,
    is_fetched,
)
from prefpair.config import Settings

EXIT_NOT_RUNNING = 3


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
    _add_cache_dir(fetch_parser)
    fetch_parser.set_defaults(func=_fetch)

    start = actions.add_parser("start", help="start the broker and print its bootstrap address")
    _add_data_dir(start)
    _add_cache_dir(start)
    start.add_argument("--port", type=int, help="broker port on 127.0.0.1 [recorded port, else a free one]")
    start.add_argument(
        "--controller-port", type=int, help="KRaft controller port on 127.0.0.1 [recorded, else free]"
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT,
        help=f"seconds to wait for the broker to answer [{DEFAULT_START_TIMEOUT:.0f}]",
    )
    start.add_argument("--heap", help="JVM max heap, e.g. 512m or 1g [PREFPAIR_BROKER_HEAP, 512m]")
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the broker (data is kept)")
    _add_data_dir(stop)
    stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        help=f"seconds to wait after SIGTERM before SIGKILL [{DEFAULT_STOP_TIMEOUT:.0f}]",
    )
    stop.set_defaults(func=_stop)

    status = actions.add_parser("status", help="say whether the broker runs; exit 0 if so, 3 if not")
    _add_data_dir(status)
    status.set_defaults(func=_status)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="broker data directory [<home>/broker]")


def _add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", type=Path, help=f"where jars are cached [{CACHE_ENV}, ~/.cache/prefpair]"
    )


def _broker(args: argparse.Namespace, settings: Settings) -> LocalBroker:
    return LocalBroker(
        data_dir=args.data_dir or settings.broker_dir,
        cache_dir=getattr(args, "cache_dir", None),
        port=getattr(args, "port", None),
        controller_port=getattr(args, "controller_port", None),
        heap=getattr(args, "heap", None),
    )


def _show_tail(exc: BrokerError) -> None:
    """Print the output behind a failure above the one-line error that cli.main prints."""
    if exc.log_tail:
        print(f"--- {exc.tail_title} ---", file=sys.stderr)
        for line in exc.log_tail:
            print(f"    {line}", file=sys.stderr)


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    cached = is_fetched(args.cache_dir)
    try:
        libs = fetch(args.cache_dir)
    except BrokerError as exc:
        _show_tail(exc)
        raise
    note = "already cached" if cached else "fetched"
    print(f"Kafka {KAFKA_VERSION} jars {note} in {libs}", file=sys.stderr)
    print(libs)
    return 0


def _start(args: argparse.Namespace, settings: Settings) -> int:
    broker = _broker(args, settings)
    try:
        address = broker.start(timeout=args.timeout)
    except BrokerError as exc:
        _show_tail(exc)
        raise
    print(address)
    return 0


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    broker = _broker(args, settings)
    stopped = broker.stop(timeout=args.timeout)
    print("stopped" if stopped else f"not running (data dir {broker.data_dir})")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = _broker(args, settings).status()
    print(status.describe())
    return 0 if status.running else EXIT_NOT_RUNNING


__all__ = ["EXIT_NOT_RUNNING", "register"]
