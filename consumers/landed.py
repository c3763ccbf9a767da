"""Reads of the committed log that the join needs: landed inference rows and known event ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from prefpair.consumers.segments import LogDir, log_location, read_parquet, segments_with_files
from prefpair.storage import Storage


class LandedLog:
    """Batched lookups of inference events already written to the log (DuckDB over Parquet).

    A log on object storage is read through its storage's file system, attached to the connection.
    """

    def __init__(self, log_dir: LogDir) -> None:
        self.log_dir = log_location(log_dir)
        self.lookups = 0
        self._db = duckdb.connect(config={"threads": 1})
        if isinstance(self.log_dir, Storage):
            self.log_dir.attach(self._db)

    def inference_rows(self, partition: int, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``{request_id: row}`` for the ids found in ``partition``'s landed inference events."""
        if not request_ids:
            return {}
        segments = segments_with_files(self.log_dir, partition)
        files = [_reader_path(s.file("inference.parquet")) for s in segments if s.has("inference.parquet")]
        if not files:
            return {}
        self.lookups += 1
        table = self._db.sql(
            "SELECT * FROM read_parquet($files) WHERE request_id IN (SELECT unnest($ids)) "
            "ORDER BY inference_offset",
            params={"files": files, "ids": request_ids},
        ).to_arrow_table()
        return {row["request_id"]: row for row in table.to_pylist()}  # newest offset wins

    def known_event_ids(self, partition: int, limit: int) -> tuple[list[str], list[str]]:
        """Inference and feedback event ids already in the log (newest ``limit`` of each)."""
        inference: list[str] = []
        feedback: list[str] = []
        for segment in reversed(segments_with_files(self.log_dir, partition)):
            if len(inference) < limit and segment.has("inference.parquet"):
                inference.extend(read_parquet(segment.file("inference.parquet"), columns=["inference_event_id"])
                                 .column(0).to_pylist())  # fmt: skip
            for table in ("feedback", "orphans"):
                if len(feedback) < limit and segment.has(f"{table}.parquet"):
                    feedback.extend(read_parquet(segment.file(f"{table}.parquet"), columns=["feedback_event_id"])
                                    .column(0).to_pylist())  # fmt: skip
            if len(inference) >= limit and len(feedback) >= limit:
                break
        return inference[:limit][::-1], feedback[:limit][::-1]

    def close(self) -> None:
        self._db.close()


def _reader_path(file: Path | Storage) -> str:
    return str(file) if isinstance(file, Path) else file.reader_path
