"""Request and response bodies of the HTTP API (they shape the OpenAPI spec at ``/openapi.json``).

These models only fix JSON types; every rule of the contract (a score within its config, a
known category, a pairwise judgment naming two different candidates...) is checked by
:meth:`prefpair.schemas.FeedbackEvent.parse` when the event is built, exactly as the SDK does.
Field names follow the Avro contract; LangSmith's ``run_id`` and ``feedback_config`` are
accepted as aliases of ``request_id`` and ``config``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from prefpair.schemas import FeedbackCategory, FeedbackType, JudgmentKind, PairwiseOutcome, SourceType
from prefpair.service.config import TokenReuse
from prefpair.service.jsonbody import MAX_JSON_DEPTH, TOO_DEEP, nesting_depth

ID_MAX = 256
TEXT_MAX = 64 * 1024


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConfigBody(_Body):
    """What values a judgment may take (``feedback.avsc`` FeedbackConfig)."""

    type: FeedbackType
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    categories: list[FeedbackCategory] = Field(default_factory=list, max_length=1000)


class SourceBody(_Body):
    """Who judged; defaults to ``API`` with the caller's key fingerprint as ``source_id``."""

    type: SourceType
    source_id: str | None = Field(default=None, max_length=ID_MAX)
    model: str | None = Field(default=None, max_length=ID_MAX)
    model_version: str | None = Field(default=None, max_length=ID_MAX)
    run_id: str | None = Field(default=None, max_length=ID_MAX)


def _shallow(value: str | dict[str, Any]) -> str | dict[str, Any]:
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise PydanticCustomError("too_deep", TOO_DEEP)
    return value


TextOrObject = Annotated[str | dict[str, Any], AfterValidator(_shallow)]
"""A comment-like field that also takes free-form JSON: an object nested at most ``MAX_JSON_DEPTH`` levels."""

CORRECTION_HELP = f"A string, or an object (nested at most {MAX_JSON_DEPTH} levels) sent as JSON text."


