"""Writing a format's splits: every split's file from one read of the rows.

A split's rows are the rows of one query with ``split = ...``; a COPY per split reads the rows
(and, for a single format, joins them to their texts) once per split. Instead, one query reads
all of them, ordered by split and then by the format's order, and its lines are streamed into
each split's file in turn.

Each line is made by ``to_json`` *before* the rows are sorted, and written as it is, a newline
after each. ``COPY ... (FORMAT JSON)`` writes the same bytes (DuckDB makes each row's line with
``to_json`` too), but it makes them after the sort, where the order-keeping scan feeds the writer
on one thread, and its writer then scans each line again: on the bench's 800k pairs (~3 KB each),
19 s against about 12 s here. The lines reach Python as Arrow batches, and only their buffers
are written: no Python object per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefpair.compile.exceptions import SplitWriteError
from prefpair.compile.sql import sql_in, sql_string

_BATCH_ROWS = 20_000
"""Lines fetched from DuckDB at a time (about 60 MB of the bench's pairs)."""


@dataclass(frozen=True)
class SplitFile:
    """One split's file and the number of rows it gets (more than 0)."""

    split: str
    path: Path
    rows: int


def json_object(columns: Sequence[tuple[str, str]]) -> str:
    """The SQL of one JSON line: ``to_json`` of a struct of ``(key, expression)`` in this order, the
    object ``COPY ... (FORMAT JSON)`` writes for a row of these columns."""
    return "to_json({" + ", ".join(f"{sql_string(key)}: {expr}" for key, expr in columns) + "})"


def write_splits(
    con: duckdb.DuckDBPyConnection, line: str, source: str, where: str, order: str, files: Sequence[SplitFile]
) -> None:
    """The rows of ``source`` (with a ``split`` column) where ``where`` holds, each as the JSON text
    ``line`` (:func:`json_object`), into one file per split, ordered by ``order`` within each.

    An empty ``order`` says the source is a table already in that order (per split), read in
    insertion order: one query per split then (a sort is not stable), as reading it again costs little.
    """
    if not order:
        for file in files:
            this_split = f"{where} AND split = {sql_string(file.split)}"
            _stream(con, f"SELECT 0 AS __rank, {line} AS __line FROM {source} WHERE {this_split}", [file])
        return
    rank = "CASE split " + " ".join(f"WHEN {sql_string(f.split)} THEN {i}" for i, f in enumerate(files)) + " END"
    splits = sql_in([file.split for file in files])
    rows = f"SELECT {line} AS __line, {rank} AS __rank, {order} FROM {source} WHERE {where} AND split IN ({splits})"
    _stream(con, f"SELECT __rank, __line FROM ({rows}) ORDER BY __rank, {order}", files)


def _stream(con: duckdb.DuckDBPyConnection, query: str, files: Sequence[SplitFile]) -> None:
    """Write the lines of ``query`` (``__rank``: the index in ``files`` of each line's file, in
    ascending order; ``__line``: its text) into those files, a newline after each."""
    written = [0] * len(files)
    handles = [open(file.path, "wb") for file in files]  # noqa: SIM115 (closed below, all of them)
    try:
        for batch in con.sql(query).to_arrow_reader(_BATCH_ROWS):
            ranks = batch.column(0).to_numpy()
            bounds = np.searchsorted(ranks, np.arange(len(files) + 1), side="left")
            for index, handle in enumerate(handles):
                start, end = int(bounds[index]), int(bounds[index + 1])
                if end > start:
                    _write_lines(handle, batch.column(1).slice(start, end - start))
                    written[index] += end - start
    finally:
        for handle in handles:
            handle.close()
    for file, rows in zip(files, written, strict=True):
        if rows != file.rows:
            raise SplitWriteError(file.path, file.rows, rows)


def _write_lines(handle: BinaryIO, lines: pa.Array) -> None:
    """The texts of ``lines``, each followed by a newline, straight from Arrow's buffers."""
    if lines.type != pa.string():  # DuckDB hands VARCHAR over as string; another layout is made one
        lines = lines.cast(pa.large_string())
    joined = pc.binary_join_element_wise(lines, pa.scalar("", lines.type), pa.scalar("\n", lines.type))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32 if joined.type == pa.string() else np.int64)
    first, last = int(offsets[joined.offset]), int(offsets[joined.offset + len(joined)])
    handle.write(memoryview(joined.buffers()[2])[first:last])
