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

from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.schemas import SourceType
from prefpair.service.config import ServiceConfig, TokenReuse, TokenSecret
from prefpair.service.exceptions import BadCursorError
from prefpair.service.reads import MAX_LIMIT, FeedbackFilter, LogReader

log = logging.getLogger("prefpair.service")


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``feedback`` (with ``list`` and ``show``) to the ``prefpair`` command."""
    serve = subparsers.add_parser(
        "serve",
        help="serve the feedback HTTP API (OpenAPI at /openapi.json)",
        description="Serve the feedback API: writes go to Kafka (2xx once acknowledged), reads come from the "
        "Parquet log. API keys and token secrets come from the environment or files, never from flags.",
    )
    serve.add_argument("--host", help="address to listen on [PREFPAIR_SERVICE_HOST, 127.0.0.1]")
    serve.add_argument("--port", type=int, help="port [PREFPAIR_SERVICE_PORT, 8080]")
    serve.add_argument(
        "--api-keys-file", help="file with one API key a line [PREFPAIR_API_KEYS_FILE; or PREFPAIR_API_KEYS]"
    )
    serve.add_argument(
        "--token-secrets-file",
        help="file with KID:SECRET lines, current first [PREFPAIR_TOKEN_SECRETS_FILE; or "
        "PREFPAIR_TOKEN_SECRETS]",
    )
    serve.add_argument(
        "--public-url",
        dest="public_base_url",
        help="base URL of presigned links [PREFPAIR_PUBLIC_URL, http://HOST:PORT]",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, help="larger bodies get 413 [PREFPAIR_MAX_BODY_BYTES, 262144]"
    )
    serve.add_argument("--key-rate", type=float, help="requests/s per API key [PREFPAIR_KEY_RATE, 50]")
    serve.add_argument("--key-burst", type=int, help="burst per API key [PREFPAIR_KEY_BURST, 200]")
    serve.add_argument(
        "--token-rate", type=float, help="requests/s per presigned token [PREFPAIR_TOKEN_RATE, 0.5]"
    )
    serve.add_argument("--token-burst", type=int, help="burst per presigned token [PREFPAIR_TOKEN_BURST, 5]")
    serve.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        help="allowed browser origin, repeatable [PREFPAIR_CORS_ORIGINS]",
    )
    serve.add_argument(
        "--token-reuse",
        choices=[r.value for r in TokenReuse],
        help="single: one submission per token; expiry: any until it expires [PREFPAIR_TOKEN_REUSE]",
    )
    serve.add_argument(
        "--token-ttl", type=int, help="default token lifetime, seconds [PREFPAIR_TOKEN_TTL, 86400]"
    )
    serve.set_defaults(func=serve_command)

    feedback = subparsers.add_parser("feedback", help="read resolved feedback from the Parquet log")
    commands = feedback.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND", required=True)
    listing = commands.add_parser("list", help="print resolved feedback as JSON lines, oldest first")
    listing.add_argument("--request-id")
    listing.add_argument("--key")
    listing.add_argument("--source-type", choices=[s.value for s in SourceType])
    listing.add_argument("--has-score", action=argparse.BooleanOptionalAction, default=None)
    listing.add_argument("--has-comment", action=argparse.BooleanOptionalAction, default=None)
    listing.add_argument("--since", type=parse_time, help="created at or after (ISO 8601)")
    listing.add_argument("--until", type=parse_time, help="created before (ISO 8601)")
    listing.add_argument("--limit", type=int, default=100, help=f"rows per page (max {MAX_LIMIT}) [100]")
    listing.add_argument("--cursor", help="continue after a previous page (printed on stderr)")
    listing.add_argument("--all", action="store_true", help="follow cursors to the end")
    listing.set_defaults(func=list_command)
    show = commands.add_parser(
        "show", help="print one resolved feedback, or a request with its inference and feedback, as JSON"
    )
    show.add_argument("feedback_id", nargs="?", help="the feedback to show")
    show.add_argument("--request-id", help="show this request: its inference event and all its feedback")
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
    if not 1 <= args.limit <= MAX_LIMIT:
        raise ConfigError("limit", f"must be between 1 and {MAX_LIMIT}")
    reader = LogReader(settings.log_dir)
    where = FeedbackFilter(
        request_id=args.request_id,
        key=args.key,
        source_type=args.source_type,
        has_score=args.has_score,
        has_comment=args.has_comment,
        since_ms=args.since,
        until_ms=args.until,
    )
    cursor = args.cursor
    while True:
        try:
            rows, cursor = reader.list_feedback(where, args.limit, cursor)
        except BadCursorError as exc:
            raise ConfigError("cursor", exc.reason) from None
        for row in rows:
            _print(row)
        if cursor is None:
            return 0
        if not args.all:
            print(f"next cursor: {cursor}", file=sys.stderr)
            return 0


def show_command(args: argparse.Namespace, settings: Settings) -> int:
    """``prefpair feedback show ID`` or ``--request-id R``: exit 1 when absent (or deleted)."""
    if (args.feedback_id is None) == (args.request_id is None):
        raise ConfigError("feedback show", "give either a FEEDBACK_ID or --request-id, not both")
    reader = LogReader(settings.log_dir)
    if args.request_id is not None:
        found = reader.get_request(args.request_id)
        missing = f"request {args.request_id!r} is not in the log"
    else:
        found = reader.get_feedback(args.feedback_id)
        missing = f"feedback {args.feedback_id!r} is not in the log (or was deleted)"
    if found is None:
        print(f"prefpair feedback show: {missing}", file=sys.stderr)
        return 1
    _print(found)
    return 0


SERVE_FLAGS = (
    "host",
    "port",
    "api_keys_file",
    "token_secrets_file",
    "public_base_url",
    "max_body_bytes",
    "key_rate",
    "key_burst",
    "token_rate",
    "token_burst",
    "cors_origins",
    "token_reuse",
    "token_ttl",
)


def service_config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """Flags > environment > defaults; without any token secret, an ephemeral one (with a warning)."""
    config = ServiceConfig.load({name: getattr(args, name, None) for name in SERVE_FLAGS})
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
