"""``compile_dataset``: the log in, a dataset directory out (see :mod:`prefpair.compile.output`).

Reads only committed segments, computes in DuckDB (:mod:`prefpair.compile.pipeline`) or, with
``engine = spark``, on Apache Spark (:mod:`prefpair.compile.spark`: the same stages), writes each
format with DuckDB's ``COPY ... (FORMAT JSON)`` into a staging dir beside the output, then renames
it into place while holding the output's lock. Same log, same config (either engine):
byte-identical files.

Either side may be object storage (:mod:`prefpair.storage`): DuckDB reads an ``s3://`` log through
the s3fs file system registered on its connection; an ``s3://`` output is staged in a local temp
dir, uploaded, and published by a pointer written last (:func:`prefpair.compile.output.publish`).
The files are the same bytes wherever the log and the output are.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, overload

import duckdb
from typing_extensions import TypeVar

from prefpair import __version__
from prefpair.compile import output
from prefpair.compile.card import CardData, default_pretty_name, render_card
from prefpair.compile.config import CompileConfig
from prefpair.compile.exceptions import NoCommittedLogError, SparkUnavailableError
from prefpair.compile.formats import (
    SPECS,
    FormatSpec,
    first_unsupported_role_sql,
    line_columns,
    meta_columns,
    meta_line_columns,
    unsupported_role_sql,
)
from prefpair.compile.pipeline import Pipeline
from prefpair.compile.redaction import card_section, install, redactor
from prefpair.compile.splitfiles import SplitFile, json_object, write_splits
from prefpair.compile.sql import sql_string
from prefpair.dataset_layout import MANIFEST
from prefpair.durable import fsync_path
from prefpair.schemas.log import TABLES, SegmentName, committed_files, committed_segments, table_files
from prefpair.storage import LocalStorage, Storage

log = logging.getLogger(__name__)

Where = TypeVar("Where", Path, Storage, default=Path)
"""Where a result's files are: local paths, or storage (an output given as storage)."""


@dataclass(frozen=True)
class CompileResult(Generic[Where]):
    """What a compile wrote, and what it counted on the way."""

    out_dir: Where
    """The dataset directory written: the output itself, or its new version with ``incremental``
    (on object storage: the published dataset's folder)."""
    manifest: Where
    pairs_total: int
    split_counts: dict[str, int]
    drop_counts: dict[str, int]
    stage_counts: dict[str, int]
    files: list[Where]
    unpaired_total: int = 0
    version: str | None = None
    seconds: float = 0.0
    per_format: dict[str, dict[str, int]] = field(default_factory=dict)


@overload
def compile_dataset(log_dir: Path | Storage, out_dir: Path, config: CompileConfig) -> CompileResult[Path]: ...
@overload
def compile_dataset(log_dir: Path | Storage, out_dir: Storage, config: CompileConfig) -> CompileResult[Storage]: ...
def compile_dataset(
    log_dir: Path | Storage, out_dir: Path | Storage, config: CompileConfig
) -> CompileResult[Path] | CompileResult[Storage]:
    """Compile the committed log under ``log_dir`` into ``out_dir`` (see the module docstring)."""
    started = time.monotonic()
    log_source, segments, files = _read_log(log_dir)
    if isinstance(out_dir, Storage) and not isinstance(out_dir, LocalStorage):
        return _publish(log_source, out_dir, config, files, segments, started)
    local = _compile_local(log_source, Path(out_dir.path if isinstance(out_dir, LocalStorage) else out_dir), config,
                           files, segments, started)  # fmt: skip
    if isinstance(out_dir, LocalStorage):
        return _relocate(local, LocalStorage(local.out_dir), local.seconds)
    return local


LogFiles = Mapping[str, Sequence[Path | str]]


def _read_log(log_dir: Path | Storage) -> tuple[Path | Storage, list[tuple[SegmentName, Any]], LogFiles]:
    """The log (a local path, or object storage), its committed segments and each table's files."""
    source: Path | Storage = log_dir.path if isinstance(log_dir, LocalStorage) else log_dir
    if isinstance(source, Storage):
        stored, remote_files = committed_files(source)
        segments: list[tuple[SegmentName, Any]] = list(stored)
        files: LogFiles = remote_files
    else:
        source = Path(source)
        segments = list(committed_segments(source))
        files = {table: table_files(source, table) for table in TABLES}
    if not segments:
        raise NoCommittedLogError(source if isinstance(source, Path) else source.url)
    return source, segments, files


