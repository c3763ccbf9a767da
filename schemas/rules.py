"""The rules of the contract that Avro cannot express, written once for models and decoded records.

The pydantic models (:mod:`prefpair.schemas.models`) call these rules from their validators, so
the SDK and the service refuse bad events before they are sent. The consumer checks records that
fastavro has just decoded: Avro already guarantees every field's type, so re-validating them
through pydantic (about as costly as the decode itself) would check the types twice. It runs
:func:`record_check` instead: the field constraints read off the models (``min_length``, ``ge``)
and the same rules, on plain dicts.

A rule takes a *record*: a model instance or a decoded dict (enums as their symbols), read
through :func:`get`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import annotated_types
from pydantic import BaseModel

from prefpair.schemas.exceptions import ValidationError

Record = Any
"""A model instance or a decoded Avro record (dict)."""


def get(record: Record, name: str) -> Any:
    """A field of a model instance or of a decoded record (a plain dict, as fastavro returns)."""
    return record.get(name) if type(record) is dict else getattr(record, name)


# --------------------------------------------------------------------------- inference
def check_candidate(candidate: Record) -> None:
    if get(candidate, "text") is None and not get(candidate, "messages"):
        raise ValidationError(
            "candidates.text", f"candidate {get(candidate, 'candidate_id')!r} has no text or messages"
        )


def check_inference(event: Record) -> None:
    prompt = get(event, "prompt")
    if not (prompt and prompt.strip()) and not get(event, "messages"):
        raise ValidationError("prompt", "empty: give a prompt text or chat messages")
    candidates = get(event, "candidates")
    if not candidates:
        raise ValidationError("candidates", "at least one candidate output is required")
    ids = [get(c, "candidate_id") for c in candidates]
    if len(set(ids)) != len(ids):
        raise ValidationError("candidates.candidate_id", "candidate ids must be unique within a request")
    order = get(event, "presentation_order")
    if order:
        unknown = [c for c in order if c not in ids]
        if unknown:
            raise ValidationError("presentation_order", f"unknown candidate id {unknown[0]!r}")
        if len(set(order)) != len(order):
            raise ValidationError("presentation_order", "a candidate is listed twice")


# --------------------------------------------------------------------------- feedback
def check_feedback_config(config: Record) -> None:
    low, high = get(config, "min"), get(config, "max")
    if low is not None and high is not None and low > high:
        raise ValidationError("config.min", f"min {low} is above max {high}")
    if get(config, "type") == "CATEGORICAL" and not get(config, "categories"):
        raise ValidationError("config.categories", "a categorical feedback config needs categories")


def check_feedback(event: Record) -> None:
    op, kind = get(event, "op"), get(event, "kind")
    if op == "CREATE":
        if not get(event, "key"):
            raise ValidationError("key", "required when creating feedback")
        if kind is None:
            raise ValidationError("kind", "required when creating feedback")
        if get(event, "source") is None:
            raise ValidationError("source", "required when creating feedback")
    if op == "DELETE":
        return
    if kind == "PAIRWISE":
        _check_pairwise(event)
    elif kind == "RANKING":
        _check_ranking(get(event, "ranking"))
    elif kind == "SCORE" and op == "CREATE" and all(
        get(event, name) is None for name in ("score", "value", "correction", "comment")
    ):
        raise ValidationError("score", "a score, value, correction or comment is required")
    key = get(event, "key")
    if key is not None and not key.strip():
        raise ValidationError("key", "must not be blank")
    check_against_config(event)


def _check_pairwise(event: Record) -> None:
    chosen, rejected = get(event, "chosen_id"), get(event, "rejected_id")
    if get(event, "outcome") is None:
        raise ValidationError("outcome", "required for a pairwise judgment")
    if not chosen:
        raise ValidationError("chosen_id", "required for a pairwise judgment")
    if not rejected:
        raise ValidationError("rejected_id", "required for a pairwise judgment")
    if chosen == rejected:
        raise ValidationError("rejected_id", f"equals chosen_id {chosen!r}")


def _check_ranking(ranking: list[list[str]] | None) -> None:
    if not ranking or not any(ranking):
        raise ValidationError("ranking", "required and non-empty for a ranking")
    flat = [c for group in ranking for c in group]
    if any(not c for c in flat):
        raise ValidationError("ranking", "empty candidate id")
    if any(not group for group in ranking):
        raise ValidationError("ranking", "empty tie group")
    if len(set(flat)) != len(flat):
        raise ValidationError("ranking", "a candidate appears twice")
    if len(flat) < 2:
        raise ValidationError("ranking", "needs at least two candidates")


def check_against_config(event: Record) -> None:
    """Check score/value against the feedback config the event carries."""
    config = get(event, "config")
    if config is None:
        return
    score, value, kind = get(event, "score"), get(event, "value"), get(config, "type")
    if kind == "CONTINUOUS" and score is not None:
        low, high = get(config, "min"), get(config, "max")
        if low is not None and score < low:
            raise ValidationError("score", f"{score} is below the config's min {low}")
        if high is not None and score > high:
            raise ValidationError("score", f"{score} is above the config's max {high}")
    if kind == "CATEGORICAL":
        categories = get(config, "categories")
        labels = {get(c, "label") for c in categories}
        values = {get(c, "value") for c in categories if get(c, "value") is not None}
        if value is not None and value not in labels:
            raise ValidationError("value", f"{value!r} is not an allowed category ({', '.join(sorted(labels))})")
        if score is not None and values and score not in values:
            raise ValidationError("score", f"{score} is not the value of an allowed category")


# --------------------------------------------------------------------------- signals
SIGNAL_KINDS = ("regenerate", "copy", "edit", "dwell", "select", "conversion", "abandon", "delete")
"""The implicit signals the contract knows; compile's rules read them (``prefpair.compile.implicit``).

