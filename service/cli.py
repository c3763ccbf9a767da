"""``prefpair serve`` (the HTTP API on uvicorn) and ``prefpair feedback list|show`` (JSON lines)."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.flags import Flags
from prefpair.schemas import SourceType
from prefpair.service.config import SERVICE_FLAGS, ServiceConfig, TokenSecret
from prefpair.service.exceptions import BadCursorError
from prefpair.service.reads import MAX_LIMIT, FeedbackFilter, LogReader

log = logging.getLogger("prefpair.service")


class FeedbackQuery(BaseModel):
    """What ``prefpair feedback list`` (and ``show --request-id``) reads from the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str | None = Field(default=None, description="Only this request.")
    key: str | None = Field(default=None, description="Only this feedback key.")
    source_type: SourceType | None = Field(default=None, description="Only feedback from this source type.")
    has_score: bool | None = Field(default=None, description="Only feedback with (or without) a score.")
    has_comment: bool | None = Field(default=None, description="Only feedback with (or without) a comment.")
    since_ms: int | None = Field(
        default=None,
        description="Created at or after (ISO 8601).",
        json_schema_extra={"flag": "--since", "metavar": "TIME"},
    )
    until_ms: int | None = Field(
        default=None,
        description="Created before (ISO 8601).",
        json_schema_extra={"flag": "--until", "metavar": "TIME"},
    )
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description=f"Rows per page (at most {MAX_LIMIT}).")
    cursor: str | None = Field(default=None, description="Continue after a previous page (printed on stderr).")
    all: bool = Field(default=False, description="Follow cursors to the end.")

    @field_validator("since_ms", "until_ms", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_time(value)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(str(exc)) from None
        return value


SERVE_HELP = (
    "Serve the feedback API: writes go to Kafka (2xx once acknowledged), reads come from the Parquet log. "
    "API keys and token secrets come from the environment or files, never from flags."
)
QUERY_FLAGS = Flags(FeedbackQuery, env_prefix=None)  # a query, not a setting: no variables


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``feedback`` (with ``list`` and ``show``) to the ``prefpair`` command."""
    serve = subparsers.add_parser(
        "serve", help="serve the feedback HTTP API (OpenAPI at /openapi.json)", description=SERVE_HELP
    )
    SERVICE_FLAGS.add_arguments(serve)
    serve.set_defaults(func=serve_command)

    feedback = subparsers.add_parser("feedback", help="read resolved feedback from the Parquet log")
    commands = feedback.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND", required=True)
    listing = commands.add_parser("list", help="print resolved feedback as JSON lines, oldest first")
    QUERY_FLAGS.add_arguments(listing)
    listing.set_defaults(func=list_command)
    show = commands.add_parser(
        "show", help="print one resolved feedback, or a request with its inference and feedback, as JSON"
    )
    show.add_argument("feedback_id", nargs="?", help="the feedback to show")
    QUERY_FLAGS.add_arguments(show, only=("request_id",))
    show.set_defaults(func=show_command)


def parse_time(text: str) -> int:
    """An ISO 8601 time (UTC when no zone is given) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _print(row: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    """``prefpair feedback list``: one JSON object per line; the next cursor goes to stderr."""
    query = QUERY_FLAGS.load(args)
    reader = LogReader(settings.log_dir)
    where = FeedbackFilter(
        request_id=query.request_id,
        key=query.key,
        source_type=query.source_type.value if query.source_type else None,
        has_score=query.has_score,
        has_comment=query.has_comment,
        since_ms=query.since_ms,
        until_ms=query.until_ms,
    )
    cursor = query.cursor
    while True:
        try:
            rows, cursor = reader.list_feedback(where, query.limit, cursor)
        except BadCursorError as exc:
            raise ConfigError("cursor", exc.reason) from None
        for row in rows:
            _print(row)
        if cursor is None:
            return 0
        if not query.all:
            print(f"next cursor: {cursor}", file=sys.stderr)
            return 0


def show_command(args: argparse.Namespace, settings: Settings) -> int:
    """``prefpair feedback show ID`` or ``--request-id R``: exit 1 when absent (or deleted)."""
    request_id = QUERY_FLAGS.load(args).request_id
    if (args.feedback_id is None) == (request_id is None):
        raise ConfigError("feedback show", "give either a FEEDBACK_ID or --request-id, not both")
    reader = LogReader(settings.log_dir)
    if request_id is not None:
        found = reader.get_request(request_id)
        missing = f"request {request_id!r} is not in the log"
    else:
        found = reader.get_feedback(args.feedback_id)
        missing = f"feedback {args.feedback_id!r} is not in the log (or was deleted)"
    if found is None:
        print(f"prefpair feedback show: {missing}", file=sys.stderr)
        return 1
    _print(found)
    return 0


def service_config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """Flags > environment > defaults; without any token secret, an ephemeral one (with a warning)."""
    config = ServiceConfig.load(args)
    if not config.api_keys:
        raise ConfigError("api_keys", "none configured: set PREFPAIR_API_KEYS or --api-keys-file")
    if not config.token_secrets:
        log.warning(
            "no token secret configured (PREFPAIR_TOKEN_SECRETS): presigned URLs stop working on restart"
        )
        ephemeral = TokenSecret.model_validate({"kid": "ephemeral", "secret": secrets.token_urlsafe(32)})
        config = config.model_copy(update={"token_secrets": (ephemeral,)})
    return config


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run the API until SIGINT/SIGTERM; shutdown flushes the producer."""
    try:
        import uvicorn

        from prefpair.service.app import create_app
        from prefpair.service.server import RedactAccessLog, uvicorn_options
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "serve", f"needs the service extra ({exc.name} is missing): pip install 'prefpair[service]'"
        ) from None

    config = service_config_from_args(args)
    app = create_app(settings, config)
    logging.getLogger("uvicorn.access").addFilter(RedactAccessLog())
    log.info(
        "listening on http://%s:%d (%d API keys, token key id %s, reuse %s)",
        config.host,
        config.port,
        len(config.api_keys),
        config.token_secrets[0].kid,
        config.token_reuse.value,
    )
    # uvicorn shuts down gracefully on SIGTERM (lifespan: flush the producer), then re-raises the
    # signal; with this no-op handler underneath, a graceful stop exits 0 instead of -15.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(app, log_config=None, **uvicorn_options(config))
    log.info("stopped")
    return 0
