"""Read the committed log with DuckDB: resolve feedback, then derive the judged pairs.

Resolution (per ``feedback_id``) is the log's one rule, shared with compile and the service
(:mod:`prefpair.schemas.resolution`), over joined and orphaned feedback events: the feedback's
life starts at its latest CREATE, later UPDATEs replace the fields they set, a DELETE after that
CREATE removes it, and UPDATEs or DELETEs without a CREATE before them are not feedback.
Orphaned feedback whose inference landed later takes it from the inference table.

A *comparison* is one judged pair of candidates of one request: a PAIRWISE judgment
(PREFERRED or TIE), every pair of a RANKING (tied groups count as ties), and, for agreement
(and ratings when asked), two SCOREs of one source on one key of one request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from prefpair.errors import StorageError
from prefpair.report.exceptions import EmptyLogError, ReportInputError
from prefpair.schemas import resolution
from prefpair.schemas.log import (
    FEEDBACK_LOG,
    ORPHAN_LOG,
    SCHEMAS,
    committed_files,
    table_files,
    with_added_columns,
)
from prefpair.storage import LocalStorage, S3Options, Storage, location

# The judgment fields the report reads, merged by resolution.
_JUDGMENT_COLUMNS = tuple(name for name in resolution.PATCHABLE if name != "feedback_metadata")
_INFERENCE_COLUMNS = ("inference_timestamp_ms", "candidates", "presentation_order")
# The feedback event and where it was read from: the columns joined and orphaned rows share.
_EVENT_COLUMNS = ", ".join(name for name in ORPHAN_LOG.names if name in FEEDBACK_LOG.names)

_STATUS_SQL = resolution.feedback_status_sql(
    "ordered", ["arg_max(source.type, seq) FILTER (WHERE source.type IS NOT NULL) AS any_source_type"]
)
_MERGED_SQL = resolution.merged_feedback_sql(
    "ordered",
    "feedback_status",
    _JUDGMENT_COLUMNS,
    [f"arg_max(o.{c}, o.seq) FILTER (WHERE o.{c} IS NOT NULL) AS {c}" for c in _INFERENCE_COLUMNS],
)

RESOLVE_SQL = f"""
CREATE TEMP TABLE feedback_events AS
SELECT {_EVENT_COLUMNS}, {", ".join(_INFERENCE_COLUMNS)} FROM feedback_raw
UNION ALL BY NAME
SELECT {_EVENT_COLUMNS} FROM orphans_raw;

CREATE TEMP TABLE ordered AS {resolution.ordered_events_sql("feedback_events")};

CREATE TEMP TABLE feedback_status AS {_STATUS_SQL};

-- orphaned feedback whose inference landed after the grace takes it from the inference table
CREATE TEMP TABLE first_inference AS
SELECT request_id, {", ".join(_INFERENCE_COLUMNS)} FROM inference_raw
QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY inference_partition, inference_offset) = 1;

CREATE TEMP TABLE resolved AS
SELECT r.* REPLACE ({", ".join(f"coalesce(r.{c}, i.{c}) AS {c}" for c in _INFERENCE_COLUMNS)})
FROM ({_MERGED_SQL}) AS r LEFT JOIN first_inference i USING (request_id);

DROP TABLE ordered;

CREATE TEMP TABLE live AS
SELECT *, source.type AS source_type,
       source.type || '/' || coalesce(source.source_id, source.model || coalesce(':' || source.model_version, ''),
                                      source.run_id, '?') AS source_key
FROM resolved WHERE kind IS NOT NULL AND source IS NOT NULL;

CREATE TEMP TABLE candidate AS
SELECT request_id, c.candidate_id AS candidate_id,
       c.model_name || coalesce(':' || c.model_version, '') AS model,
       CAST(coalesce(length(c.text),
                     list_sum(list_transform(c.messages, lambda m: length(m.content)))) AS BIGINT) AS length,
       list_position(presentation_order, c.candidate_id) - 1 AS place
FROM (SELECT request_id, unnest(candidates) AS c, presentation_order
      FROM (SELECT request_id, any_value(candidates) AS candidates,
                   any_value(presentation_order) AS presentation_order
            FROM live GROUP BY request_id));
"""

PAIRS_SQL = """
CREATE TEMP TABLE judged AS
SELECT feedback_id AS cluster, feedback_id, request_id, source_type, source_key, key, 'pairwise' AS origin,
       chosen_id AS a_id, rejected_id AS b_id,
       CASE WHEN outcome = 'TIE' THEN 0.5 ELSE 1.0 END AS score_a, created_ms, inference_timestamp_ms,
       experiment_id
FROM live
WHERE kind = 'PAIRWISE' AND outcome IN ('PREFERRED', 'TIE') AND chosen_id IS NOT NULL
      AND rejected_id IS NOT NULL AND chosen_id <> rejected_id;