``delete``: the user deleted the output from their conversation; compile takes no implicit pair from
that request, neither as a parent nor as a child."""
SIGNAL_NEEDS_CANDIDATE = frozenset({"copy", "edit", "select"})


def check_signal(event: Record) -> None:
    kind = get(event, "kind")
    if kind not in SIGNAL_KINDS:
        raise ValidationError("kind", f"unknown signal kind {kind!r}; expected one of {', '.join(SIGNAL_KINDS)}")
    if kind in SIGNAL_NEEDS_CANDIDATE and not get(event, "candidate_id"):
        raise ValidationError("candidate_id", f"required for a {kind} signal")
    if kind == "edit" and get(event, "text") is None:
        raise ValidationError("text", "an edit signal carries the edited text")
    dwell = get(event, "dwell_ms")
    if kind == "dwell" and dwell is None:
        raise ValidationError("dwell_ms", "required for a dwell signal")
    if dwell is not None and dwell < 0:
        raise ValidationError("dwell_ms", f"{dwell} is negative")
    value = get(event, "value")
    if value is not None and value != value:  # NaN
        raise ValidationError("value", "must be a number, not NaN")


# --------------------------------------------------------------------------- decoded records
RecordCheck = Callable[[dict[str, Any]], None]


def record_check(model: type[BaseModel], rules: Mapping[type[BaseModel], Callable[[Record], None]]) -> RecordCheck:
    """A check of decoded records against ``model``'s constraints and ``rules``, types left to Avro.

    Built once from the model's fields: ``min_length`` and ``ge`` constraints, nested models
    (alone, optional or in lists), then the model's rule; the first problem raises
    :class:`ValidationError` naming the field.
    """
    constraints: list[tuple[str, Callable[[Any], str | None]]] = []
    nested: list[tuple[str, RecordCheck, bool]] = []
    for name, info in model.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, annotated_types.MinLen):
                constraints.append((name, _min_length(meta.min_length)))
            elif isinstance(meta, annotated_types.Ge):
                constraints.append((name, _at_least(meta.ge)))
        inner, many = _model_in(info.annotation)
        if inner is not None:
            nested.append((name, record_check(inner, rules), many))
    rule = rules.get(model)

    def check(record: dict[str, Any]) -> None:
        for name, problem in constraints:
            value = record.get(name)
            if value is not None and (reason := problem(value)) is not None:
                raise ValidationError(name, reason)
        for name, check_inner, many in nested:
            value = record.get(name)
            if value is None:
                continue
            try:
                for item in value if many else (value,):
                    check_inner(item)
            except ValidationError as exc:
                field = exc.field if exc.field.startswith(f"{name}.") else f"{name}.{exc.field}"
                raise ValidationError(field, exc.reason) from None
        if rule is not None:
            rule(record)

    return check


def _min_length(n: int) -> Callable[[Any], str | None]:
    return lambda value: None if len(value) >= n else f"should have at least {n} character{'s' * (n != 1)}"


def _at_least(bound: Any) -> Callable[[Any], str | None]:
    return lambda value: None if value >= bound else f"should be greater than or equal to {bound}"


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model type inside ``annotation`` (``M``, ``M | None``, ``list[M] | None``) and whether it is a list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found[0] is not None:
                return found
        return None, False
    if origin is list:
        inner, _ = _model_in(typing.get_args(annotation)[0])
        return inner, inner is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False
