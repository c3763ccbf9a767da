"""Read a compiled dataset (JSONL with provenance columns) as comparisons, best effort.

A compiled dataset holds decisive pairs only (no ties, no presentation order, no feedback
health), so a report over it has ratings, length checks and agreement, nothing more. Intervals
resample the pairs of one request (``request_id`` or ``prompt_id``, else one prompt) together. Each
line needs the models of both sides: ``chosen_model`` and ``rejected_model`` (compile with
provenance columns). Optional: ``request_id``, ``source_type`` (or ``source``: a string or
``{"type": ...}``), ``feedback_id``, ``feedback_timestamp_ms`` / ``timestamp_ms``, and the
answers (``chosen`` / ``rejected`` or ``preferred_output`` / ``non_preferred_output``, as
text or chat messages) for their lengths. A compile's dataset (it has ``manifest.json``) holds the
same pairs once per format: one format's folder is read, so each judgment counts once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from prefpair.dataset_layout import MANIFEST, PUBLISHED
from prefpair.report.exceptions import EmptyLogError, ReportInputError
from prefpair.report.load import Comparisons, LogData, create_empty_log_tables
from prefpair.storage import LocalStorage, Storage, read_all

ANSWER_COLUMNS = (("chosen", "rejected"), ("preferred_output", "non_preferred_output"))


def _length(value: Any) -> float:
    """Characters of an answer given as text, a message, or a list of messages."""
    if isinstance(value, str):
        return float(len(value))
    if isinstance(value, dict):
        return _length(value.get("content"))
    if isinstance(value, list) and value:
        return float(sum(_length(m) for m in value if isinstance(m, dict) and m.get("role") == "assistant") or 0)
    return float("nan")


def _source(row: dict[str, Any]) -> str:
    value = row.get("source_type", row.get("source"))
    if isinstance(value, dict):
        value = value.get("type")
    return str(value) if value else "UNKNOWN"


def _prompt_key(prompt: Any) -> str | None:
    """The prompt (text or messages) as one string, or None when there is none."""
    if prompt is None or prompt == "" or prompt == []:
        return None
    return "prompt:" + (prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True))


def _one_format(per_format: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of one format folder: a compile writes the same pairs once per format, so reading
    them all would count each judgment once per format. The folder whose lines carry the answers
    (for the length checks) and the most pairs is read; the others hold the same pairs."""

    def answered(rows: list[dict[str, Any]]) -> int:
        return sum(any(c in row and r in row for c, r in ANSWER_COLUMNS) for row in rows)

    ranked = sorted(per_format.items(), key=lambda item: (-answered(item[1]), -len(item[1]), item[0]))
    return ranked[0][1] if ranked else []


def load_dataset(dataset_dir: Path | Storage) -> LogData:
    """Comparisons from every ``*.jsonl`` file under ``dataset_dir`` (a folder or object storage)."""
    folder = dataset_dir if isinstance(dataset_dir, Storage) else LocalStorage(dataset_dir)
    where = folder.path if isinstance(folder, LocalStorage) else folder.url
    names = folder.list_files()
    if any(name.startswith(f"{PUBLISHED}/") for name in names):
        raise ReportInputError(
            "dataset", f"{folder.url} holds the datasets a compile published: give the one to report on "
            "(the `dataset` line `prefpair compile` printed, .../data/<n>-<id>)"
        )  # fmt: skip
    relative = [name for name in sorted(names, key=lambda name: name.split("/")) if name.endswith(".jsonl")]
    files = [folder / name for name in relative]
    # A compile's dataset (it has a manifest) holds the same pairs in each <format>/ folder.
    by_format = MANIFEST in names
    if not files:
        raise EmptyLogError(where, "no *.jsonl files (is this a folder written by `prefpair compile`?)")
    per_format: dict[str, list[dict[str, Any]]] = {}
    for name, file, content in zip(relative, files, read_all(files), strict=True):
        found = per_format.setdefault(name.rsplit("/", 1)[0] if by_format and "/" in name else "", [])
        for number, line in enumerate(content.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReportInputError("dataset", f"{file.url}:{number} is not JSON: {exc.msg}") from None
            if row.get("chosen_model") and row.get("rejected_model"):
                found.append(row)
    rows = _one_format(per_format)
    if not rows:
        raise ReportInputError(
            "dataset", f"no line in {folder.url} names chosen_model and rejected_model: compile with provenance"
        )
    n = len(rows)
    chosen_len = np.full(n, np.nan)
    rejected_len = np.full(n, np.nan)
    for i, row in enumerate(rows):
        for chosen, rejected in ANSWER_COLUMNS:
            if chosen in row and rejected in row:
                chosen_len[i], rejected_len[i] = _length(row[chosen]), _length(row[rejected])
                break
    request = np.array(
        [str(r.get("request_id") or r.get("prompt_id") or f"line-{i}") for i, r in enumerate(rows)], dtype=object
    )
    judgment = [str(r.get("feedback_id") or f"line-{i}") for i, r in enumerate(rows)]
    _, judgment_code = np.unique(np.array(judgment, dtype=str), return_inverse=True)
    # pairs of one request, or else of one prompt, are resampled together
    item = [
        str(r.get("request_id") or r.get("prompt_id") or _prompt_key(r.get("prompt")) or f"line-{i}")
        for i, r in enumerate(rows)
    ]
    _, item_code = np.unique(np.array(item, dtype=str), return_inverse=True)
    comparisons = Comparisons(
        judgment=judgment_code.astype(np.int64),
        item=item_code.astype(np.int64),
        request_id=request,
        source_type=np.array([_source(r) for r in rows], dtype=object),
        source_key=np.array([str(r.get("source_id") or _source(r)) for r in rows], dtype=object),
        origin=np.full(n, "dataset", dtype=object),  # every pair of a dataset rates, whatever its derivation
        a_id=np.array([str(r.get("chosen_id") or "chosen") for r in rows], dtype=object),
        b_id=np.array([str(r.get("rejected_id") or "rejected") for r in rows], dtype=object),
        a_model=np.array([str(r["chosen_model"]) for r in rows], dtype=object),
        b_model=np.array([str(r["rejected_model"]) for r in rows], dtype=object),
        score_a=np.ones(n),
        a_length=chosen_len,
        b_length=rejected_len,
        a_place=np.full(n, np.nan),
        b_place=np.full(n, np.nan),
        created_ms=np.array(
            [float(r.get("feedback_timestamp_ms") or r.get("timestamp_ms") or 0) for r in rows], dtype=float
        ),
    )
    con = duckdb.connect()
    create_empty_log_tables(con)
    return LogData(con=con, comparisons=comparisons, files={"dataset": len(files)}, kind="dataset")
