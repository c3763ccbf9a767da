"""What a compile does: one frozen, validated object (formats, pair rules, filters, sampling, split).

Every default lives here; the command line's flags and ``PREFPAIR_COMPILE_*`` variables are
derived from these fields (:data:`COMPILE_FLAGS`, :mod:`prefpair.flags`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Literal, Self, get_args

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.redaction import Pattern
from prefpair.errors import first_problem
from prefpair.flags import Flags
from prefpair.schemas.models import SourceType

Format = Literal[
    "trl",
    "trl_conversational",
    "trl_unpaired",
    "openai",
    "axolotl_chatml_intel",
    "axolotl_chat_template",
]
FORMATS: tuple[Format, ...] = get_args(Format)  # every format, in the order above
SPLIT_ORDER = ("train", "validation", "test")
SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")  # SPDX-ish, lower case as the Hugging Face Hub spells ids
LICENSE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
LICENSE_LINK = re.compile(r"^(https?://[^\s/]+\S*|(?!/)(?!.*\.\.)[A-Za-z0-9._/-]+)$")  # a URL, or a path in the dataset


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate ``data``; any failure becomes a CompileConfigError naming the field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise CompileConfigError(*first_problem(exc, cls.__name__)) from None


class CompileFilters(_Frozen):
    """Which judgments and pairs to keep. Empty lists keep everything."""

    since_ms: int | None = Field(
        default=None,
        ge=0,
        description="keep judgments at or after (epoch ms, or ISO-8601 such as 2026-11-01; UTC if no zone)",
        json_schema_extra={"flag": "--since", "metavar": "TIME"},
    )
    until_ms: int | None = Field(
        default=None,
        ge=0,
        description="keep judgments before (epoch ms, or ISO-8601; UTC if no zone)",
        json_schema_extra={"flag": "--until", "metavar": "TIME"},
    )
    models: tuple[str, ...] = Field(
        default=(),
        description="keep pairs whose outputs all come from these models",
        json_schema_extra={"flag": "--model"},
    )
    model_versions: tuple[str, ...] = Field(
        default=(), description="... from these model versions", json_schema_extra={"flag": "--model-version"}
    )
    source_types: tuple[str, ...] = Field(
        default=(),
        description="keep judgments from these source types (IMPLICIT:<rule> for one implicit rule's pairs)",
        json_schema_extra={"flag": "--source-type"},
    )
    keys: tuple[str, ...] = Field(
        default=(), description="keep judgments with these feedback keys", json_schema_extra={"flag": "--key"}
    )
    environments: tuple[str, ...] = Field(
        default=(), description="keep requests from these environments", json_schema_extra={"flag": "--environment"}
    )
    users: tuple[str, ...] = Field(
        default=(), description="keep requests of these user ids", json_schema_extra={"flag": "--user"}
    )
    tags: tuple[str, ...] = Field(
        default=(), description="keep requests carrying any of these tags", json_schema_extra={"flag": "--tag"}
    )

    @field_validator("since_ms", "until_ms", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        """An ISO-8601 time (UTC when it names no zone) as epoch milliseconds; numbers pass."""
        if not isinstance(value, str) or value.strip().isdigit():
            return value
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expected epoch milliseconds or an ISO-8601 time, got {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)

    @field_validator("source_types")
    @classmethod
    def _source_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {s.value for s in SourceType}
        # IMPLICIT:<rule> names the pairs of one implicit rule (rule names are lower case)
        upper = tuple(f"IMPLICIT:{v.split(':', 1)[1].lower()}" if v.upper().startswith("IMPLICIT:") else v.upper()
                      for v in value)  # fmt: skip
        for v in upper:
            if v not in known and not (v.startswith("IMPLICIT:") and len(v) > len("IMPLICIT:")):
                raise ValueError(
                    f"unknown source type {v!r}; expected one of {', '.join(sorted(known))} or IMPLICIT:<rule>"
                )
        return upper

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.since_ms is not None and self.until_ms is not None and self.since_ms >= self.until_ms:
            raise ValueError(f"since_ms {self.since_ms} is not before until_ms {self.until_ms}")
        return self


class SamplingConfig(_Frozen):
    """Seeded sampling of the cleaned pairs."""

    max_pairs_per_prompt: int | None = Field(default=None, ge=1, description="cap of pairs per prompt")
    max_pairs: int | None = Field(default=None, ge=1, description="cap of pairs in the whole dataset")
    stratify_by: Literal["source", "model"] | None = Field(
        default=None, description="caps pick round-robin across source types or chosen models"
    )
    balance_position: bool = Field(
        default=False, description="as many pairs whose chosen output was shown first as shown second"
    )
    strategy: Literal["uncertain", "disagreement", "coverage", "ipw"] | None = Field(
        default=None,
        description="informative sampling (seeded), before the caps: `uncertain` keeps the pairs of smallest margin "
        "(judge or reward-model scores close together), `disagreement` the pairs sources judged both ways, "
        "`coverage` round-robin over pairs of models x prompt clusters (a prompt's first three words), each up to "
        "--strategy-pairs; `ipw` resamples each source type's pairs by inverse propensity of the chosen output's "
        "position (shown first or second), so position bias no longer predicts the label",
    )
    strategy_pairs: int | None = Field(
        default=None, ge=1, description="pairs the uncertain, disagreement and coverage strategies keep"
    )

    @model_validator(mode="after")
    def _strategy_size(self) -> Self:
        sized = self.strategy in ("uncertain", "disagreement", "coverage")
        if sized and self.strategy_pairs is None:
            raise ValueError(f"strategy {self.strategy} needs strategy_pairs (how many pairs to keep)")
        if not sized and self.strategy_pairs is not None:
            raise ValueError(f"strategy_pairs applies to the uncertain, disagreement and coverage strategies, "
                             f"not {self.strategy}")
        return self


class CardConfig(_Frozen):
    """The dataset card's metadata (the Hugging Face YAML header of README.md)."""

    pretty_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the card's title (default: derived from the data: its models and feedback sources)",
    )
    license: str = Field(
        default="unknown",
        description="license id, SPDX-ish as the Hugging Face Hub spells it (apache-2.0, cc-by-4.0, mit, ...); "
        "`other` needs --license-name and --license-link",
    )
    license_name: str | None = Field(
        default=None,
        validate_default=True,
        description="with license `other`: a short id of the license, such as acme-data-1.0",
    )
    license_link: str | None = Field(
        default=None,
        validate_default=True,
        description="with license `other`: a URL of the license text, or a path in the dataset folder (LICENSE.md)",
    )

    @field_validator("license")
    @classmethod
    def _license(cls, value: str) -> str:
        lowered = value.strip().lower()
        if not LICENSE_ID.match(lowered):
            raise ValueError(f"expected a license id such as apache-2.0, cc-by-4.0, mit or other, got {value!r}")
        return lowered

    @field_validator("license_name", "license_link")
    @classmethod
    def _other_license(cls, value: str | None, info: ValidationInfo) -> str | None:
        license_id = info.data.get("license")
        if license_id is None:  # the license itself failed: that is the error to report
            return value
        if license_id != "other":
            if value is not None:
                raise ValueError(f"only applies to license `other`, not {license_id!r}")
            return None
        if value is None or not value.strip():
            raise ValueError("required with license `other` (the Hub shows it in place of a known license)")
        value = value.strip()
        pattern = LICENSE_NAME if info.field_name == "license_name" else LICENSE_LINK
        if not pattern.match(value):
            expected = (
                "lower-case letters, digits, dots and dashes, such as acme-data-1.0"
                if info.field_name == "license_name"
                else "an http(s) URL or a relative path in the dataset folder such as LICENSE.md"
            )
            raise ValueError(f"expected {expected}, got {value!r}")
        return value


