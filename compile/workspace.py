"""What the compile stages work in: one DuckDB connection, the log tables' committed files, and the
counts the stages add to.

Each stage (:mod:`~prefpair.compile.resolution`, :mod:`~prefpair.compile.filters`,
:mod:`~prefpair.compile.derivation`, :mod:`~prefpair.compile.sampling`,
:mod:`~prefpair.compile.unpaired`) is a function of a :class:`Workspace`: it reads the temp
tables earlier stages left, creates its own, and counts its rows and drops here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from prefpair.compile.config import CompileConfig
from prefpair.compile.sql import MACROS, sql_list, sql_string
from prefpair.schemas.log import SCHEMAS

log = logging.getLogger(__name__)


class Workspace:
    """The connection and inputs of one compile; counts land in ``stage_counts`` / ``drops``.

    ``use_inference``: whether some request's inference is read from the inference table (set by
    the context stage). ``outputs``: per output table, the FROM clause and ORDER BY its COPYs use.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: CompileConfig,
        files: Mapping[str, Sequence[Path | str]],
        emitted_files: Sequence[Path] = (),
    ) -> None:
        self.con = con
        self.config = config
        self.files = files
        self.emitted_files = list(emitted_files)
        self.stage_counts: dict[str, int] = {}
        self.drops: dict[str, int] = {}
        self.use_inference = False
        self.outputs: dict[str, tuple[str, str]] = {}
        self.sections: dict[str, Any] = {}
        """Manifest sections stages add beside the counts (``implicit``: pairs per rule)."""
        for macro in MACROS:
            self.con.execute(macro)

    def execute(self, sql: str) -> None:
        """Run one statement, logging its time (debug)."""
        started = time.monotonic()
        self.con.execute(sql)
        log.debug("compile: %.2f s  %s", time.monotonic() - started, " ".join(sql.split())[:100])

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a query (small results: counts per reason, per derivation...)."""
        return self.con.execute(sql).fetchall()

    def scalar(self, sql: str) -> int:
        """The first value of a query as an int (0 for no row or NULL)."""
        rows = self.rows(sql)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def count_reasons(self, table: str) -> None:
        """Add ``table``'s rows with a ``reason`` to the drops, per reason."""
        for reason, n in self.rows(f"SELECT reason, count(*) FROM {table} WHERE reason IS NOT NULL GROUP BY reason"):
            self.drops[reason] = self.drops.get(reason, 0) + int(n)

    def log_table(self, table: str) -> str:
        """A FROM clause reading one log table's committed files (or an empty table of its schema)."""
        paths = self.files.get(table, [])
        if paths:
            return f"read_parquet({sql_list([str(p) for p in paths])}, hive_partitioning=false, union_by_name=true)"
        schema = SCHEMAS[table]
        name = f"empty_{table}"
        self.con.register(name, schema.empty_table())
        return name

    def wide_source(self) -> str:
        """Every log row that carries an inference, as (src, part, off, request_id, inference columns)."""
        columns = (
            "request_id, system_prompt, prompt, messages, candidates, presentation_order, user_id, environment, tags"
        )
        parts = [
            f"SELECT 'f' AS src, feedback_partition AS part, feedback_offset AS off, {columns} "
            f"FROM {self.log_table('feedback')}"
        ]
        if self.use_inference:
            parts.append(
                f"SELECT 'i', inference_partition, inference_offset, {columns} FROM {self.log_table('inference')}"
            )
        return "(" + " UNION ALL ".join(parts) + ")"

    def output(self, name: str, query: str, order: str) -> None:
        """Make the rows of one output table available as ``self.outputs[name] = (from, order by)``.

        Several formats read the pairs: they are joined to their texts and sorted once, into a
        table whose insertion order the COPYs keep. One format: its COPY runs the query itself.
        """
        readers = sum(1 for f in self.config.formats if (f == "trl_unpaired") == (name == "final_unpaired"))
        if readers > 1:
            self.execute(f"CREATE TEMP TABLE {name} AS {query} ORDER BY split, {order}")
            self.outputs[name] = (name, "")
        else:
            self.outputs[name] = (f"({query})", f"ORDER BY {order}")

    def emitted(self, kind: str) -> str | None:
        """A table of the ids of ``kind`` (``pair``, ``unpaired``) that earlier runs emitted; None on a first run."""
        if not self.emitted_files:
            return None
        name = f"emitted_{kind}"
        self.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {name} AS
            SELECT id FROM read_parquet({sql_list([str(p) for p in self.emitted_files])})
            WHERE kind = {sql_string(kind)}
            """
        )
        return name
