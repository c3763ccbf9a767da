"""From the logger's call arguments to the checked records fastavro writes.

The argument helpers accept the loose forms serving code passes (a source type's name in any
case, a flat ranking, ...) and hand the record functions the forms the contract has; they raise
:class:`~prefpair.schemas.ValidationError` naming the field. The record functions check an
event's fields against the contract (the models' constraints and rules, without building the
models when the fields are plain values) and return the dict to encode: these run on every log call.
"""

from __future__ import annotations

import math
import os
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from prefpair.producers.records import Contract, plain_check
from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.models import (
    FEEDBACK_RULES,
    INFERENCE_RULES,
    Candidate,
    FeedbackConfig,
    FeedbackEvent,
    FeedbackSource,
    InferenceEvent,
    JudgmentKind,
    PairwiseOutcome,
    SourceType,
)
from prefpair.schemas.registry import FEEDBACK, INFERENCE

SourceLike = FeedbackSource | Mapping[str, Any] | SourceType | str
ConfigLike = FeedbackConfig | Mapping[str, Any]


def new_id() -> str:
    """A fresh request or feedback id: uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


_event_ids = random.Random()  # seeded from os.urandom (624 words of state)
os.register_at_fork(after_in_child=_event_ids.seed)  # a forked child draws its own ids, not its parent's


def new_event_id() -> str:
    """A fresh event id: 128 random bits as 32 hex digits, as unique as uuid4's.

    Drawn from a generator the OS seeded, not from ``os.urandom`` per id: that is a system call
    on every log call, a microsecond on a busy machine. Event ids de-duplicate; they guard nothing.
    """
    return _event_ids.randbytes(16).hex()


# --------------------------------------------------------------------------- records
# These run on every log call: plain fields are encoded as they are once checked (see
# :mod:`prefpair.producers.records`); others are validated by the models and read straight off
# them into dicts: the same content as ``model_dump()`` (the models forbid extra fields) at a
# tenth of its cost.
def _inference_dict(event: InferenceEvent) -> dict[str, Any]:
    record = dict(event.__dict__)
    if event.messages is not None:
        record["messages"] = [m.__dict__ for m in event.messages]
    record["candidates"] = [_candidate_dict(c) for c in event.candidates]
    return record


def _candidate_dict(candidate: Candidate) -> dict[str, Any]:
    if candidate.messages is None:
        return candidate.__dict__
    return {**candidate.__dict__, "messages": [m.__dict__ for m in candidate.messages]}


def _feedback_dict(event: FeedbackEvent) -> dict[str, Any]:
    record = dict(event.__dict__)
    if event.config is not None:
        record["config"] = {**event.config.__dict__, "categories": [c.__dict__ for c in event.config.categories]}
    if event.source is not None:
        record["source"] = event.source.__dict__
    return record


INFERENCE_CONTRACT = Contract(
    INFERENCE, plain_check(InferenceEvent, INFERENCE_RULES), InferenceEvent.parse, _inference_dict
)
FEEDBACK_CONTRACT = Contract(FEEDBACK, plain_check(FeedbackEvent, FEEDBACK_RULES), FeedbackEvent.parse, _feedback_dict)


# --------------------------------------------------------------------------- call arguments
def source_arg(source: SourceLike | None) -> FeedbackSource | Mapping[str, Any] | None:
    """Accept a FeedbackSource, a dict, a SourceType or its name in any case (``"app_user"``)."""
    if source is None or isinstance(source, FeedbackSource):
        return source
    if isinstance(source, str):  # SourceType is a str too
        try:
            return {"type": SourceType(source.upper())}
        except ValueError:
            allowed = ", ".join(m.value.lower() for m in SourceType)
            raise ValidationError("source", f"unknown source type {source!r} (one of {allowed})") from None
    if isinstance(source, Mapping):
        kind = source.get("type")
        if isinstance(kind, str) and not isinstance(kind, SourceType):
            return {**source, "type": kind.upper()}
        return source
    raise ValidationError("source", f"expected a FeedbackSource, dict or source type name, got {type(source).__name__}")


def outcome_arg(outcome: PairwiseOutcome | str) -> PairwiseOutcome | str:
    """An outcome's name in any case (``"tie"``)."""
    if isinstance(outcome, str) and not isinstance(outcome, PairwiseOutcome):
        return outcome.upper()
    return outcome


def ranking_arg(ranking: Sequence[Sequence[str]] | Sequence[str]) -> list[list[str]]:
    """``["a", "b"]`` means ``[["a"], ["b"]]``: no ties."""
    if isinstance(ranking, str):
        raise ValidationError("ranking", "expected a list of candidate ids, got a string")
    return [[item] if isinstance(item, str) else list(item) for item in ranking]


def check_score(score: float | None) -> None:
    if score is None or not isinstance(score, int | float):
        return
    try:
        finite = math.isfinite(score)
    except OverflowError:  # an int beyond a double's range
        raise ValidationError("score", f"{score} is too large for a double") from None
    if not finite:
        raise ValidationError("score", f"{score} is not a finite number")


def update_kind(
    chosen: str | None, rejected: str | None, outcome: object, ranking: object,
    score: float | None, value: str | None, candidate: str | None,
) -> JudgmentKind | None:  # fmt: skip
    """Which judgment an update restates (None: only comment, correction, metadata...)."""
    kinds = []
    if chosen is not None or rejected is not None or outcome is not None:
        kinds.append((JudgmentKind.PAIRWISE, "chosen_id"))
    if ranking is not None:
        kinds.append((JudgmentKind.RANKING, "ranking"))
    if score is not None or value is not None or candidate is not None:
        kinds.append((JudgmentKind.SCORE, "score"))
    if len(kinds) > 1:
        first, second = kinds[0][0], kinds[1][0]
        raise ValidationError(kinds[1][1], f"an update restates one judgment, not {first} and {second}")
    return kinds[0][0] if kinds else None


def unknown_candidate(field: str, candidate: str, request_id: str, known: frozenset[str]) -> ValidationError:
    listed = ", ".join(sorted(known))
    return ValidationError(field, f"unknown candidate id {candidate!r} for request {request_id!r} ({listed})")
