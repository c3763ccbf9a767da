"""Reads of the Parquet log with DuckDB: one resolved feedback, filtered pages, a request's story.

Only committed segments are read (:func:`prefpair.schemas.log.table_files`); files are listed
per query, so a segment the consumer commits is visible to the next request.

Feedback events come from ``feedback.parquet`` (joined to their inference) and
``orphans.parquet`` (their inference never arrived within the grace; shown with
``joined: false`` and the reason). An event seen twice (same event id) counts once.

Resolution, per feedback id, is the log's one rule (:mod:`prefpair.schemas.resolution`, shared
with compile and the report): its life starts at its latest CREATE; later UPDATEs replace the
fields they set (a null field, an empty metadata map, keeps the earlier value, so an update
cannot clear a field); a DELETE after it removes the feedback (later UPDATEs do not revive it, a
new CREATE does); UPDATEs or DELETEs without a CREATE before them are not feedback. A repeated
identical CREATE (a client retry that missed the service's idempotency cache) therefore resolves
to the same feedback, not a second one.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from prefpair.schemas import resolution
from prefpair.schemas.log import FEEDBACK_LOG, ORPHAN_LOG, table_files, with_added_columns
from prefpair.service.exceptions import BadCursorError
from prefpair.unicode_text import is_unicode

# Fields of a feedback the API returns as they are (metadata is returned as ``metadata``).
FIELDS = tuple(name for name in resolution.PATCHABLE if name != "feedback_metadata")

# The feedback event and where it was read from: the columns both tables carry.
EVENT_COLUMNS = tuple(name for name in ORPHAN_LOG.names if name in FEEDBACK_LOG.names)
ORDER = ", ".join(resolution.LOG_ORDER)

MAX_LIMIT = 1000


@dataclass(frozen=True)
class FeedbackFilter:
    """Filters of ``GET /v1/feedback`` and ``prefpair feedback list``; None means any."""

    request_id: str | None = None
    key: str | None = None
    source_type: str | None = None
    has_score: bool | None = None
    has_comment: bool | None = None
    since_ms: int | None = None
    until_ms: int | None = None


def encode_cursor(created_ms: int, feedback_id: str) -> str:
    """Opaque cursor: base64url of the last row's (created timestamp, feedback id)."""
    raw = json.dumps([created_ms, feedback_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor points after; BadCursorError when it is not one of ours.

    Only a position the log can hold passes: a timestamp the log's BIGINT holds (0 to 2**63 - 1)
    and a feedback id that is Unicode text.
    """
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...
        raise BadCursorError(cursor) from None
    if not isinstance(value, list) or len(value) != 2:
        raise BadCursorError(cursor)
    created_ms, feedback_id = value
    if not isinstance(created_ms, int) or isinstance(created_ms, bool) or not 0 <= created_ms < 2**63:
        raise BadCursorError(cursor, "its timestamp is not a log timestamp (an integer from 0 to 2**63 - 1)")
    if not isinstance(feedback_id, str) or not is_unicode(feedback_id):
        raise BadCursorError(cursor, "its feedback id is not Unicode text")
    return created_ms, feedback_id


def _events_sql(joined: bool, orphans: bool, prefilter: str) -> str:
    """Every feedback event once, from the tables that have files, with ``joined``/``orphan_reason``."""
    columns = ", ".join(EVENT_COLUMNS)
    parts = []
    if joined:
        parts.append(
            f"SELECT {columns}, true AS joined, NULL::VARCHAR AS orphan_reason "
            f"FROM {with_added_columns('read_parquet($feedback_files, union_by_name = true)', 'feedback')}"
        )
    if orphans:
        parts.append(
            f"SELECT {columns}, false AS joined, reason AS orphan_reason "
            f"FROM {with_added_columns('read_parquet($orphan_files, union_by_name = true)', 'orphans')}"
        )
    union = "\n    UNION ALL BY NAME\n    ".join(parts)
    return f"""
    SELECT * FROM ({union}) AS raw
    {prefilter}
    QUALIFY row_number() OVER (PARTITION BY feedback_event_id ORDER BY joined DESC, {ORDER}) = 1
"""


def _resolved_sql(events: str) -> str:
    """The live feedback of ``events`` (:mod:`prefpair.schemas.resolution`), with whether any of
    its events joined its inference and why the others did not."""
    return resolution.resolved_feedback_sql(
        f"({events}) AS deduped",
        aggregates=(
            "bool_or(o.joined) AS joined",
            "arg_max(o.orphan_reason, o.seq) FILTER (WHERE NOT o.joined) AS orphan_reason",
        ),
    )


class LogReader:
    """Queries over the committed segments of one log directory (files listed per query)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def _files(self, table: str) -> list[str]:
        return [str(path) for path in table_files(self.log_dir, table)]

    @staticmethod
    def _query(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with duckdb.connect() as con:
            result = con.execute(sql, params)
            columns = [d[0] for d in result.description or []]
            return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]

    def _resolved(self, prefilter: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The resolution query over both event tables, or None when the log has no feedback yet."""
        feedback, orphans = self._files("feedback"), self._files("orphans")
        if not feedback and not orphans:
            return None
        params = dict(params)
        if feedback:
            params["feedback_files"] = feedback
        if orphans:
            params["orphan_files"] = orphans
        return _resolved_sql(_events_sql(bool(feedback), bool(orphans), prefilter)), params

    def get_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """The resolved feedback, or None when it never reached the log or was deleted."""
        query = self._resolved("WHERE feedback_id = $feedback_id", {"feedback_id": feedback_id})
        if query is None:
            return None
        rows = self._query(*query)
        return feedback_json(rows[0]) if rows else None

    def list_feedback(
        self, where: FeedbackFilter, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of resolved feedback in (created, id) order and the cursor of the next page."""
        after = decode_cursor(cursor) if cursor else None
        limit = max(1, min(limit, MAX_LIMIT))
        params: dict[str, Any] = {"limit": limit + 1}
        prefilter = ""
        if where.request_id is not None:  # all events of a feedback id share its request id
            prefilter = "WHERE request_id = $request_id"
            params["request_id"] = where.request_id
        query = self._resolved(prefilter, params)
        if query is None:
            return [], None
        resolved, params = query
        conditions: list[str] = []
        if where.key is not None:
            conditions.append("key = $key")
            params["key"] = where.key
        if where.source_type is not None:
            conditions.append("source.type = $source_type")
            params["source_type"] = where.source_type
        if where.has_score is not None:
            conditions.append("score IS NOT NULL" if where.has_score else "score IS NULL")
        if where.has_comment is not None:
            has = "(comment IS NOT NULL AND comment <> '')"
            conditions.append(has if where.has_comment else f"NOT {has}")
        if where.since_ms is not None:
            conditions.append("created_ms >= $since")
            params["since"] = where.since_ms
        if where.until_ms is not None:
            conditions.append("created_ms < $until")
            params["until"] = where.until_ms
        if after is not None:
            conditions.append("(created_ms, feedback_id) > ($after_ms, $after_id)")
            params["after_ms"], params["after_id"] = after
        where_sql = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        rows = self._query(
            f"SELECT * FROM ({resolved}) AS resolved {where_sql} "
            "ORDER BY created_ms, feedback_id LIMIT $limit",
            params,
        )
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(int(last["created_ms"]), str(last["feedback_id"]))
        return [feedback_json(row) for row in page], next_cursor

    def get_inference(self, request_id: str) -> dict[str, Any] | None:
        """The first landed inference event of ``request_id``, in contract field names."""
        files = self._files("inference")
        if not files:
            return None
        rows = self._query(
            "SELECT * FROM read_parquet($files, union_by_name = true) WHERE request_id = $request_id "
            "ORDER BY inference_partition, inference_offset LIMIT 1",
            {"files": files, "request_id": request_id},
        )
        return inference_json(rows[0]) if rows else None

    def get_request(self, request_id: str) -> dict[str, Any] | None:
        """A request's inference event and all its resolved feedback; None when neither is in the log."""
        inference = self.get_inference(request_id)
        feedback: list[dict[str, Any]] = []
        cursor = None
        while True:
            page, cursor = self.list_feedback(FeedbackFilter(request_id=request_id), MAX_LIMIT, cursor)
            feedback.extend(page)
            if cursor is None:
                break
        if inference is None and not feedback:
            return None
        return {"request_id": request_id, "inference": inference, "feedback": feedback}


def iso_ms(ms: int | None) -> str | None:
    """Milliseconds since the epoch as an ISO 8601 UTC timestamp."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """DuckDB values as JSON-ready Python (maps may come back as key/value lists)."""
    if isinstance(value, dict):
        if set(value) == {"key", "value"} and isinstance(value["key"], list):
            return {str(k): _plain(v) for k, v in zip(value["key"], value["value"], strict=True)}
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def feedback_json(row: dict[str, Any]) -> dict[str, Any]:
    """A resolved feedback row in the shape the API returns."""
    created = row.get("created_ms")
    modified = row.get("modified_ms")
    out: dict[str, Any] = {"id": row["feedback_id"], "request_id": row["request_id"]}
    for name in FIELDS:
        out[name] = _plain(row.get(name))
    out["metadata"] = _plain(row.get("feedback_metadata")) or {}
    out["created_at"] = iso_ms(created)
    out["modified_at"] = iso_ms(modified)
    out["created_at_ms"] = created
    out["modified_at_ms"] = modified
    out["joined"] = bool(row.get("joined"))
    out["orphan_reason"] = row.get("orphan_reason")
    out["events"] = row.get("events")
    return out


_INFERENCE_RENAMES = {
    "inference_event_id": "event_id",
    "inference_timestamp_ms": "timestamp_ms",
    "inference_metadata": "metadata",
}


def inference_json(row: dict[str, Any]) -> dict[str, Any]:
    """A landed inference row with the contract's field names (log position fields kept)."""
    return {_INFERENCE_RENAMES.get(name, name): _plain(value) for name, value in row.items()}
