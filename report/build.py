"""``build_report``: read the log, compute every section, write report.html and report.json."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, overload

import numpy as np
from typing_extensions import TypeVar

from prefpair.report import analyses
from prefpair.report.config import ReportConfig
from prefpair.report.experiments import experiments, read_definitions
from prefpair.report.implicit import rule_agreement
from prefpair.report.load import LogData, load_log
from prefpair.report.render import PLOT_IDS, render_html
from prefpair.schemas.experiments import Experiment
from prefpair.storage import LocalStorage, S3Options, Storage, location

HTML_NAME = "report.html"
JSON_NAME = "report.json"


Where = TypeVar("Where", Path, Storage, default=Path)
"""Where a report's files are: local paths, or storage (an output given as storage)."""


@dataclass(frozen=True)
class Report(Generic[Where]):
    """A written report: where its files are, and every number in it (``data``, as in report.json)."""

    html_path: Where
    json_path: Where
    data: dict[str, Any] = field(repr=False)

    @property
    def ratings(self) -> dict[str, Any]:
        return dict(self.data["ratings"])

    @property
    def bias(self) -> dict[str, Any]:
        return dict(self.data["bias"])

    @property
    def agreement(self) -> dict[str, Any]:
        return dict(self.data["agreement"])

    @property
    def experiments(self) -> list[dict[str, Any]]:
        """One section per comparative experiment (none for a report over a compiled dataset)."""
        return list(self.data.get("experiments") or [])

    @property
    def health(self) -> dict[str, Any] | None:
        """None for a report over a compiled dataset (it keeps no feedback events)."""
        health = self.data["health"]
        return None if health is None else dict(health)


@overload
def build_report(
    log_dir: Path | Storage, out_dir: Path, config: ReportConfig | None = None,
    definitions: Sequence[Experiment] | None = None, *, s3: S3Options | None = None,
) -> Report[Path]: ...
@overload
def build_report(
    log_dir: Path | Storage, out_dir: Storage, config: ReportConfig | None = None,
    definitions: Sequence[Experiment] | None = None, *, s3: S3Options | None = None,
) -> Report[Storage]: ...
def build_report(
    log_dir: Path | Storage, out_dir: Path | Storage, config: ReportConfig | None = None,
    definitions: Sequence[Experiment] | None = None, *, s3: S3Options | None = None,
) -> Report[Path] | Report[Storage]:
    """Analyse the committed log in ``log_dir`` (or ``config.dataset``, a compiled dataset) and
    write ``report.json`` then ``report.html`` into ``out_dir``, each atomically.

    Either may be a folder or object storage (:mod:`prefpair.storage`); on object storage each file
    is one PUT, so a reader gets the old file or the new one, as the rename gives locally. The
    config's inputs (dataset, manifest, metrics file) may be ``s3://`` too, reached with ``s3``.
    ``definitions`` name the experiments (read from the experiments topic by the caller); without
    them, those of ``config.experiments`` (a file), if any.
    """
    config = config or ReportConfig()
    if config.dataset is not None:
        from prefpair.report.dataset import load_dataset

        data = load_dataset(location(config.dataset, s3))
        source = str(config.dataset)
    else:
        data = load_log(log_dir if isinstance(log_dir, Storage) else Path(log_dir))
        source = str(log_dir)
    try:
        content = compute(data, config, definitions, s3)
    finally:
        data.con.close()
    content["inputs"] = {
        "source": source,
        "files": data.files,
        "config": config.model_dump(mode="json"),
    }
    target = out_dir if isinstance(out_dir, Storage) else LocalStorage(Path(out_dir))
    (target / JSON_NAME).write_text(json.dumps(_jsonable(content), indent=2, sort_keys=False, allow_nan=False) + "\n")
    (target / HTML_NAME).write_text(render_html(content))
    if isinstance(out_dir, Storage):
        return Report(html_path=out_dir / HTML_NAME, json_path=out_dir / JSON_NAME, data=_jsonable(content))
    return Report(html_path=Path(out_dir) / HTML_NAME, json_path=Path(out_dir) / JSON_NAME, data=_jsonable(content))


def compute(
    data: LogData, config: ReportConfig, definitions: Sequence[Experiment] | None = None, s3: S3Options | None = None
) -> dict[str, Any]:
    """Every section of the report as one JSON-ready dict."""
    defined = list(definitions) if definitions is not None else read_definitions(config.experiments)
    rng = np.random.default_rng(config.seed)
    comps = data.comparisons
    ratings = analyses.ratings(comps, config, rng)
    bias = analyses.bias(comps, config)
    content: dict[str, Any] = {
        "title": config.title,
        "generated_at": datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "plots": list(PLOT_IDS),
        "ratings": ratings,
        "ratings_per_source": None,
        "bias": bias,
        "agreement": analyses.agreement(comps),
        "health": analyses.health(data, config, s3) if data.kind == "log" else None,
        "experiments": (
            experiments(data, defined, config.confidence) if data.kind == "log" else []
        ),
        "implicit_rules": rule_agreement(data, config) if data.kind == "log" else None,
    }
    if config.per_source:
        content["ratings_per_source"] = {
            source: analyses.ratings(comps.select(comps.source_type == source), config, rng)
            for source in sorted(set(comps.source_type.tolist()))
        }
    return content


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