INSERT INTO judged
WITH groups AS (
    SELECT feedback_id, unnest(ranking) AS grp, generate_subscripts(ranking, 1) AS gi
    FROM live WHERE kind = 'RANKING' AND ranking IS NOT NULL),
members AS (SELECT feedback_id, gi, unnest(grp) AS cid FROM groups)
SELECT l.feedback_id, l.feedback_id, l.request_id, l.source_type, l.source_key, l.key, 'ranking',
       x.cid, y.cid, CASE WHEN x.gi < y.gi THEN 1.0 ELSE 0.5 END, l.created_ms, l.inference_timestamp_ms,
       l.experiment_id
FROM members x
JOIN members y ON x.feedback_id = y.feedback_id AND (x.gi < y.gi OR (x.gi = y.gi AND x.cid < y.cid))
JOIN live l ON l.feedback_id = x.feedback_id;

INSERT INTO judged
WITH scores AS (
    SELECT request_id, key, source_type, source_key, candidate_id,
           arg_max(score, created_ms) AS score, arg_max(feedback_id, created_ms) AS feedback_id,
           max(created_ms) AS created_ms, any_value(inference_timestamp_ms) AS inference_timestamp_ms,
           arg_max(experiment_id, created_ms) AS experiment_id
    FROM live WHERE kind = 'SCORE' AND score IS NOT NULL AND candidate_id IS NOT NULL
    GROUP BY ALL)
SELECT x.request_id || '|' || coalesce(x.key, '') || '|' || x.source_key, x.feedback_id || '+' || y.feedback_id,
       x.request_id, x.source_type, x.source_key, x.key, 'score',
       x.candidate_id, y.candidate_id,
       CASE WHEN x.score > y.score THEN 1.0 WHEN x.score = y.score THEN 0.5 ELSE 0.0 END,
       greatest(x.created_ms, y.created_ms), x.inference_timestamp_ms,
       CASE WHEN x.experiment_id = y.experiment_id THEN x.experiment_id END
FROM scores x JOIN scores y
  ON x.request_id = y.request_id AND x.key IS NOT DISTINCT FROM y.key AND x.source_key = y.source_key
     AND x.candidate_id < y.candidate_id;

CREATE TEMP TABLE comparisons AS
SELECT j.*, ca.model AS a_model, cb.model AS b_model, ca.length AS a_length, cb.length AS b_length,
       ca.place AS a_place, cb.place AS b_place
FROM judged j
JOIN candidate ca ON ca.request_id = j.request_id AND ca.candidate_id = j.a_id
JOIN candidate cb ON cb.request_id = j.request_id AND cb.candidate_id = j.b_id
ORDER BY j.created_ms, j.feedback_id, j.a_id, j.b_id;
"""


@dataclass(frozen=True)
class Comparisons:
    """Judged pairs as numpy columns (one entry per pair); ``score_a`` is 1, 0.5 or 0."""

    judgment: np.ndarray  # int codes: pairs of one judgment (a ranking, a source's scores) share a code
    item: np.ndarray  # int codes: pairs of one request share a code; intervals resample these
    request_id: np.ndarray
    source_type: np.ndarray
    source_key: np.ndarray
    origin: np.ndarray
    a_id: np.ndarray
    b_id: np.ndarray
    a_model: np.ndarray
    b_model: np.ndarray
    score_a: np.ndarray
    a_length: np.ndarray  # float, NaN when unknown
    b_length: np.ndarray
    a_place: np.ndarray  # float, NaN when not in the presentation order
    b_place: np.ndarray
    created_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.score_a)

    def select(self, mask: np.ndarray) -> Comparisons:
        return Comparisons(**{name: getattr(self, name)[mask] for name in self.__dataclass_fields__})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Comparisons:
        def strings(name: str) -> np.ndarray:
            return np.array(table.column(name).to_pylist(), dtype=object)

        def floats(name: str) -> np.ndarray:
            return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)

        _, judgment = np.unique(strings("cluster").astype(str), return_inverse=True)
        _, item = np.unique(strings("request_id").astype(str), return_inverse=True)
        return cls(
            judgment=judgment.astype(np.int64),
            item=item.astype(np.int64),
            request_id=strings("request_id"),
            source_type=strings("source_type"),
            source_key=strings("source_key"),
            origin=strings("origin"),
            a_id=strings("a_id"),
            b_id=strings("b_id"),
            a_model=strings("a_model"),
            b_model=strings("b_model"),
            score_a=floats("score_a"),
            a_length=floats("a_length"),
            b_length=floats("b_length"),
            a_place=floats("a_place"),
            b_place=floats("b_place"),
            created_ms=floats("created_ms"),
        )


@dataclass(frozen=True)
class LogData:
    """What the report reads from the log: an open DuckDB connection with the tables
    ``feedback_raw``, ``inference_raw``, ``orphans_raw``, ``feedback_status`` (status per feedback
    id, :mod:`prefpair.schemas.resolution`), ``live`` and ``candidate``, and the comparisons."""

    con: duckdb.DuckDBPyConnection
    comparisons: Comparisons
    files: dict[str, int]
    kind: str = "log"  # or "dataset": a compiled dataset, without the log's health tables

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts."""
        cursor = self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def scalar(self, sql: str) -> Any:
        row = self.con.execute(sql).fetchone()
        return None if row is None else row[0]


