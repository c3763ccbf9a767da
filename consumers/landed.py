"""Reads of the committed log that the join needs: landed inference rows and known event ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from prefpair.schemas.log import committed_segments


class LandedLog:
    """Batched lookups of inference events already written to the log (DuckDB over Parquet)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.lookups = 0
        self._db = duckdb.connect(config={"threads": 1})

    def inference_rows(self, partition: int, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``{request_id: row}`` for the ids found in ``partition``'s landed inference events."""
        files = [str(p / "inference.parquet") for _, p in committed_segments(self.log_dir, partition)
                 if (p / "inference.parquet").exists()]  # fmt: skip
        if not files or not request_ids:
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
        for _, path in reversed(list(committed_segments(self.log_dir, partition))):
            if len(inference) < limit and (path / "inference.parquet").exists():
                inference.extend(pq.read_table(path / "inference.parquet", columns=["inference_event_id"])
                                 .column(0).to_pylist())  # fmt: skip
            for table in ("feedback", "orphans"):
                if len(feedback) < limit and (path / f"{table}.parquet").exists():
                    feedback.extend(pq.read_table(path / f"{table}.parquet", columns=["feedback_event_id"])
                                    .column(0).to_pylist())  # fmt: skip
            if len(inference) >= limit and len(feedback) >= limit:
                break
        return inference[:limit][::-1], feedback[:limit][::-1]

    def close(self) -> None:
        self._db.close()
