"""Writing a format's splits: every split's file from one read of the rows.

A split's rows are the rows of one query with ``split = ...``; a COPY per split reads the rows
(and, for a single format, joins them to their texts) once per split. Instead, one COPY writes
all of them, ordered by split (the largest first) and then by the format's order, into the
largest split's file; the other splits' lines, at its end, are copied into their own files and
the file is truncated to the largest split's. JSON lines end in a newline and hold none, so the
bytes of each file are those a COPY of its split alone would write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb

from prefpair.compile.exceptions import SplitWriteError
from prefpair.compile.sql import sql_in, sql_string

_CHUNK = 8 << 20
"""Bytes read at a time when looking for the splits' boundaries and copying them out."""


@dataclass(frozen=True)
class SplitFile:
    """One split's file and the number of rows it gets (more than 0)."""

    split: str
    path: Path
    rows: int


def write_splits(con: duckdb.DuckDBPyConnection, select: str, order: str, files: Sequence[SplitFile]) -> None:
    """The rows of ``select`` (``SELECT ... FROM ... WHERE ...``, over a source with a ``split``
    column) into one file per split, ordered by ``order`` within each.

    An empty ``order`` says the source is a table already in that order (per split), read in
    insertion order: one COPY per split then, as reading it again costs little.
    """
    if not order:
        for file in files:
            _copy(con, f"{select} AND split = {sql_string(file.split)}", file.path)
        return
    ordered = sorted(files, key=lambda file: -file.rows)  # stable: ties keep the caller's order
    rank = "CASE split " + " ".join(f"WHEN {sql_string(f.split)} THEN {i}" for i, f in enumerate(ordered)) + " END"
    head = ordered[0].path
    splits = sql_in([file.split for file in ordered])
    written = _copy(con, f"{select} AND split IN ({splits}) ORDER BY {rank}, {order}", head)
    expected = sum(file.rows for file in ordered)
    if written != expected:
        raise SplitWriteError(head, expected, written)
    if len(ordered) == 1:
        return
    starts = _tail_starts(head, [sum(file.rows for file in ordered[k:]) for k in range(1, len(ordered))])
    ends = [*starts[1:], head.stat().st_size]
    with open(head, "rb") as source:
        for file, start, end in zip(ordered[1:], starts, ends, strict=True):
            with open(file.path, "wb") as target:
                _copy_range(source, target, start, end - start)
    os.truncate(head, starts[0])


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """COPY the rows of ``query`` to ``path`` as JSON lines; the number of rows written."""
    row = con.execute(f"COPY ({query}) TO {sql_string(str(path))} (FORMAT JSON)").fetchone()
    return int(row[0]) if row else 0


def _tail_starts(path: Path, tails: Sequence[int]) -> list[int]:
    """For each ``n`` of ``tails``, the byte offset where the file's last ``n`` lines begin (read
    from the end; the file ends with a newline and has more than ``n`` lines)."""
    wanted = sorted(set(tails))
    found: dict[int, int] = {}
    with open(path, "rb") as file:
        position = file.seek(0, os.SEEK_END)
        seen = -1  # newlines seen from the end, minus the one ending the last line
        while len(found) < len(wanted) and position > 0:
            start = max(0, position - _CHUNK)
            file.seek(start)
            chunk = file.read(position - start)
            newlines = chunk.count(b"\n")
            for n in wanted:
                if n not in found and seen + newlines >= n:
                    index = len(chunk)
                    for _ in range(n - seen):  # the (n + 1)-th newline from the end ends the line before
                        index = chunk.rfind(b"\n", 0, index)
                    found[n] = start + index + 1
            seen += newlines
            position = start
    missing = [n for n in wanted if n not in found]
    if missing:
        raise SplitWriteError(path, missing[-1] + 1, seen + 1)
    return [found[n] for n in tails]


def _copy_range(source: BinaryIO, target: BinaryIO, start: int, length: int) -> None:
    """Copy ``length`` bytes from ``start`` of one open file to the end of another."""
    source.seek(start)
    while length > 0:
        block = source.read(min(_CHUNK, length))
        if not block:
            raise SplitWriteError(Path(source.name), start + length, source.tell())
        target.write(block)
        length -= len(block)