def _load_table(con: duckdb.DuckDBPyConnection, name: str, files: list[Path] | list[str], table: str) -> None:
    if files:
        con.execute(
            f"CREATE TEMP TABLE {name} AS SELECT * FROM "
            f"{with_added_columns('read_parquet($files, union_by_name = true)', table)}",
            {"files": [str(f) for f in files]},
        )
    else:  # an empty table of the contract's schema, so every query still runs
        empty = SCHEMAS[table].empty_table()
        con.register(f"{name}_empty", empty)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_empty")
        con.unregister(f"{name}_empty")


def create_empty_log_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The log's tables with no rows, for reports over something else than a log."""
    for name, table in (("feedback_raw", "feedback"), ("inference_raw", "inference"), ("orphans_raw", "orphans"),
                        ("signals_raw", "signals")):  # fmt: skip
        _load_table(con, name, [], table)


def load_log(log_dir: Path | Storage) -> LogData:
    """Read the committed segments of ``log_dir`` (a folder, or a log on object storage); raise
    EmptyLogError when there are none."""
    if isinstance(log_dir, LocalStorage):
        log_dir = log_dir.path
    files: dict[str, list[Path]] | dict[str, list[str]]
    if isinstance(log_dir, Storage):
        files = committed_files(log_dir)[1]
    else:
        files = {table: table_files(log_dir, table) for table in SCHEMAS}
    if not files["inference"] and not files["feedback"]:
        reason = "no committed segments (is this the log folder of `prefpair consume`?)"
        if isinstance(log_dir, Path) and not log_dir.is_dir():
            reason = "the folder does not exist"
        raise EmptyLogError(log_dir if isinstance(log_dir, Path) else log_dir.url, reason)
    con = duckdb.connect()
    if isinstance(log_dir, Storage):
        log_dir.attach(con)
    _load_table(con, "feedback_raw", files["feedback"], "feedback")
    _load_table(con, "inference_raw", files["inference"], "inference")
    _load_table(con, "orphans_raw", files["orphans"], "orphans")
    _load_table(con, "signals_raw", files.get("signals", []), "signals")
    con.execute(RESOLVE_SQL)
    con.execute(PAIRS_SQL)
    comparisons = Comparisons.from_arrow(con.sql("SELECT * FROM comparisons").to_arrow_table())
    return LogData(con=con, comparisons=comparisons, files={t: len(f) for t, f in files.items()})


def read_dead_letters(value: int | str | Path | None, s3: S3Options | None = None) -> int | None:
    """A dead-letter count given as a number, or read from a JSON metrics file (a path or ``s3://``,
    reached with ``s3``): the first ``dead_letters`` / ``dead_letter_count`` number found, at any depth."""
    if value is None or isinstance(value, int):
        return value
    data = _read_json(value, "dead_letters", s3)

    def find(node: Any) -> int | None:
        if isinstance(node, dict):
            for name in ("dead_letters", "dead_letter_count", "dead_lettered"):
                if isinstance(node.get(name), int | float) and not isinstance(node.get(name), bool):
                    return int(node[name])
            for child in node.values():
                found = find(child)
                if found is not None:
                    return found
        return None

    count = find(data)
    if count is None:
        raise ReportInputError("dead_letters", f"{value} holds no dead_letters count")
    return count


def read_drop_counts(manifest: str | Path | None, s3: S3Options | None = None) -> dict[str, int] | None:
    """The drop counts (``counts.drops``) of a compile manifest (a path or ``s3://``), or None when there is none."""
    if manifest is None:
        return None
    data = _read_json(manifest, "manifest", s3)
    counts = data.get("counts") if isinstance(data, dict) else None
    drops = counts.get("drops") if isinstance(counts, dict) else None
    if not isinstance(drops, dict):
        return None
    return {str(k): int(v) for k, v in drops.items() if isinstance(v, int | float)}


def _read_json(path: str | Path, field: str, s3: S3Options | None) -> Any:
    try:
        return json.loads(location(path, s3).read_text())
    except OSError as exc:
        raise ReportInputError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    except StorageError as exc:
        raise ReportInputError(field, f"cannot read {path}: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(field, f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