def _compile_local(
    log_dir: Path | Storage,
    out_dir: Path,
    config: CompileConfig,
    files: LogFiles,
    segments: list[tuple[SegmentName, Any]],
    started: float,
) -> CompileResult[Path]:
    with output.output_lock(out_dir):
        if config.incremental:
            output.check_incremental_root(out_dir)
            parent = out_dir
            earlier = output.versions(out_dir)
            version: str | None = output.next_version(out_dir)
            emitted = [v / output.EMITTED for v in earlier if (v / output.EMITTED).is_file()]
        else:
            output.check_replaceable(out_dir)
            parent = out_dir.parent
            version, emitted = None, []
        prefix = f"{output.STAGING_PREFIX}{out_dir.name}-"
        output.sweep_staging(parent, prefix)
        with output.staging_dir(parent, prefix) as stage:
            result = _compile_into(stage, log_dir, out_dir, config, files, segments, emitted, version)
            output.fsync_tree(stage)
            if version is not None:
                target = out_dir / version
                stage.rename(target)
                fsync_path(out_dir)
                _write_state(out_dir)
            else:
                target = out_dir
                output.replace_dir(stage, out_dir, prefix)
    final = _relocate(result, target, time.monotonic() - started)
    _log_done(final)
    return final


def _publish(
    log_dir: Path | Storage,
    out: Storage,
    config: CompileConfig,
    files: LogFiles,
    segments: list[tuple[SegmentName, Any]],
    started: float,
) -> CompileResult[Storage]:
    """Compile into a local temp dir, upload it and publish it by pointer (:func:`output.publish`)."""
    latest = output.latest_publication(out)
    output.check_publishable(out, config.incremental, latest)
    number = (latest.number if latest else 0) + 1
    with tempfile.TemporaryDirectory(prefix="prefpair-compile-") as temp:
        stage = Path(temp) / "dataset"
        stage.mkdir()
        emitted: list[Path] = []
        version: str | None = None
        if config.incremental:
            version = f"v{number:05d}"
            for earlier in output.published(out):
                source = out / f"{earlier.path}/{output.EMITTED}"
                if earlier.version is not None and source.exists():
                    local = Path(temp) / "earlier" / earlier.version / output.EMITTED
                    local.parent.mkdir(parents=True)
                    source.download(local)
                    emitted.append(local)
        result = _compile_into(stage, log_dir, out, config, files, segments, emitted, version)
        manifest = output.read_json(stage / MANIFEST)
        summary = {
            "pairs": result.pairs_total,
            "unpaired": result.unpaired_total,
            "watermarks": manifest["inputs"]["partitions"],
        }
        publication = output.publish(out, stage, number, incremental=config.incremental, summary=summary)
    kept = output.published(out, None if config.incremental else output.KEEP_REPLACED)
    output.sweep_published(out, kept)
    final = _relocate(result, out / publication.path, time.monotonic() - started)
    _log_done(final)
    return final


def _log_done(result: CompileResult[Any]) -> None:
    log.info(
        "compile: %d pairs (%s) and %d unpaired examples in %s (%.1f s)",
        result.pairs_total, result.split_counts, result.unpaired_total, result.out_dir, result.seconds,
    )  # fmt: skip


