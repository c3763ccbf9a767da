"""The ``prefpair`` command: top-level help, every subcommand's help, and usage errors."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from prefpair import __version__
from prefpair.cli import build_parser

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command line that ends in a parser: ("broker",), ("broker", "start"), ..."""
    paths: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(_command_paths(child, (*prefix, name)))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_expected_command_is_registered() -> None:
    for expected in [("broker", "fetch"), ("broker", "start"), ("broker", "stop"), ("broker", "status"),
                     ("topics", "create"), ("topics", "describe")]:  # fmt: skip
        assert expected in COMMANDS


def test_console_script_help() -> None:
    script = shutil.which("prefpair", path=str(Path(sys.executable).parent))
    assert script is not None, "the `prefpair` console script is not installed next to this python"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: prefpair")
    for name in ("broker", "topics"):
        assert name in result.stdout


def test_version(run_cli: RunCli) -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"prefpair {__version__}"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_subcommand_help(run_cli: RunCli, command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: prefpair {' '.join(command)}")
    assert result.stderr == ""


def test_missing_command_is_a_usage_error(run_cli: RunCli) -> None:
    for argv in ((), ("broker",), ("topics",)):
        result = run_cli(*argv)
        assert result.returncode == 2
        assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_shared_flags_work_after_nested_commands(run_cli: RunCli, tmp_path: Path) -> None:
    """`prefpair broker status --home X` reads X/broker: settings flags sit on the leaf commands."""
    result = run_cli("broker", "status", "--home", str(tmp_path / "h"), "--log-level", "WARNING")
    assert result.returncode == 3
    assert str(tmp_path / "h" / "broker") in result.stdout


def test_json_logs_are_one_object_per_line() -> None:
    code = (
        "from prefpair.cli.logs import LogConfig, configure_logging; import logging; "
        "configure_logging(LogConfig(log_level='INFO', log_format='json')); "
        "logging.getLogger('prefpair.x').info('joined %d rows', 3); logging.getLogger('prefpair.y').debug('hidden')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["level"] == "INFO" and entry["logger"] == "prefpair.x" and entry["message"] == "joined 3 rows"
    assert entry["ts"].endswith("Z")


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_an_os_error_is_one_line_naming_the_path(run_cli: RunCli, tmp_path: Path) -> None:
    """ENOTDIR, EACCES, EROFS, ENOSPC...: `prefpair <command>: error: <what> (<path>): <reason>`, exit 74."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    result = run_cli("compact", "--home", str(a_file))
    assert result.returncode == 74
    assert _one_line(result) == f"prefpair compact: error: ENOTDIR ({a_file}/log): Not a directory"

    # Nobody, not even root, may create a directory in /sys (EPERM for root, EACCES for others).
    home = "/sys/prefpair-test-home"
    result = run_cli("consume", "--home", home, "--bootstrap-servers", "127.0.0.1:1", "--until-caught-up")
    assert result.returncode == 74
    pattern = rf"prefpair consume: error: E(PERM|ACCES) \({home}[^)]*\): (Operation not permitted|Permission denied)"
    assert re.fullmatch(pattern, _one_line(result))


def test_commands_other_than_report_do_not_import_the_plotting_stack() -> None:
    """`prefpair consume` (every command but report) starts without matplotlib and scipy (~0.6 s)."""
    probe = (
        "import sys; from prefpair.cli import build_parser; "
        "build_parser().parse_args(['consume', '--until-caught-up']); "
        "print(sorted(m for m in ('matplotlib', 'scipy') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
