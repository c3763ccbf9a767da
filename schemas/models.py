"""Pydantic models mirroring ``inference.avsc``, ``feedback.avsc`` and ``signal.avsc`` field for field.

The ``.avsc`` files are the source of truth; ``tests/test_schemas.py`` fails if a model and
its schema differ in a field name, order, type or nullability. The models add the checks
Avro cannot express (an empty prompt, chosen equal to rejected, a score outside its
config...), raising :class:`~prefpair.schemas.exceptions.ValidationError` that names the field.
Those rules live in :mod:`prefpair.schemas.rules`, shared with the consumer's check of decoded
records (:data:`check_inference_record`, :data:`check_feedback_record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefpair.errors import first_problem
from prefpair.schemas import rules
from prefpair.schemas.exceptions import ValidationError

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
"""Bounds of an Avro ``int``: the model refuses a number beyond them, naming the field."""
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
"""Bounds of an Avro ``long``."""


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
    max_tokens: int | None = Field(default=None, ge=INT_MIN, le=INT_MAX)
    seed: int | None = Field(default=None, ge=LONG_MIN, le=LONG_MAX)
    sampling_extra: dict[str, str] = Field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int | None = Field(default=None, ge=INT_MIN, le=INT_MAX)
    completion_tokens: int | None = Field(default=None, ge=INT_MIN, le=INT_MAX)
    latency_ms: float | None = None

    @model_validator(mode="after")
    def _has_output(self) -> Self:
        rules.check_candidate(self)
        return self


class InferenceEvent(_Record):
    event_id: str = Field(min_length=1)
    request_id: str = Field(min_length=1)
    timestamp_ms: int = Field(ge=0, le=LONG_MAX)
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
    parent_request_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        rules.check_inference(self)
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
        rules.check_feedback_config(self)
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
    timestamp_ms: int = Field(ge=0, le=LONG_MAX)
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
    experiment_id: str | None = Field(default=None, min_length=1)
    feedback_group_id: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        rules.check_feedback(self)
        return self

    def check_against_config(self) -> None:
        """Check score/value against the feedback config this event carries."""
        rules.check_against_config(self)

    def referenced_candidates(self) -> list[str]:
        """Candidate ids this judgment names (to check against the inference)."""
        ids = [c for c in (self.chosen_id, self.rejected_id, self.candidate_id) if c]
        for group in self.ranking or []:
            ids.extend(group)
        return ids


# --------------------------------------------------------------------------- signals
SIGNAL_KINDS = rules.SIGNAL_KINDS


class SignalEvent(_Record):
    """An implicit signal (``signal.avsc``): what the user did with an output; ``kind`` is one of
    :data:`SIGNAL_KINDS`, checked by :func:`prefpair.schemas.rules.check_signal`."""

    signal_id: str = Field(min_length=1)
    request_id: str = Field(min_length=1)
    timestamp_ms: int = Field(ge=0, le=LONG_MAX)
    kind: str = Field(min_length=1)
    candidate_id: str | None = None
    value: float | None = None
    text: str | None = None
    dwell_ms: int | None = Field(default=None, ge=LONG_MIN, le=LONG_MAX)
    source: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        rules.check_signal(self)
        return self


INFERENCE_RULES: dict[type[BaseModel], Callable[[Any], None]] = {
    InferenceEvent: rules.check_inference, Candidate: rules.check_candidate
}
"""The rule each inference model's validator runs, by model: for the checks of plain dicts."""

FEEDBACK_RULES: dict[type[BaseModel], Callable[[Any], None]] = {
    FeedbackEvent: rules.check_feedback, FeedbackConfig: rules.check_feedback_config
}
"""The rule each feedback model's validator runs, by model: for the checks of plain dicts."""

check_inference_record = rules.record_check(InferenceEvent, INFERENCE_RULES)
"""Check a decoded inference record (types already guaranteed by Avro) against the model's constraints and rules."""

check_feedback_record = rules.record_check(FeedbackEvent, FEEDBACK_RULES)
"""Check a decoded feedback record (types already guaranteed by Avro) against the model's constraints and rules."""

check_signal_record = rules.record_check(SignalEvent, {SignalEvent: rules.check_signal})
"""Check a decoded signal record against the model's constraints and the signal rules."""