class CompileConfig(_Frozen):
    """Everything a compile needs besides its input log and output directory."""

    formats: tuple[Format, ...] = Field(
        default=FORMATS, min_length=1, description="output formats", json_schema_extra={"flag": "--format"}
    )
    rankings: Literal["all_pairs", "best_worst"] = Field(
        default="all_pairs", description="pairs from a ranking: every better/worse pair, or best against worst"
    )
    min_margin: float = Field(
        default=0.0, ge=0.0, description="score pairs need a score difference of at least this (and above 0)"
    )
    contradictions: Literal["majority", "latest", "drop"] = Field(
        default="majority", description="judgments in both directions on one prompt and pair of outputs"
    )
    filters: CompileFilters = Field(default_factory=CompileFilters)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.9, "test": 0.1},
        description="split name and fraction of prompts (by prompt hash; fractions sum to 1)",
        json_schema_extra={"flag": "--split", "metavar": "NAME=FRACTION"},
    )
    seed: int = Field(default=0, description="seed of every sampling decision and of the output order")
    include_margin: bool = Field(
        default=False,
        description="add a `margin` column to paired formats (TRL RewardTrainer subtracts it inside its loss): "
        "the preference's strength in [0, 1] times the margin scale (--margin-scale). Strength: 1 for a pairwise "
        "preference and a correction; rank gap / (levels - 1) in a ranking; score gap / (max - min) for scores "
        "with a declared range (0/1 thumbs count as [0, 1]), else tanh(gap / 2) (scores as reward-model logits)",
    )
    margin_scale: float = Field(
        default=1.0,
        gt=0.0,
        le=10.0,
        allow_inf_nan=False,
        description="the `margin` of a full-strength preference; with 1, RewardTrainer's loss starts at most at "
        "log(1 + e) = 1.31 instead of log 2 = 0.69",
    )
    include_ids: bool = Field(
        default=False,
        description="add id columns (pair, prompt, request, feedback); `openai` keeps its three keys and gets "
        "them in <split>.meta.jsonl beside, one line per line",
    )
    include_provenance: bool = Field(
        default=False,
        description="add provenance columns (derivation, source, models, scores); `openai`: in <split>.meta.jsonl",
    )
    text_prompt: Literal["drop", "fold"] = Field(
        default="drop",
        description="how trl and trl_unpaired (prompt as text) write a prompt: `drop` leaves the system prompt out "
        "and joins chat turns by a blank line, without roles; `fold` writes the system prompt and every turn as "
        "'Role: content' blocks separated by a blank line, ending with an 'Assistant:' block",
    )
    implicit: Literal["include", "exclude", "only"] = Field(
        default="include",
        description="pairs from implicit signals (copy, edit, regenerate, dwell, ...; source type IMPLICIT:<rule>): "
        "`include` mixes them with explicit judgments, `exclude` leaves them out, `only` keeps nothing else",
    )
    implicit_rules: str | None = Field(
        default=None,
        description="a TOML file of the rules that turn signals into pairs, each with its confidence (the pair's "
        "margin); default: the shipped prefpair/compile/implicit_rules.toml",
        json_schema_extra={"metavar": "FILE"},
    )
    card: CardConfig = Field(default_factory=CardConfig)
    incremental: bool = Field(
        default=False, description="emit only pairs not emitted by earlier runs, into a new version dir"
    )
    memory_limit: str | None = Field(
        default=None, description="DuckDB memory limit such as 4GB; it spills to disk beyond (default: half the RAM)"
    )
    threads: int = Field(default=2, ge=1, le=256, description="DuckDB threads")
    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="where the stages run: `duckdb` in this process, or `spark` (Apache Spark, the `spark` extra; "
        "same log and seed: the same dataset files); `spark` reads the log's files from every executor, so on "
        "a cluster the log must be on storage they all see",
    )
    spark_master: str = Field(
        default="local[2]",
        min_length=1,
        description="with --engine spark: the Spark master URL (local[N] runs Spark inside this process's JVM "
        "on N cores; spark://host:7077, yarn, k8s://... a cluster)",
        json_schema_extra={"metavar": "URL"},
    )
    redact: bool = Field(
        default=True,
        description="replace emails, phone numbers, card numbers (Luhn-checked), IP addresses, API keys and tokens "
        "in the written prompts and completions by typed placeholders such as <EMAIL>, counted in the manifest "
        "and the card (prefpair.compile.redaction)",
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="more to redact: NAME=REGEX, each match becomes <NAME> (repeat the flag; a comma separates "
        "patterns, so write a pattern without one)",
        json_schema_extra={"flag": "--redact-pattern", "metavar": "NAME=REGEX"},
    )

    @field_validator("redact_patterns")
    @classmethod
    def _redact_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, regex in value.items():
            try:
                Pattern.parse(f"{name}={regex}")
            except CompileConfigError as exc:
                raise ValueError(exc.reason) from None
        return value

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: tuple[Format, ...]) -> tuple[Format, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a format is listed twice")
        return tuple(f for f in FORMATS if f in value)  # canonical order

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("at least one split is required")
        for name, fraction in value.items():
            if not SPLIT_NAME.match(name):
                raise ValueError(f"bad split name {name!r}")
            if not (0.0 <= fraction <= 1.0) or math.isnan(fraction):
                raise ValueError(f"fraction of {name!r} is {fraction}, not in [0, 1]")
        total = sum(value.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"split fractions sum to {total}, not 1")
        ordered = sorted(value, key=lambda n: (SPLIT_ORDER.index(n) if n in SPLIT_ORDER else len(SPLIT_ORDER), n))
        return {name: value[name] for name in ordered}

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not SIZE.match(value.strip()):
            raise ValueError(f"expected a size like 4GB or 512MB, got {value!r}")
        return value.strip()


COMPILE_FLAGS = Flags(CompileConfig, env_prefix="PREFPAIR_COMPILE_")
"""``--format``, ``--since``, ``PREFPAIR_COMPILE_SEED``, ...: the flags and variables of :class:`CompileConfig`."""
