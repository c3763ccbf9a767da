"""Errors of the dataset compiler; each keeps what it was about (a path, a field, a reason)."""

from __future__ import annotations

from pathlib import Path

from prefpair.errors import ConfigError, PrefpairError


class CompileError(PrefpairError):
    """Base class of dataset compiler errors."""


class CompileConfigError(CompileError, ConfigError):
    """A compile option is malformed (a filter, a split fraction, a format name...).

    A :class:`~prefpair.errors.ConfigError` too, so one ``except ConfigError`` catches a bad setting
    of any area; ``field``, ``reason`` and the ``field: reason`` message are ConfigError's.
    """

    def __init__(self, field: str, reason: str) -> None:
        ConfigError.__init__(self, field, reason)


class NoCommittedLogError(CompileError):
    """The log directory holds no committed segment: nothing has been consumed there yet."""

    def __init__(self, log_dir: Path | str) -> None:
        self.log_dir = log_dir
        super().__init__(f"no committed log segments under {log_dir} (run `prefpair consume` first?)")


class OutputLockedError(CompileError):
    """Another compile holds the lock on this output."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        super().__init__(f"another compile is writing this output (lock held: {lock_path})")


class OutputDirError(CompileError):
    """The output directory cannot be used: it holds something that is not a dataset of ours."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"output {path}: {reason}")


class PublishConflictError(CompileError):
    """Another compile published the same number of this output on object storage first."""

    def __init__(self, url: str, number: int) -> None:
        self.url = url
        self.number = number
        super().__init__(
            f"another compile published {url} (number {number}) first; nothing of this run is visible, run it again"
        )


class SparkTranslationError(CompileError):
    """A compile statement has no Spark form (a defect of :mod:`prefpair.compile.dialect`, not of the input)."""

    def __init__(self, sql: str, reason: str) -> None:
        self.sql = sql
        self.reason = reason
        super().__init__(f"cannot run on Spark: {reason}: {' '.join(sql.split())[:300]}")


class SparkUnavailableError(CompileError):
    """``engine = spark`` without its packages (or without the Java that Spark runs on)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"engine spark: {reason}")


class SplitWriteError(CompileError):
    """A split's file got another number of rows than the split holds."""

    def __init__(self, path: Path, expected: int, written: int) -> None:
        self.path, self.expected, self.written = path, expected, written
        super().__init__(f"{path}: expected {expected} rows for its split, the query gave {written}")