def text_of(value: TextOrObject | None) -> str | None:
    """A comment or correction as the contract's string (objects become compact JSON)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class _Judgment(_Body):
    kind: JudgmentKind | None = None
    outcome: PairwiseOutcome | None = None
    chosen_id: str | None = Field(default=None, max_length=ID_MAX)
    rejected_id: str | None = Field(default=None, max_length=ID_MAX)
    ranking: list[list[str]] | None = Field(default=None, max_length=1000)
    candidate_id: str | None = Field(default=None, max_length=ID_MAX)
    score: float | None = Field(
        default=None, allow_inf_nan=False, description="A number; true/false count as 1/0."
    )
    value: str | None = Field(default=None, max_length=TEXT_MAX, description="A category label or free text.")
    comment: str | None = Field(default=None, max_length=TEXT_MAX)
    correction: TextOrObject | None = Field(default=None, description=CORRECTION_HELP)
    config: ConfigBody | None = Field(
        default=None, validation_alias=AliasChoices("config", "feedback_config")
    )
    metadata: dict[str, str] = Field(default_factory=dict, max_length=100)
    experiment_id: str | None = Field(
        default=None, min_length=1, max_length=ID_MAX, description="The comparative experiment this judgment is in."
    )
    feedback_group_id: str | None = Field(
        default=None, min_length=1, max_length=ID_MAX, description="Groups judgments given together."
    )


class FeedbackCreate(_Judgment):
    """``POST /v1/feedback``: a new judgment. Repeating an ``id`` with the same body is a no-op."""

    id: str | None = Field(
        default=None, min_length=1, max_length=ID_MAX, description="Feedback id; a new UUID when omitted."
    )
    request_id: str = Field(
        min_length=1, max_length=ID_MAX, validation_alias=AliasChoices("request_id", "run_id")
    )
    key: str = Field(min_length=1, max_length=ID_MAX)
    kind: JudgmentKind | None = Field(default=JudgmentKind.SCORE)
    source: SourceBody | None = None


class FeedbackUpdate(_Judgment):
    """``PATCH /v1/feedback/{id}``: fields to change; omitted (null) fields keep their value."""

    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=ID_MAX,
        validation_alias=AliasChoices("request_id", "run_id"),
        description="Needed only when the feedback is not yet in the log.",
    )
    key: str | None = Field(default=None, min_length=1, max_length=ID_MAX)
    source: SourceBody | None = None


class BatchBody(_Body):
    """``POST /v1/feedback/batch``: several creates, checked all before any is sent."""

    feedback: list[FeedbackCreate] = Field(min_length=1)


class Accepted(BaseModel):
    """The broker acknowledged the event: it is durable and will reach the log."""

    id: str = Field(description="The feedback id.")
    request_id: str
    op: str
    event_id: str
    timestamp_ms: int
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class BatchAccepted(BaseModel):
    accepted: list[Accepted]


class TokenCreate(_Body):
    """``POST /v1/feedback-tokens``: a presigned URL for one request and feedback key."""

    request_id: str = Field(
        min_length=1, max_length=ID_MAX, validation_alias=AliasChoices("request_id", "run_id")
    )
    feedback_key: str = Field(min_length=1, max_length=ID_MAX)
    expires_in: int | None = Field(
        default=None, ge=1, description="Lifetime in seconds (default from config)."
    )
    config: ConfigBody | None = Field(
        default=None, validation_alias=AliasChoices("config", "feedback_config")
    )
    reuse: TokenReuse | None = Field(
        default=None, description="single: one submission; expiry: until it expires."
    )


class TokenIssued(BaseModel):
    id: str = Field(description="The token id (also the default feedback id of a single-use token).")
    token: str
    url: str
    expires_at: str
    request_id: str
    feedback_key: str
    reuse: TokenReuse


class TokenSubmit(_Body):
    """``POST {url}``: the judgment a presigned URL allows (its key, request and config are fixed)."""

    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=ID_MAX,
        description="Expiry-reuse tokens: a client id for safe retries (feedback id tok-TOKEN-ID).",
    )
    score: float | None = Field(default=None, allow_inf_nan=False)
    value: str | None = Field(default=None, max_length=TEXT_MAX)
    comment: str | None = Field(default=None, max_length=TEXT_MAX)
    correction: TextOrObject | None = Field(default=None, description=CORRECTION_HELP)
    candidate_id: str | None = Field(default=None, max_length=ID_MAX)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=100)
    request_id: str | None = Field(default=None, description="If given, must be the token's request.")
    key: str | None = Field(default=None, description="If given, must be the token's feedback key.")


class ErrorBody(BaseModel):
    """Every refusal: a machine code, a message naming the problem, and the field when one is at fault."""

    error: str
    message: str
    field: str | None = None


class FeedbackOut(BaseModel):
    """A resolved feedback from the log: the latest CREATE patched by later UPDATEs."""

    model_config = ConfigDict(extra="allow")

    id: str
    request_id: str
    key: str | None = None
    kind: str | None = None
    score: float | None = None
    value: str | None = None
    comment: str | None = None
    correction: str | None = None
    experiment_id: str | None = None
    feedback_group_id: str | None = None
    created_at: str | None = None
    modified_at: str | None = None
    joined: bool = Field(
        default=True, description="False: an orphan, its inference never reached the log in time."
    )
    orphan_reason: str | None = None


class FeedbackPage(BaseModel):
    items: list[FeedbackOut]
    next_cursor: str | None = None


class RequestOut(BaseModel):
    request_id: str
    inference: dict[str, Any] | None
    feedback: list[FeedbackOut]


class TokenInfo(BaseModel):
    """An issued presigned token as the tokens topic tells it (never the token itself)."""

    id: str
    request_id: str
    feedback_key: str | None = None
    reuse: str | None = None
    issued_at: str | None = None
    expires_at: str | None = None
    issued_by: str | None = Field(default=None, description="Fingerprint of the API key that asked for it.")
    status: str = Field(description="active, used, expired or revoked (the first that applies of revoked, expired).")
    used: bool
    uses: int
    expired: bool
    revoked: bool
    revoked_at: str | None = None
    revoked_by: str | None = None


class TokenList(BaseModel):
    items: list[TokenInfo]


class TokenAuditEvent(BaseModel):
    type: str = Field(description="issued, used or revoked")
    at: str | None = None
    at_ms: int
    instance: str | None = Field(default=None, description="The service instance that recorded it.")
    by: str | None = Field(default=None, description="The API key fingerprint that issued or revoked.")
    client: str | None = Field(default=None, description="The address a use came from.")
    feedback_id: str | None = Field(default=None, description="The feedback a use created.")
    reason: str | None = None


class TokenAudit(BaseModel):
    token: TokenInfo
    events: list[TokenAuditEvent]


class TokenRevoke(_Body):
    """``POST /v1/token-revocations``: revoke one token (``token_id``) or every token of ``request_id``."""

    token_id: str | None = Field(default=None, min_length=1, max_length=ID_MAX)
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=ID_MAX,
        description="Alone: revoke every token of the request issued until now. With token_id: its request "
        "(needed only for a token this service has no record of).",
    )
    reason: str | None = Field(default=None, max_length=TEXT_MAX)


class TokenRevoked(BaseModel):
    request_id: str
    token_id: str | None = None
    revoked: list[str] = Field(description="The ids of the tokens this revocation covers that are on record.")
    revoked_at: str | None = None


class ExperimentCreate(_Body):
    """``POST /v1/experiments``: models (arms) to compare side by side on the same prompts."""

    id: str | None = Field(default=None, min_length=1, max_length=ID_MAX, description="A new id when omitted.")
    name: str = Field(min_length=1, max_length=ID_MAX)
    arms: list[str] = Field(
        min_length=2, max_length=100, description="Model names (every version) or name:version; two at least."
    )
    description: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=100)


class ExperimentOut(BaseModel):
    id: str
    name: str
    arms: list[str]
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    created_at_ms: int


class ExperimentList(BaseModel):
    items: list[ExperimentOut]
