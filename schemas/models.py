"""Pydantic models mirroring ``inference.avsc`` and ``feedback.avsc`` field for field.

The ``.avsc`` files are the source of truth; ``tests/test_schemas.py`` fails if a model and
its schema differ in a field name, order, type or nullability. The models add the checks
Avro cannot express (an empty prompt, chosen equal to rejected, a score outside its
config...), raising :class:`~prefpair.schemas.exceptions.ValidationError` that names the field.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefpair.errors import first_problem
from prefpair.schemas.exceptions import ValidationError


def now_ms() -> int:
    """The current time as the contract's timestamps are: epoch milliseconds."""
    return time.time_ns() // 1_000_000


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate ``data``; any failure becomes a ValidationError naming the field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError(*first_problem(exc, cls.__name__)) from None

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes (enums as their symbols)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- enums
class FeedbackOp(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class JudgmentKind(StrEnum):
    PAIRWISE = "PAIRWISE"
    RANKING = "RANKING"
    SCORE = "SCORE"


class PairwiseOutcome(StrEnum):
    PREFERRED = "PREFERRED"
    TIE = "TIE"
    BOTH_BAD = "BOTH_BAD"


class FeedbackType(StrEnum):
    CONTINUOUS = "CONTINUOUS"
    CATEGORICAL = "CATEGORICAL"
    FREEFORM = "FREEFORM"


class SourceType(StrEnum):
    HUMAN_ANNOTATOR = "HUMAN_ANNOTATOR"
    APP_USER = "APP_USER"
    MODEL_JUDGE = "MODEL_JUDGE"
    REWARD_MODEL = "REWARD_MODEL"
    API = "API"


# --------------------------------------------------------------------------- inference
class Message(_Record):
    role: str = Field(min_length=1)
    content: str
    name: str | None = None


class Candidate(_Record):
    candidate_id: str = Field(min_length=1)
    text: str | None = None
    messages: list[Message] | None = None
    model_name: str = Field(min_length=1)
    model_version: str | None = None
    model_checkpoint: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    sampling_extra: dict[str, str] = Field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None

    @model_validator(mode="after")
    def _has_output(self) -> Self:
        if self.text is None and not self.messages:
            raise ValidationError("candidates.text", f"candidate {self.candidate_id!r} has no text or messages")
        return self


class InferenceEvent(_Record):
    event_id: str = Field(min_length=1)
    request_id: str = Field(min_length=1)
    timestamp_ms: int = Field(ge=0)
    system_prompt: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    candidates: list[Candidate]
    presentation_order: list[str] = Field(default_factory=list)
    user_id: str | None = None
    session_id: str | None = None
    environment: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (self.prompt and self.prompt.strip()) and not self.messages:
            raise ValidationError("prompt", "empty: give a prompt text or chat messages")
        if not self.candidates:
            raise ValidationError("candidates", "at least one candidate output is required")
        ids = [c.candidate_id for c in self.candidates]
        if len(set(ids)) != len(ids):
            raise ValidationError("candidates.candidate_id", "candidate ids must be unique within a request")
        if self.presentation_order:
            unknown = [c for c in self.presentation_order if c not in ids]
            if unknown:
                raise ValidationError("presentation_order", f"unknown candidate id {unknown[0]!r}")
            if len(set(self.presentation_order)) != len(self.presentation_order):
                raise ValidationError("presentation_order", "a candidate is listed twice")
        return self

    def candidate_ids(self) -> list[str]:
        return [c.candidate_id for c in self.candidates]


# --------------------------------------------------------------------------- feedback
class FeedbackCategory(_Record):
    label: str = Field(min_length=1)
    value: float | None = None


class FeedbackConfig(_Record):
    type: FeedbackType
    min: float | None = None
    max: float | None = None
    categories: list[FeedbackCategory] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValidationError("config.min", f"min {self.min} is above max {self.max}")
        if self.type is FeedbackType.CATEGORICAL and not self.categories:
            raise ValidationError("config.categories", "a categorical feedback config needs categories")
        return self


class FeedbackSource(_Record):
    type: SourceType
    source_id: str | None = None
    model: str | None = None
    model_version: str | None = None
    run_id: str | None = None


class FeedbackEvent(_Record):
    event_id: str = Field(min_length=1)
    feedback_id: str = Field(min_length=1)
    op: FeedbackOp
    request_id: str = Field(min_length=1)
    timestamp_ms: int = Field(ge=0)
    key: str | None = None
    kind: JudgmentKind | None = None
    outcome: PairwiseOutcome | None = None
    chosen_id: str | None = None
    rejected_id: str | None = None
    ranking: list[list[str]] | None = None
    candidate_id: str | None = None
    score: float | None = None
    value: str | None = None
    comment: str | None = None
    correction: str | None = None
    config: FeedbackConfig | None = None
    source: FeedbackSource | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.op is FeedbackOp.CREATE:
            if not self.key:
                raise ValidationError("key", "required when creating feedback")
            if self.kind is None:
                raise ValidationError("kind", "required when creating feedback")
            if self.source is None:
                raise ValidationError("source", "required when creating feedback")
        if self.op is FeedbackOp.DELETE:
            return self
        if self.kind is JudgmentKind.PAIRWISE:
            self._check_pairwise()
        elif self.kind is JudgmentKind.RANKING:
            self._check_ranking()
        elif (
            self.kind is JudgmentKind.SCORE
            and self.op is FeedbackOp.CREATE
            and self.score is None
            and self.value is None
            and self.correction is None
            and self.comment is None
        ):
            raise ValidationError("score", "a score, value, correction or comment is required")
        if self.key is not None and not self.key.strip():
            raise ValidationError("key", "must not be blank")
        self.check_against_config()
        return self

    def _check_pairwise(self) -> None:
        if self.outcome is None:
            raise ValidationError("outcome", "required for a pairwise judgment")
        if not self.chosen_id:
            raise ValidationError("chosen_id", "required for a pairwise judgment")
        if not self.rejected_id:
            raise ValidationError("rejected_id", "required for a pairwise judgment")
        if self.chosen_id == self.rejected_id:
            raise ValidationError("rejected_id", f"equals chosen_id {self.chosen_id!r}")

    def _check_ranking(self) -> None:
        if not self.ranking or not any(self.ranking):
            raise ValidationError("ranking", "required and non-empty for a ranking")
        flat = [c for group in self.ranking for c in group]
        if any(not c for c in flat):
            raise ValidationError("ranking", "empty candidate id")
        if any(not group for group in self.ranking):
            raise ValidationError("ranking", "empty tie group")
        if len(set(flat)) != len(flat):
            raise ValidationError("ranking", "a candidate appears twice")
        if len(flat) < 2:
            raise ValidationError("ranking", "needs at least two candidates")

    def check_against_config(self) -> None:
        """Check score/value against the feedback config this event carries."""
        config = self.config
        if config is None:
            return
        if config.type is FeedbackType.CONTINUOUS and self.score is not None:
            if config.min is not None and self.score < config.min:
                raise ValidationError("score", f"{self.score} is below the config's min {config.min}")
            if config.max is not None and self.score > config.max:
                raise ValidationError("score", f"{self.score} is above the config's max {config.max}")
        if config.type is FeedbackType.CATEGORICAL:
            labels = {c.label for c in config.categories}
            values = {c.value for c in config.categories if c.value is not None}
            if self.value is not None and self.value not in labels:
                raise ValidationError(
                    "value", f"{self.value!r} is not an allowed category ({', '.join(sorted(labels))})"
                )
            if self.score is not None and values and self.score not in values:
                raise ValidationError("score", f"{self.score} is not the value of an allowed category")

    def referenced_candidates(self) -> list[str]:
        """Candidate ids this judgment names (to check against the inference)."""
        ids = [c for c in (self.chosen_id, self.rejected_id, self.candidate_id) if c]
        for group in self.ranking or []:
            ids.extend(group)
        return ids
