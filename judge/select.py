"""Which logged inferences a judge run asks about: committed inference rows of the Parquet log,
filtered like compile filters (time, model, model version, environment, user, tag) and sampled by seed.

The log is read with DuckDB over the committed segments only (:func:`prefpair.schemas.log.committed_files`),
one row per request (the first inference event logged for it). The sample orders requests by a hash
of the seed and the request id, so the same seed picks the same requests however the log is split
into segments, and a larger sample contains a smaller one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from prefpair.judge.config import JudgeSelection
from prefpair.judge.exceptions import NoInferencesError
from prefpair.schemas.log import committed_files
from prefpair.storage import Storage


@dataclass(frozen=True)
class Response:
    """One candidate output as a judge sees it: its id, its text, and the model that wrote it."""

    candidate_id: str
    text: str
    model_name: str
    model_version: str | None


@dataclass(frozen=True)
class LoggedInference:
    """One logged request: what the user asked, and the candidates the selection keeps (in logged order)."""

    request_id: str
    timestamp_ms: int
    system_prompt: str | None
    prompt: str
    responses: tuple[Response, ...]


def render_messages(messages: Sequence[dict[str, Any]] | None) -> str:
    """Chat messages as a transcript a judge can read: ``role: content`` blocks, a blank line apart."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages or ())


def select_inferences(log: Storage, selection: JudgeSelection) -> list[LoggedInference]:
    """The logged inferences ``selection`` keeps, in request id order (or in sample order)."""
    files = committed_files(log)[1]["inference"]
    if not files:
        raise NoInferencesError(log.url, "no committed inference rows (is this the log folder of `prefpair consume`?)")
    con = duckdb.connect()
    try:
        log.attach(con)
        where, params = _where(selection)
        order = "md5($seed || ':' || request_id)" if selection.sample is not None else "request_id"
        params["files"] = list(files)
        if selection.sample is not None:
            params["seed"] = str(selection.seed)
        limit = f"LIMIT {int(selection.sample)}" if selection.sample is not None else ""
        rows = con.execute(
            f"""
            SELECT request_id, inference_timestamp_ms, system_prompt, prompt, messages, candidates
            FROM read_parquet($files, union_by_name = true)
            WHERE {where}
            QUALIFY row_number() OVER (PARTITION BY request_id
                                       ORDER BY inference_timestamp_ms, inference_partition, inference_offset) = 1
            ORDER BY {order} {limit}
            """,
            params,
        ).fetchall()
    finally:
        con.close()
    return [_inference(row, selection) for row in rows]


def _where(selection: JudgeSelection) -> tuple[str, dict[str, Any]]:
    checks = ["TRUE"]
    params: dict[str, Any] = {}
    if selection.since_ms is not None:
        checks.append("inference_timestamp_ms >= $since")
        params["since"] = selection.since_ms
    if selection.until_ms is not None:
        checks.append("inference_timestamp_ms < $until")
        params["until"] = selection.until_ms
    if selection.environments:
        checks.append("list_contains($environments, environment)")
        params["environments"] = list(selection.environments)
    if selection.users:
        checks.append("list_contains($users, user_id)")
        params["users"] = list(selection.users)
    if selection.tags:
        checks.append("list_has_any(tags, $tags)")
        params["tags"] = list(selection.tags)
    return " AND ".join(checks), params


def _inference(row: tuple[Any, ...], selection: JudgeSelection) -> LoggedInference:
    request_id, timestamp_ms, system_prompt, prompt, messages, candidates = row
    responses = tuple(
        Response(c["candidate_id"], c["text"] if c["text"] is not None else render_messages(c["messages"]),
                 c["model_name"], c["model_version"])
        for c in candidates
        if (not selection.models or c["model_name"] in selection.models)
        and (not selection.model_versions or c["model_version"] in selection.model_versions)
    )  # fmt: skip
    text = prompt if prompt is not None else render_messages(messages)
    return LoggedInference(request_id, int(timestamp_ms), system_prompt, text, responses)
