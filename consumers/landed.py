"""Reads of the committed log that the join needs: landed inference rows and known event ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from prefpair.consumers.segments import LogDir, log_location, read_parquets, segments_with_files
from prefpair.storage import Storage

BATCH = 64
"""Files of a log on object storage fetched at once."""


class LandedLog:
    """Batched lookups of inference events already written to the log (DuckDB over Parquet).

    A log on object storage is read differently: DuckDB would open its files one after the other
    through s3fs (a few requests each), so they are fetched concurrently instead, :data:`BATCH`
    files at a time, and filtered with pyarrow: the same rows, one round of GETs per batch.
    """

    def __init__(self, log_dir: LogDir) -> None:
        self.log_dir = log_location(log_dir)
        self.lookups = 0
        self._db = duckdb.connect(config={"threads": 1})

    def inference_rows(self, partition: int, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``{request_id: row}`` for the ids found in ``partition``'s landed inference events."""
        if not request_ids:
            return {}
        segments = segments_with_files(self.log_dir, partition)
        found = [s.file("inference.parquet") for s in segments if s.has("inference.parquet")]
        if not found:
            return {}
        self.lookups += 1
        if isinstance(self.log_dir, Storage):
            return self._stored_inference_rows(found, request_ids)
        files = [str(file) for file in found]
        table = self._db.sql(
            "SELECT * FROM read_parquet($files, union_by_name = true) WHERE request_id IN (SELECT unnest($ids)) "
            "ORDER BY inference_offset",
            params={"files": files, "ids": request_ids},
        ).to_arrow_table()
        return {row["request_id"]: row for row in table.to_pylist()}  # newest offset wins

    def _stored_inference_rows(self, files: list[Path | Storage], request_ids: list[str]) -> dict[str, dict[str, Any]]:
        wanted = pa.array(request_ids, type=pa.string())
        matches: list[pa.Table] = []
        for start in range(0, len(files), BATCH):
            for table in read_parquets(files[start : start + BATCH]):
                matches.append(table.filter(pc.is_in(table["request_id"], value_set=wanted)))
        if not matches:
            return {}
        # segments written before a schema change lack its new columns: they read as nulls
        table = pa.concat_tables(matches, promote_options="default").sort_by("inference_offset")
        return {row["request_id"]: row for row in table.to_pylist()}  # newest offset wins

    def known_event_ids(self, partition: int, limit: int) -> tuple[list[str], list[str]]:
        """Inference and feedback event ids already in the log (newest ``limit`` of each)."""
        inference: list[str] = []
        feedback: list[str] = []
        newest_first = list(reversed(segments_with_files(self.log_dir, partition)))
        for start in range(0, len(newest_first), BATCH):
            batch = newest_first[start : start + BATCH]
            if len(inference) < limit:
                files = [s.file("inference.parquet") for s in batch if s.has("inference.parquet")]
                for table in read_parquets(files, columns=["inference_event_id"]):
                    inference.extend(table.column(0).to_pylist())
            if len(feedback) < limit:
                files = [s.file(f"{t}.parquet") for s in batch for t in ("feedback", "orphans")
                         if s.has(f"{t}.parquet")]  # fmt: skip
                for table in read_parquets(files, columns=["feedback_event_id"]):
                    feedback.extend(table.column(0).to_pylist())
            if len(inference) >= limit and len(feedback) >= limit:
                break
        return inference[:limit][::-1], feedback[:limit][::-1]

    def close(self) -> None:
        self._db.close()