def _compile_into(
    stage: Path,
    log_dir: Path | Storage,
    out_dir: Path | Storage,
    config: CompileConfig,
    files: LogFiles,
    segments: list[Any],
    emitted: list[Path],
    version: str | None,
) -> CompileResult[Path]:
    spill = stage / ".duckdb-tmp"
    con = duckdb.connect(":memory:")
    try:
        if isinstance(log_dir, Storage):
            log_dir.attach(con)
        con.execute(f"SET threads = {int(config.threads)}")
        con.execute(f"SET memory_limit = {sql_string(config.memory_limit or default_memory_limit())}")
        con.execute(f"SET temp_directory = {sql_string(str(spill))}")
        con.execute("SET preserve_insertion_order = true")
        with _pipeline(con, config, files, emitted) as pipeline:
            pipeline.run()
        split_counts = _counts(con, "selected")
        has_unpaired = "trl_unpaired" in config.formats
        unpaired_counts = _counts(con, "unpaired") if has_unpaired else {}
        written: dict[str, dict[str, tuple[str, int]]] = {}
        meta_written: dict[str, dict[str, tuple[str, int]]] = {}
        format_skips: dict[str, dict[str, int]] = {}
        redactions: dict[str, dict[str, int]] = {}
        for fmt in config.formats:
            spec = SPECS[fmt]
            source, order = pipeline.outputs[spec.table]
            counts = unpaired_counts if spec.unpaired else split_counts
            keep = "TRUE"
            unsupported = unsupported_role_sql(spec)
            if unsupported is not None:
                skipped = _skipped(con, spec, source, unsupported)
                if skipped:
                    format_skips[fmt] = {"unsupported_role": sum(skipped.values())}
                    counts = {split: n - skipped.get(split, 0) for split, n in counts.items()}
                keep = f"NOT ({unsupported})"
            written[fmt], meta_written[fmt] = {}, {}
            redacting = redactor(f"{name}={regex}" for name, regex in config.redact_patterns.items())
            install(con, redacting if config.redact else None)
            split_files = [SplitFile(split, stage / f"{fmt}/{split}.jsonl", counts[split])
                     for split in config.splits if counts.get(split, 0)]  # fmt: skip
            if split_files:
                (stage / fmt).mkdir(exist_ok=True)
                started = time.monotonic()
                line = json_object(line_columns(spec, config))
                write_splits(con, line, source, keep, order.removeprefix("ORDER BY "), split_files)
                rows_per_split = ", ".join(f"{f.split} {f.rows} rows" for f in split_files)
                log.info("compile: wrote %s (%s) in %.1f s", fmt, rows_per_split, time.monotonic() - started)
            for file in split_files:
                written[fmt][file.split] = (f"{fmt}/{file.split}.jsonl", file.rows)
            if split_files and meta_columns(spec, config):
                metas = [SplitFile(f.split, f.path.with_suffix(".meta.jsonl"), f.rows) for f in split_files]
                meta_line = json_object(meta_line_columns(spec, config))
                write_splits(con, meta_line, source, keep, spec.order, metas)
                for meta_file in metas:
                    meta_written[fmt][meta_file.split] = (f"{fmt}/{meta_file.path.name}", meta_file.rows)
            if config.redact:
                redactions[fmt] = dict(sorted(redacting.counts.items()))
        subject = _subject(con)
        if version is not None:
            con.execute(
                f"""
                COPY (
                    SELECT id, kind FROM (
                        SELECT pair_id AS id, 'pair' AS kind FROM selected
                        {"UNION ALL SELECT example_id, 'unpaired' FROM unpaired" if has_unpaired else ""}
                    ) ORDER BY kind, id
                ) TO {sql_string(str(stage / output.EMITTED))} (FORMAT PARQUET)
                """
            )
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)

    stage_counts = dict(pipeline.stage_counts)
    stage_counts["pairs_written"] = sum(split_counts.values())
    drop_counts = pipeline.drop_counts
    name = out_dir.name if version is None else f"{out_dir.name}-{version}"
    file_entries: list[dict[str, Any]] = []
    for format_name, per_split in written.items():
        for split, (relative, rows) in per_split.items():
            file_entries.append(_file_entry(stage, relative, rows))
            if split in meta_written[format_name]:
                meta, meta_rows = meta_written[format_name][split]
                file_entries.append({**_file_entry(stage, meta, meta_rows), "meta_of": relative})
    manifest = {
        "prefpair_version": __version__,
        "dataset": name,
        "version": version,
        "inputs": _inputs(log_dir, files, segments, emitted),
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "filters": config.filters.model_dump(mode="json"),
        "counts": {
            "stages": stage_counts,
            "drops": drop_counts,
            "splits": {split: split_counts.get(split, 0) for split in config.splits},
            "unpaired_splits": {split: unpaired_counts.get(split, 0) for split in config.splits},
            "format_skips": format_skips,
        },
        "files": file_entries,
        **pipeline.sections,
        "redactions": redactions if config.redact else None,
    }
    output.write_json(stage / MANIFEST, manifest)
    card = render_card(
        CardData(
            pretty_name=config.card.pretty_name or default_pretty_name(*subject, version),
            files=written,
            meta_files=meta_written,
            stage_counts=stage_counts,
            drop_counts=drop_counts,
            split_counts={split: split_counts.get(split, 0) for split in config.splits},
            format_skips=format_skips,
            version=version,
        ),
        config,
    )
    if config.redact:
        card += card_section(redactions)
    (stage / output.CARD).write_text(card, encoding="utf-8")
    return CompileResult(
        out_dir=stage,
        manifest=stage / MANIFEST,
        pairs_total=sum(split_counts.values()),
        split_counts={split: split_counts.get(split, 0) for split in config.splits},
        drop_counts=drop_counts,
        stage_counts=stage_counts,
        files=[stage / str(e["path"]) for e in file_entries],
        unpaired_total=sum(unpaired_counts.values()),
        version=version,
        per_format={fmt: {split: rows for split, (_, rows) in splits.items()} for fmt, splits in written.items()},
    )


@contextmanager
def _pipeline(
    con: duckdb.DuckDBPyConnection, config: CompileConfig, files: Mapping[str, Sequence[Path | str]],
    emitted: list[Path],
) -> Iterator[Pipeline]:
    """The stages on the configured engine; either way ``con`` ends up holding what is written out."""
    if config.engine == "duckdb":
        yield Pipeline(con, config, files, emitted)
        return
    try:
        from prefpair.compile.spark import spark_pipeline
    except ImportError as exc:
        raise SparkUnavailableError(f"{exc.name} is not installed (pip install 'prefpair[spark]')") from None
    with spark_pipeline(con, config, files, emitted) as pipeline:
        yield pipeline


