"""How ``prefpair serve`` runs the app on uvicorn: its server options and its access-log redaction.

:func:`uvicorn_options` is the one place the service config becomes uvicorn settings, used by
the command and by the tests that serve the app on a real socket.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from prefpair.service.config import ServiceConfig

GRACEFUL_SHUTDOWN_S = 30


def uvicorn_options(config: ServiceConfig) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run``/``uvicorn.Config`` for ``config``.

    ``X-Forwarded-For`` is believed only from ``config.trusted_proxies`` (uvicorn's own default
    trusts 127.0.0.1, which would let any client on the host choose the address its failed
    authentications are counted against).
    """
    trusted = list(config.trusted_proxies)
    return {
        "host": config.host,
        "port": config.port,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": "*" if trusted == ["*"] else trusted,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }


class RedactAccessLog(logging.Filter):
    """Masks credentials in uvicorn's access log lines: presigned tokens in paths, and every query
    value (a misplaced API key, ``?api_key=...``, is refused, but would still be logged; a GET
    link's query also carries the user's comment)."""

    TOKEN = re.compile(r"(/v1/feedback-tokens/)[^/?\s\"]+")
    QUERY = re.compile(r"\?([^\s\"#]*)")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True

    @classmethod
    def redact(cls, text: str) -> str:
        """``text`` with tokens in paths and query values replaced (parameter names are kept)."""
        text = cls.TOKEN.sub(r"\1<token>", text)
        return cls.QUERY.sub(lambda match: "?" + _mask_query(match.group(1)), text)


def _mask_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}=<redacted>" if equals else "<redacted>" if part else part)
    return "&".join(parts)
