"""The ``prefpair`` command: one subcommand per concern, each registered by its own package.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args, settings) -> int``; its options come from config models through
:mod:`prefpair.flags` (flags > ``PREFPAIR_*`` environment > defaults). Every command also takes
the shared settings (:class:`~prefpair.config.Settings`) and logging flags.

Errors end as one line on stderr, ``prefpair <command>: error: ...``: exit 2 for the errors
prefpair raises on purpose (bad input, unreachable cluster, ...), exit 74 (``EX_IOERR``) when the
operating system refuses (disk full, no permission, read-only file system). A traceback means a bug.

This package is the top floor: it may import every other part of prefpair, and none imports it.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from prefpair import __version__
from prefpair.cli.logs import LOG_FLAGS, configure_logging
from prefpair.config import SETTINGS_FLAGS, TOPIC_LAYOUT, Settings
from prefpair.errors import PrefpairError

# Modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = (
    "prefpair.broker.cli",
    "prefpair.topics",
    "prefpair.consumers.cli",
    "prefpair.compile.cli",
    "prefpair.service.cli",
    "prefpair.report.cli",
    "prefpair.judge.cli",
    "prefpair.cli.erase",
    "prefpair.cli.experiments",
    "prefpair.cli.demo",
)

EXIT_ERROR = 2
EXIT_OS_ERROR = 74  # EX_IOERR of sysexits.h


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings and logging flags, on every command."""
    group = parser.add_argument_group("connection, storage and logging (flags > PREFPAIR_* environment > defaults)")
    SETTINGS_FLAGS.add_arguments(group, exclude=TOPIC_LAYOUT)
    LOG_FLAGS.add_arguments(group)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The Settings the parsed flags describe, over ``PREFPAIR_*`` variables and defaults."""
    return Settings.load(args)


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
        for leaf in leaf_parsers(sub):
            add_shared_arguments(leaf)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that end a command line: ``broker start`` rather than ``broker``.

    Shared flags go on the leaves so ``prefpair broker start --home x`` works; a nested
    parser would otherwise reset flags given to its parent back to their defaults.
    """
    nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not nested:
        return [parser]
    leaves: list[argparse.ArgumentParser] = []
    for action in nested:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            leaves.extend(leaf_parsers(child))
    return leaves


def describe_os_error(exc: OSError) -> str:
    """``EACCES (/data/log): Permission denied``: what the system said, about which path."""
    what = errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
    paths = " -> ".join(os.fsdecode(path) for path in (exc.filename, exc.filename2) if path is not None)
    reason = exc.strerror or str(exc)
    return f"{what} ({paths}): {reason}" if paths else f"{what}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(LOG_FLAGS.load(args))
        settings = settings_from_args(args)
        code: int = args.func(args, settings)
    except PrefpairError as exc:
        print(f"prefpair {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # Whoever read our output stopped (`prefpair feedback list | head`): nothing to report.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"prefpair {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_OS_ERROR
    except KeyboardInterrupt:
        print(f"prefpair {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
