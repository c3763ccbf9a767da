"""What a report covers and how its statistics are computed: one frozen, validated object."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from prefpair.flags import Flags
from prefpair.storage import check_location

DEFAULT_BOOTSTRAP_ROUNDS = 200
DEFAULT_ELO_K = 4.0
DEFAULT_CONFIDENCE = 0.95
ELO_SCALE = 400.0
ELO_BASE = 10.0
ELO_INIT = 1000.0


def _path_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


ReportInput = Annotated[str | Path, BeforeValidator(_path_text), AfterValidator(check_location)]
"""A file or folder the report reads: a local path (text, or a Path in Python) or ``s3://bucket/key``,
kept as text (what :func:`prefpair.storage.location` turns into storage)."""


class ReportConfig(BaseModel):
    """Options of :func:`~prefpair.report.build_report`.

    Optional inputs that only the consumer or the compile job know: ``dead_letters`` (a count,
    or the path of a JSON metrics file holding a ``dead_letters`` number) and ``manifest`` (the
    ``manifest.json`` of the last compile, whose ``counts.drops`` the report shows). Each file (and
    ``dataset``) is a local path or an ``s3://`` location, as the log is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_rounds: int = Field(
        default=DEFAULT_BOOTSTRAP_ROUNDS, ge=0, le=100_000, description="Bootstrap rounds of the rating intervals."
    )
    seed: int = Field(default=0, description="Seed of the bootstrap resampling: same input, same report.")
    elo_k: float = Field(default=DEFAULT_ELO_K, gt=0, description="K factor of the Elo ratings.")
    confidence: float = Field(default=DEFAULT_CONFIDENCE, gt=0.5, lt=1.0, description="Level of every interval.")
    per_source: bool = Field(default=False, description="Also rate models separately per source type.")
    score_pairs_in_ratings: bool = Field(
        default=False,
        description="Also rate models (and check bias across all sources) from pairs implied by two scores of one "
        "source on one request, such as a reward model's; they always count in their own source type's rows.",
        json_schema_extra={"flag": "--score-pairs"},
    )
    bt_prior: float = Field(
        default=0.01, ge=0, description="L2 penalty on Bradley-Terry strengths: keeps undefeated models finite."
    )
    time_buckets: int = Field(default=24, ge=2, le=500, description="Points of the over-time plots.")
    dead_letters: int | ReportInput | None = Field(
        default=None,
        union_mode="left_to_right",  # "6" is a count, anything else a file
        description="Dead-letter count, or the consumer's JSON metrics file holding one (a path or s3://).",
        json_schema_extra={"metavar": "N|FILE"},
    )
    manifest: ReportInput | None = Field(
        default=None, description="manifest.json of the last compile (a path or s3://): shows its drop counts."
    )
    dataset: ReportInput | None = Field(
        default=None,
        description="Report over a compiled dataset (a folder or s3://) instead of the log.",
        json_schema_extra={"metavar": "DIR"},
    )
    experiments: Path | None = Field(
        default=None,
        description="JSON file of experiment definitions (`prefpair experiments list --json`, GET /v1/experiments, "
        "or the SDK's list_experiments): names and arms of the experiment sections; unset: read from the "
        "experiments topic when Kafka is configured.",
        json_schema_extra={"metavar": "FILE"},
    )
    title: str = Field(default="prefpair preference report", description="Title of the page.")
    implicit_rules: Path | None = Field(
        default=None,
        description="TOML file of the implicit rules to check against explicit judgments (default: the shipped rules, "
        "as compile uses them).",
        json_schema_extra={"metavar": "FILE"},
    )


REPORT_FLAGS = Flags(ReportConfig, env_prefix="PREFPAIR_REPORT_")
"""``--seed``, ``PREFPAIR_REPORT_SEED``, ...: the flags and variables of :class:`ReportConfig`."""