def _file_entry(stage: Path, relative: str, rows: int) -> dict[str, Any]:
    path = stage / relative
    return {"path": relative, "rows": rows, "bytes": path.stat().st_size, "sha256": output.sha256_file(path)}


def _skipped(con: duckdb.DuckDBPyConnection, spec: FormatSpec, source: str, condition: str) -> dict[str, int]:
    """Rows per split that the format leaves out (``condition``); one of them is named in a warning."""
    skipped = {
        str(split): int(n)
        for split, n in con.execute(f"SELECT split, count(*) FROM {source} WHERE {condition} GROUP BY split").fetchall()
    }
    if skipped:
        request_id, index, role = con.execute(
            f"SELECT {first_unsupported_role_sql(spec)} FROM {source} WHERE {condition} ORDER BY request_id LIMIT 1"
        ).fetchall()[0]
        log.warning(
            "compile: %s leaves out %d pairs whose prompt holds a role its trainer does not take "
            "(first: request %s, messages[%d].role = %r; it takes %s)",
            spec.name, sum(skipped.values()), request_id, index, role, ", ".join(spec.roles or ()),
        )  # fmt: skip
    return skipped


def _subject(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """The models and the feedback source types of the selected pairs (for the card's default title)."""
    models = [
        str(m)
        for (m,) in con.execute(
            "SELECT DISTINCT m FROM (SELECT chosen_model AS m FROM selected UNION SELECT rejected_model FROM selected) "
            "WHERE m IS NOT NULL ORDER BY m"
        ).fetchall()
    ]
    sources = [
        str(s)
        for (s,) in con.execute(
            "SELECT DISTINCT source_type FROM selected WHERE source_type IS NOT NULL ORDER BY 1"
        ).fetchall()
    ]
    return models, sources


def default_memory_limit() -> str:
    """Half the machine's memory: DuckDB spills beyond it (to the staging dir), other work keeps the rest."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return "4GB"
    return f"{max(1, total // 2 // (1 << 20))}MB"


def _counts(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    return {str(s): int(n) for s, n in con.execute(f"SELECT split, count(*) FROM {table} GROUP BY split").fetchall()}


def _inputs(log_dir: Path | Storage, files: LogFiles, segments: list[Any], emitted: list[Path]) -> dict[str, Any]:
    """The log as read: per partition, segment count and the offset watermarks (ends of ranges)."""
    partitions: dict[str, dict[str, int]] = {}
    for name, _ in segments:
        entry = partitions.setdefault(
            str(name.partition),
            {"segments": 0, "inference_start": name.inference_start, "feedback_start": name.feedback_start,
             "inference_end": 0, "feedback_end": 0},
        )  # fmt: skip
        entry["segments"] += 1
        entry["inference_start"] = min(entry["inference_start"], name.inference_start)
        entry["feedback_start"] = min(entry["feedback_start"], name.feedback_start)
        entry["inference_end"] = max(entry["inference_end"], name.inference_end)
        entry["feedback_end"] = max(entry["feedback_end"], name.feedback_end)
    return {
        "log_dir": str(log_dir),
        "files": {table: len(paths) for table, paths in files.items()},
        "partitions": dict(sorted(partitions.items(), key=lambda kv: int(kv[0]))),
        "earlier_versions": [p.parent.name for p in emitted],
    }


def _write_state(root: Path) -> None:
    """Summary of the committed versions beside them (the versions themselves are the truth)."""
    runs = []
    for version_dir in output.versions(root):
        manifest = output.read_json(version_dir / MANIFEST)
        runs.append(
            {
                "version": version_dir.name,
                "pairs": sum(manifest["counts"]["splits"].values()),
                "unpaired": sum(manifest["counts"]["unpaired_splits"].values()),
                "watermarks": manifest["inputs"]["partitions"],
            }
        )
    output.write_json_atomic(root / output.STATE, {"versions": runs})


def _relocate(result: CompileResult[Any], target: Where, seconds: float) -> CompileResult[Where]:
    """The result with paths pointing into the renamed (or published) dataset directory."""

    def moved(path: Path) -> Where:
        return target / path.relative_to(result.out_dir).as_posix()

    return CompileResult(
        out_dir=target,
        manifest=moved(result.manifest),
        pairs_total=result.pairs_total,
        split_counts=result.split_counts,
        drop_counts=result.drop_counts,
        stage_counts=result.stage_counts,
        files=[moved(p) for p in result.files],
        unpaired_total=result.unpaired_total,
        version=result.version,
        seconds=seconds,
        per_format=result.per_format,
    )


__all__ = ["CompileResult", "compile_dataset"]
