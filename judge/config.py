"""What a judge run does: one frozen, validated object (what to judge, by whom, how fast, at what price).

Every default lives here; the command line's flags and ``PREFPAIR_JUDGE_*`` variables are derived
from these fields (:data:`JUDGE_FLAGS`, :mod:`prefpair.flags`). The selection reuses compile's
filters where they mean the same thing (time, model, model version, environment, user, tag), with
the same spellings (``--since 2026-11-01``, ``--model chat-large``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from prefpair.compile.config import CompileFilters
from prefpair.flags import Flags
from prefpair.judge.exceptions import JudgeConfigError
from prefpair.storage import Location

JudgeKind = Literal["pairwise", "score", "ranking"]
JudgeSourceType = Literal["MODEL_JUDGE", "REWARD_MODEL"]

DEFAULT_KEYS: dict[str, str] = {"pairwise": "preference", "score": "judge_score", "ranking": "ranking"}
"""The feedback key of a kind of judgment when ``--key`` is not given (pairwise: the SDK's own default)."""


class JudgeSelection(BaseModel):
    """Which logged inferences are judged, and which of their candidates. Empty lists keep everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since_ms: int | None = Field(
        default=None,
        ge=0,
        description="judge inferences logged at or after (epoch ms, or ISO-8601 such as 2026-11-01; UTC if no zone)",
        json_schema_extra={"flag": "--since", "metavar": "TIME"},
    )
    until_ms: int | None = Field(
        default=None,
        ge=0,
        description="judge inferences logged before (epoch ms, or ISO-8601; UTC if no zone)",
        json_schema_extra={"flag": "--until", "metavar": "TIME"},
    )
    models: tuple[str, ...] = Field(
        default=(),
        description="judge only the candidates of these models (a pair or ranking needs two of them)",
        json_schema_extra={"flag": "--model"},
    )
    model_versions: tuple[str, ...] = Field(
        default=(), description="... of these model versions", json_schema_extra={"flag": "--model-version"}
    )
    environments: tuple[str, ...] = Field(
        default=(), description="judge requests from these environments", json_schema_extra={"flag": "--environment"}
    )
    users: tuple[str, ...] = Field(
        default=(), description="judge requests of these user ids", json_schema_extra={"flag": "--user"}
    )
    tags: tuple[str, ...] = Field(
        default=(), description="judge requests carrying any of these tags", json_schema_extra={"flag": "--tag"}
    )
    sample: int | None = Field(
        default=None,
        ge=1,
        description="judge a seeded sample of this many requests (the same seed picks the same requests)",
    )
    seed: int = Field(default=0, description="seed of the sample and of the ranking judges' presentation order")

    @field_validator("since_ms", "until_ms", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        """Times parse as compile's ``--since`` / ``--until`` do (one parser for both commands)."""
        if value is None:
            return None
        return CompileFilters.model_validate({"since_ms": value}).since_ms

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.since_ms is not None and self.until_ms is not None and self.since_ms >= self.until_ms:
            raise ValueError(f"since_ms {self.since_ms} is not before until_ms {self.until_ms}")
        return self


class JudgeConfig(BaseModel):
    """Everything a judge run needs besides its settings (cluster, topics, home)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: JudgeKind = Field(
        default="pairwise",
        description="`pairwise`: every pair of a request's candidates, asked in both presentation orders; "
        "`score`: each candidate alone; `ranking`: all of a request's candidates at once",
    )
    key: str | None = Field(
        default=None,
        min_length=1,
        description="feedback key of the judgments (default: preference, judge_score or ranking by --kind)",
    )
    evaluator: str | None = Field(
        default=None,
        description="a Python evaluator: an entry point name of the `prefpair.judges` group (`length` ships "
        "with prefpair) or module:function",
        json_schema_extra={"metavar": "NAME|MODULE:FUNCTION"},
    )
    endpoint: str | None = Field(
        default=None,
        description="base URL of an OpenAI-compatible API (POST <url>/chat/completions), e.g. "
        "https://api.openai.com/v1; the key comes from PREFPAIR_JUDGE_API_KEY",
        json_schema_extra={"metavar": "URL"},
    )
    judge_model: str | None = Field(default=None, min_length=1, description="with --endpoint: the model to ask")
    api_key: SecretStr | None = Field(
        default=None,
        description="bearer token of the endpoint (environment only, never a flag: flags show in `ps`)",
        json_schema_extra={"flag": None},
    )
    prompt_template: Path | None = Field(
        default=None,
        description="with --endpoint: a prompt template file ($prompt, $system_prompt, $response_a, $response_b, "
        "$response, $responses, $labels, $key, $min, $max; a line `---` splits system from user message); "
        "default: a built-in template per kind",
        json_schema_extra={"metavar": "FILE"},
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="with --endpoint: sampling temperature")
    json_mode: bool = Field(
        default=True, description="with --endpoint: ask for response_format json_object (turn off for servers "
        "that refuse it; the answer must still be JSON)",
    )  # fmt: skip
    evaluator_version: str | None = Field(
        default=None, min_length=1, description="version of the evaluator, recorded as the source's model_version"
    )
    source_type: JudgeSourceType = Field(default="MODEL_JUDGE", description="source type of the judgments")
    run_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="id of the run (default: derived from the evaluator, kind, key, template and selection, so "
        "the same command resumes the same run and writes nothing twice)",
    )
    experiment_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the comparative experiment the judgments belong to (defined first: `prefpair experiments "
        "create`); judge the candidates of its arms (--model) so the report's head-to-head section counts them",
        json_schema_extra={"metavar": "ID"},
    )
    feedback_group_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="a feedback group id carried by every judgment of the run (judgments given together)",
        json_schema_extra={"metavar": "ID"},
    )
    selection: JudgeSelection = Field(default_factory=JudgeSelection)
    score_min: float = Field(default=1.0, allow_inf_nan=False, description="score judges: lowest score")
    score_max: float = Field(default=10.0, allow_inf_nan=False, description="score judges: highest score")
    concurrency: int = Field(default=4, ge=1, le=256, description="questions in flight at once (threads)")
    rate: float | None = Field(
        default=None, gt=0.0, description="at most this many questions per second (default: no limit)"
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, description="retries of a question on HTTP 429, 5xx, a timeout or a lost connection"
    )
    backoff_s: float = Field(
        default=0.5, gt=0.0, le=60.0, description="first retry delay in seconds, doubled at each retry (a server's "
        "Retry-After wins), with jitter",
        json_schema_extra={"flag": "--backoff"},
    )  # fmt: skip
    timeout_s: float = Field(
        default=60.0, gt=0.0, description="seconds to wait for one answer", json_schema_extra={"flag": "--timeout"}
    )
    prompt_price_per_1k: float = Field(default=0.0, ge=0.0, description="price of 1,000 prompt tokens (for the cost)")
    completion_price_per_1k: float = Field(
        default=0.0, ge=0.0, description="price of 1,000 completion tokens (for the cost)"
    )
    checkpoint_every: int = Field(
        default=50, ge=1, description="judgments between checkpoints (flush to Kafka, then the run state on disk)"
    )
    log_dir: Location | None = Field(
        default=None, description="the Parquet log, a folder or s3://bucket/prefix; unset means <home>/log"
    )
    progress: bool = Field(default=True, description="a progress bar on stderr")

    @model_validator(mode="after")
    def _score_range(self) -> Self:
        if self.score_min >= self.score_max:
            raise ValueError(f"score_min {self.score_min:g} is not below score_max {self.score_max:g}")
        return self

    def check_evaluator(self) -> None:
        """Refuse a config that names no evaluator, two, or an endpoint without its model.

        Checked when a run starts rather than when the config is built, so each option can be
        loaded (and tested) on its own.
        """
        if (self.evaluator is None) == (self.endpoint is None):
            raise JudgeConfigError(
                "evaluator", "give exactly one of --evaluator (a Python callable) and --endpoint (an HTTP API)"
            )
        if self.endpoint is not None:
            if not self.endpoint.startswith(("http://", "https://")):
                raise JudgeConfigError("endpoint", f"must be an http(s) URL, got {self.endpoint!r}")
            if self.judge_model is None:
                raise JudgeConfigError("judge_model", "--endpoint needs --judge-model (the model the API should ask)")

    @property
    def feedback_key(self) -> str:
        return self.key or DEFAULT_KEYS[self.kind]

    @property
    def evaluator_name(self) -> str:
        """The source id of the judgments: the Python evaluator's spec, or the endpoint's model (not its URL:
        the same model behind another address or proxy is the same judge, and resumes the same run)."""
        return self.evaluator if self.evaluator is not None else str(self.judge_model)

    def definition(self, template_text: str | None) -> dict[str, Any]:
        """What makes two runs the same run: evaluator, kind, key, template, scale, source and selection,
        and the experiment and feedback group when given (only then, so the ids of runs without them stay)."""
        tags = {name: getattr(self, name) for name in ("experiment_id", "feedback_group_id") if getattr(self, name)}
        return tags | {
            "kind": self.kind,
            "key": self.feedback_key,
            "evaluator": self.evaluator_name,
            "evaluator_version": self.evaluator_version,
            "template_sha256": None if template_text is None else hashlib.sha256(template_text.encode()).hexdigest(),
            "temperature": self.temperature if self.endpoint else None,
            "score_range": [self.score_min, self.score_max] if self.kind == "score" else None,
            "source_type": self.source_type,
            "selection": self.selection.model_dump(mode="json"),
        }

    def resolved_run_id(self, template_text: str | None) -> str:
        """``run_id``, or one derived from :meth:`definition` (``judge-`` + 16 hex digits)."""
        if self.run_id is not None:
            return self.run_id
        digest = hashlib.sha256(json.dumps(self.definition(template_text), sort_keys=True).encode()).hexdigest()
        return f"judge-{digest[:16]}"


JUDGE_FLAGS = Flags(JudgeConfig, env_prefix="PREFPAIR_JUDGE_")
"""``--evaluator``, ``--endpoint``, ``PREFPAIR_JUDGE_API_KEY``, ...: the flags and variables of :class:`JudgeConfig`."""
