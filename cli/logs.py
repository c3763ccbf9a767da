"""Logging of every command: level and format from ``--log-level`` / ``--log-format`` or
``PREFPAIR_LOG_LEVEL`` / ``PREFPAIR_LOG_FORMAT``; text lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from prefpair.flags import Flags


class LogConfig(BaseModel):
    """How a command logs (to stderr)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe level logged."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object per line, for log shippers."
    )


LOG_FLAGS = Flags(LogConfig, env_prefix="PREFPAIR_")

QUIETED_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3fs", "fsspec", "urllib3")
"""Third-party loggers held at WARNING unless ``--log-level DEBUG``: the S3 stack's INFO lines
("Found credentials in environment variables.") say nothing about prefpair's work."""


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


def configure_logging(config: LogConfig) -> None:
    """Send log records at ``config.log_level`` and above to stderr, as text or JSON lines
    (the :data:`QUIETED_LOGGERS` at WARNING and above, unless the level is DEBUG)."""
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=getattr(logging, config.log_level), handlers=[handler])
    third_party = logging.NOTSET if config.log_level == "DEBUG" else logging.WARNING
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(third_party)
