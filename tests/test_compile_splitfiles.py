"""Every split of a format from one sorted read streamed into the split files, its lines made by
``to_json`` before the sort: the same bytes as ``COPY ... (FORMAT JSON)`` per split."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from prefpair.compile import splitfiles
from prefpair.compile.exceptions import SplitWriteError
from prefpair.compile.splitfiles import SplitFile, json_object, write_splits

LINE = json_object([("text", "text"), ("id", "id")])


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET preserve_insertion_order = true")
    con.execute(
        """
        CREATE TABLE rows AS
        SELECT CASE WHEN i % 10 < 6 THEN 'train' WHEN i % 10 < 9 THEN 'test' ELSE 'validation' END AS split,
               hash(i * 13) % 1000 AS h, i AS id,
               repeat('é"\\', (i % 9)::INT) || chr(10) || i::VARCHAR AS text
        FROM range(498) r(i)
        """
    )
    return con


def per_split_copy(con: duckdb.DuckDBPyConnection, tmp: Path) -> dict[str, bytes]:
    expected = {}
    for split in ("test", "train", "validation"):
        path = tmp / f"{split}.expected.jsonl"
        query = f"SELECT text, id FROM rows WHERE split = '{split}' ORDER BY h, id"
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT JSON)")
        expected[split] = path.read_bytes()
    return expected


@pytest.mark.parametrize("batch", [7, 64, 20_000])
def test_one_sorted_read_streamed_into_the_split_files_gives_each_split_its_own_bytes(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(splitfiles, "_BATCH_ROWS", batch)  # split boundaries inside and across batches
    counts = dict(con.execute("SELECT split, count(*) FROM rows GROUP BY split").fetchall())
    assert len(counts) == 3 and max(counts, key=counts.__getitem__) == "train"
    files = [SplitFile(split, tmp_path / f"{split}.jsonl", counts[split]) for split in ("test", "validation", "train")]
    write_splits(con, LINE, "rows", "TRUE", "h, id", files)
    expected = per_split_copy(con, tmp_path)
    assert {f.split: f.path.read_bytes() for f in files} == expected
    assert all(expected.values())


def test_one_split_and_a_presorted_table(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    counts = dict(con.execute("SELECT split, count(*) FROM rows GROUP BY split").fetchall())
    expected = per_split_copy(con, tmp_path)
    only = SplitFile("validation", tmp_path / "only.jsonl", counts["validation"])
    write_splits(con, LINE, "rows", "TRUE", "h, id", [only])
    assert only.path.read_bytes() == expected["validation"]
    con.execute("CREATE TABLE sorted AS SELECT * FROM rows ORDER BY split, h, id")
    files = [SplitFile(split, tmp_path / f"sorted-{split}.jsonl", n) for split, n in counts.items()]
    write_splits(con, LINE, "sorted", "TRUE", "", files)  # empty order: insertion order
    assert {f.split: f.path.read_bytes() for f in files} == expected


def test_counts_that_do_not_match_the_rows_are_refused(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    files = [SplitFile("train", tmp_path / "train.jsonl", 1), SplitFile("test", tmp_path / "test.jsonl", 1)]
    with pytest.raises(SplitWriteError, match="expected 1 rows for its split"):
        write_splits(con, json_object([("text", "text")]), "rows", "split IN ('train', 'test')", "h, id", files)


@pytest.mark.parametrize("kind", ["string", "large_string", "string_view"])
def test_lines_of_any_arrow_string_layout_are_written_whole(tmp_path: Path, kind: str) -> None:
    import pyarrow as pa

    texts = ['{"a":"x"}', '{"a":"é\\\\n"}', "{}"]
    lines = pa.array(texts, type=getattr(pa, kind)()).slice(1)  # an offset into the buffers too
    path = tmp_path / "out.jsonl"
    with path.open("wb") as handle:
        splitfiles._write_lines(handle, lines)
    assert path.read_text(encoding="utf-8") == "".join(t + "\n" for t in texts[1:])
