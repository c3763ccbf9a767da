"""The logger's fast path against the models, without a broker.

``encode_checked`` sends plain fields as they are once the shape check, fastavro and the
contract's dict-level check pass, and hands everything else to the models. Over every one-place
change of valid events (other values, other types, other containers, model instances, extra and
missing keys) it must end exactly as validating through the model does: the same bytes, or the
same error (type, field and reason). Encoding the model's record is what the logger did before
the fast path, so a disagreement here is a change in what callers see.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from prefpair.producers.events import FEEDBACK_CONTRACT, INFERENCE_CONTRACT, check_score
from prefpair.producers.records import Contract, encode_checked
from prefpair.schemas import (
    Candidate,
    FeedbackCategory,
    FeedbackConfig,
    FeedbackOp,
    FeedbackSource,
    JudgmentKind,
    Message,
    PairwiseOutcome,
    SourceType,
    ValidationError,
)
from prefpair.schemas.wire import SingleObjectCodec

CODEC = SingleObjectCodec()
TS = 1_790_000_000_000


def inference_fields(**changes: Any) -> dict[str, Any]:
    """The fields ``log_inference`` hands over, every one present as it passes them."""
    fields: dict[str, Any] = {
        "event_id": "e" * 32, "request_id": "r-1", "timestamp_ms": TS, "system_prompt": "Be brief.",
        "prompt": "Why is the sky blue?", "messages": None,
        "candidates": [
            {"candidate_id": "a", "text": "Rayleigh scattering.", "model_name": "m", "model_version": "v1",
             "temperature": 0.7, "top_p": 1, "max_tokens": 64, "seed": 3, "sampling_extra": {"k": "v"},
             "finish_reason": "stop", "completion_tokens": 5, "latency_ms": 12.5},
            {"candidate_id": "b", "messages": [{"role": "assistant", "content": "Blue light.", "name": None}],
             "model_name": "m"},
        ],
        "presentation_order": ["b", "a"], "user_id": "u-1", "session_id": None, "environment": "prod",
        "tags": ("faq",), "metadata": {"app": "test"},
    }  # fmt: skip
    return {**fields, **changes}


def feedback_fields(**changes: Any) -> dict[str, Any]:
    """The fields ``_log_feedback`` hands over for a pairwise judgment, enums as it passes them."""
    fields: dict[str, Any] = {
        "event_id": "e" * 32, "feedback_id": "f-1", "op": FeedbackOp.CREATE, "request_id": "r-1",
        "timestamp_ms": TS, "key": "preference", "kind": JudgmentKind.PAIRWISE,
        "outcome": PairwiseOutcome.PREFERRED, "chosen_id": "a", "rejected_id": "b", "ranking": None,
        "candidate_id": None, "score": None, "value": None, "comment": None, "correction": None,
        "config": None, "source": {"type": SourceType.APP_USER}, "metadata": {},
    }  # fmt: skip
    return {**fields, **changes}


SCORE = {"kind": JudgmentKind.SCORE, "outcome": None, "chosen_id": None, "rejected_id": None, "candidate_id": "a"}
VALID: list[tuple[Contract[Any], dict[str, Any]]] = [
    (INFERENCE_CONTRACT, inference_fields()),
    (INFERENCE_CONTRACT, inference_fields(prompt=None, messages=[{"role": "user", "content": "Hi"}],
                                          presentation_order=(), tags=[], metadata={})),
    (FEEDBACK_CONTRACT, feedback_fields()),
    (FEEDBACK_CONTRACT, feedback_fields(kind="RANKING", outcome=None, chosen_id=None, rejected_id=None,
                                        ranking=[["a"], ["b", "c"]], source={"type": "HUMAN_ANNOTATOR",
                                                                             "source_id": "ann-1"})),
    (FEEDBACK_CONTRACT, feedback_fields(**SCORE, value="good", config={
        "type": "CATEGORICAL", "categories": [{"label": "good", "value": 1.0}, {"label": "bad", "value": None}]})),
    (FEEDBACK_CONTRACT, feedback_fields(**SCORE, score=4, comment="ok", config={"type": "CONTINUOUS", "min": 1,
                                                                                "max": 5.0})),
    (FEEDBACK_CONTRACT, feedback_fields(op=FeedbackOp.UPDATE, key=None, kind=None, outcome=None, chosen_id=None,
                                        rejected_id=None, comment="changed", source=None)),
    (FEEDBACK_CONTRACT, feedback_fields(op="DELETE", key=None, kind=None, outcome=None, chosen_id=None,
                                        rejected_id=None, source=None)),
]  # fmt: skip

# Values put in every place: other values, other types, other containers, enum members.
OTHER_VALUES: list[Any] = [
    None, "", " ", "a", "b", "c", "Hi", "CREATE", "DELETE", "PAIRWISE", "RANKING", "SCORE", "TIE", "tie",
    "CATEGORICAL", "CONTINUOUS", "APP_USER", SourceType.API, JudgmentKind.SCORE, b"a",
    -1, 0, 1, 3, 10**6, 2**70, 1.0, 0.5, -2.5, float("nan"), True, False,
    [], ["a"], ["a", "b"], [["a"], ["b"]], ("a", "b"), {"a"}, [1], {}, {"k": "v"}, {"k": 1}, {1: "v"},
    {"type": "API"}, {"role": "user", "content": "x"},
]  # fmt: skip
MODELS = {"candidates": Candidate, "messages": Message, "config": FeedbackConfig, "categories": FeedbackCategory,
          "source": FeedbackSource}  # fmt: skip


def _changes(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str, Any]]:
    """(path, how, new value): one place changed anywhere in ``value``; ``how`` is set, add or drop."""
    if isinstance(value, dict):
        yield path, "add", "extra"
        for key, item in value.items():
            yield (*path, key), "drop", None
            yield from _changes(item, (*path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _changes(item, (*path, i))
    if not path:
        return
    for other in OTHER_VALUES:
        if other is not value:
            yield path, "set", other
    named = path[-1] if isinstance(path[-1], str) else path[-2] if len(path) > 1 else None
    model = MODELS.get(named) if isinstance(named, str) else None
    if model is not None and isinstance(value, dict):  # the typed form of a nested record
        yield path, "set", model.model_validate(value)


def _changed(value: Any, path: tuple[Any, ...], how: str, new: Any) -> Any:
    """A deep copy of ``value`` with one place changed."""
    if not path:
        return {**copy.deepcopy(value), new: "x"}  # how == "add"
    step, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = {k: copy.deepcopy(v) for k, v in value.items() if not (k == step and not rest and how == "drop")}
    else:
        out = [copy.deepcopy(v) for v in value]
    if rest or how == "add":
        out[step] = _changed(value[step], rest, how, new)
    elif how == "set":
        out[step] = copy.deepcopy(new)
    return out if isinstance(value, dict | list) else type(value)(out)


def _outcome(run: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "sent", run(*args)
    except ValidationError as exc:
        return "refused", (exc.field, exc.reason)
    except Exception as exc:
        return "failed", type(exc).__name__


def _through_the_model(contract: Contract[Any], fields: dict[str, Any]) -> bytes:
    return CODEC.encode(contract.name, contract.record_of(contract.parse(fields)))


@pytest.mark.parametrize(("contract", "fields"), VALID, ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(VALID)])
def test_fast_path_sends_and_refuses_what_the_model_does(contract: Contract[Any], fields: dict[str, Any]) -> None:
    record, value = encode_checked(CODEC, contract, fields)
    assert record is fields, "a valid plain event must take the fast path (else this test compares nothing)"
    assert value == _through_the_model(contract, fields)

    fast = refused = compared = 0
    differences = []
    for path, how, new in _changes(fields):
        changed = _changed(fields, path, how, new)
        expected = _outcome(_through_the_model, contract, copy.deepcopy(changed))
        got = _outcome(encode_checked, CODEC, contract, changed)
        if got[0] == "sent":
            sent_record, sent_value = got[1]
            fast += sent_record is changed
            got = ("sent", sent_value)
        compared += 1
        refused += expected[0] == "refused"
        if got != expected:
            differences.append(f"{how} {path}={new!r}: model {expected!r:.200}, fast path {got!r:.200}")
    assert not differences, "\n".join(differences[:20])
    assert compared > 500 and refused > 100 and fast > 50, (compared, refused, fast)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("max_tokens", 2**31, "less than or equal to 2147483647"),
        ("prompt_tokens", -(2**31) - 1, "greater than or equal to -2147483648"),
        ("seed", 2**70, "less than or equal to 9223372036854775807"),
        ("seed", -(2**63) - 1, "greater than or equal to -9223372036854775808"),
    ],
)
def test_a_number_beyond_its_avro_type_is_refused_naming_the_field(field: str, value: int, reason: str) -> None:
    """Avro ints are 32-bit and longs 64-bit: a larger number is the model's error, not fastavro's ValueError."""
    fields = inference_fields()
    fields["candidates"][0][field] = value
    with pytest.raises(ValidationError) as caught:
        encode_checked(CODEC, INFERENCE_CONTRACT, fields)
    assert caught.value.field == f"candidates.0.{field}"
    assert reason in caught.value.reason
    with pytest.raises(ValidationError, match="timestamp_ms"):
        encode_checked(CODEC, INFERENCE_CONTRACT, inference_fields(timestamp_ms=2**64))


def test_a_score_beyond_a_double_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        check_score(10**400)
    assert (caught.value.field, caught.value.reason) == ("score", f"{10**400} is too large for a double")
    with pytest.raises(ValidationError, match="not a finite number"):
        check_score(float("inf"))
    check_score(2**70)  # a large int a double holds is a score like any other


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (inference_fields(prompt="a\ud800b"), "prompt"),
        (inference_fields(user_id="\udcff"), "user_id"),
        (inference_fields(metadata={"app": "ok", "note": "x\udc80"}), "metadata.note"),
    ],
    ids=["prompt", "user_id", "metadata-value"],
)
def test_a_lone_surrogate_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    """No UTF-8 text (so no Avro string) holds a lone surrogate: the same 422 words the service says."""
    with pytest.raises(ValidationError) as caught:
        encode_checked(CODEC, INFERENCE_CONTRACT, fields)
    assert (caught.value.field, caught.value.reason) == (field, "not valid Unicode text (it has a lone surrogate)")
    surrogate_pair = inference_fields(prompt="a\U0001f600b")  # a character like any other
    assert encode_checked(CODEC, INFERENCE_CONTRACT, surrogate_pair)[0] is surrogate_pair
