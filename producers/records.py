"""The logger's fast path: encode a call's plain arguments as they are, refused exactly as the models would.

Serving code mostly passes plain values: dicts of strings and numbers, lists of strings. Building
pydantic models from them only to read the models back into the dicts fastavro writes cost more
than everything else a log call does besides encoding. Instead, for a dict of an event's fields:

1. :func:`plain_check` checks what fastavro does not, and the contract: a nested record must be a
   dict with its model's field names only, required ones present (fastavro ignores extra keys),
   an array a list or a tuple (fastavro iterates a string or a dict), a map a dict (fastavro
   writes ``""`` as an empty map), a required ``int`` an ``int`` (fastavro truncates a float
   there; optional ints are checked by their Avro union); then the models' field constraints
   (``min_length``, ``ge``) and rules (:mod:`prefpair.schemas.rules`, the ones the models' own
   validators run). A model instance or any other form fails its first step, at once.
2. fastavro encodes them, checking each value's type as it writes it (a wrong type raises).

Whatever fails a step goes through the model itself: it coerces what it accepts (a ``bool`` for
a number, a model instance, bytes for a string...) and raises its own
:class:`~prefpair.schemas.ValidationError`, field and reason, for what it refuses. So the fast
path only ever accepts, and only what the model accepts as it is: ``tests/test_producer_records.py``
holds both paths to the same bytes and the same errors over every one-place change of valid
events. Missing optional fields stay missing: fastavro writes the schema's default, the same bytes.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import annotated_types
from pydantic import BaseModel

from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.wire import Codec
from prefpair.unicode_text import invalid_text

PlainCheck = Callable[[dict[str, Any]], bool]
Rules = Mapping[type[BaseModel], Callable[[Any], None]]
Event = TypeVar("Event", bound=BaseModel)

ENCODE_ERRORS = (TypeError, ValueError, AttributeError, OverflowError)
"""What fastavro raises for a value of another type (or out of range)."""


@dataclass(frozen=True)
class Contract(Generic[Event]):
    """What it takes to check and encode one event type: its schema's name, the checks and the model."""

    name: str
    is_plain: PlainCheck
    parse: Callable[[dict[str, Any]], Event]
    record_of: Callable[[Event], dict[str, Any]]


def encode_checked(codec: Codec, contract: Contract[Any], fields: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The record and message bytes of an event's ``fields``, if its model accepts them; else the model's error."""
    try:
        plain = contract.is_plain(fields)
    except Exception:  # a refusal, or a rule meeting a value of another type: the model decides
        plain = False
    if plain:
        try:
            return fields, codec.encode(contract.name, fields)
        except ENCODE_ERRORS:
            pass  # a value of another type: the model coerces it or raises its own error
    record = contract.record_of(contract.parse(fields))
    try:
        return record, codec.encode(contract.name, record)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 (so no Avro string) can hold it
        problem = invalid_text(record)
        if problem is None:
            raise
        path, reason = problem
        raise ValidationError(".".join(map(str, path)), reason) from None


# --------------------------------------------------------------------------- the generated check
def plain_check(model: type[BaseModel], rules: Rules) -> PlainCheck:
    """Whether fields are ``model``'s plain form and meet its constraints and rules (types: fastavro's).

    Generated once from the model's fields as straight-line Python, one function per nested
    model: it runs on every log call, and a loop over per-field checks cost twice as much. A
    refusal returns False (the caller asks the model for its error); a rule raises its
    ValidationError, or whatever a value of a type fastavro would refuse makes it raise.
    A field type or constraint it does not know fails here, at import.
    """
    source: list[str] = []
    namespace: dict[str, Any] = {}
    function = _define(model, rules, source, namespace)
    exec(compile("\n".join(source), f"<plain check of {model.__name__}>", "exec"), namespace)
    check: PlainCheck = namespace[function]
    return check


def _define(model: type[BaseModel], rules: Rules, source: list[str], namespace: dict[str, Any]) -> str:
    """Add the check of ``model`` (and of the models in it) to ``source``; its function's name."""
    function = f"plain_{model.__name__}"
    if function in namespace:
        return function
    namespace[function] = None  # defined below; marks it while nested models are added
    namespace[f"{function}_fields"] = frozenset(model.model_fields)
    namespace[f"{function}_required"] = frozenset(n for n, info in model.model_fields.items() if info.is_required())
    lines = [
        f"def {function}(record):",
        f"    if type(record) is not dict or not {function}_required <= record.keys() <= {function}_fields:",
        "        return False",
    ]
    for name, info in model.model_fields.items():
        where = f"{model.__name__}.{name}"
        checks = _value_lines(info.annotation, "value", where, rules, source, namespace)
        for meta in info.metadata:
            limit = f"{function}_{name}_limit"
            if isinstance(meta, annotated_types.MinLen):
                namespace[limit] = meta.min_length
                checks += [f"if len(value) < {limit}:", "    return False"]
            elif isinstance(meta, annotated_types.Ge):
                namespace[limit] = meta.ge
                checks += [f"if value < {limit}:", "    return False"]
            elif isinstance(meta, annotated_types.Le):
                namespace[f"{limit}_max"] = meta.le
                checks += [f"if value > {limit}_max:", "    return False"]
            else:
                raise TypeError(f"{where}: the fast path does not check the constraint {meta!r}")
        if checks:
            lines += [f"    value = record.get({name!r})", "    if value is not None:"]
            lines += [f"        {line}" for line in checks]
    rule = rules.get(model)
    if rule is not None:
        namespace[f"{function}_rule"] = rule
        lines.append(f"    {function}_rule(record)")
    lines.append("    return True")
    source.extend(lines)
    return function


def _value_lines(
    annotation: Any, value: str, where: str, rules: Rules, source: list[str], namespace: dict[str, Any]
) -> list[str]:
    """Lines checking a non-None ``value`` of ``annotation`` where fastavro is looser than the model."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1:
            raise TypeError(f"{where}: the fast path supports optional values only, not {annotation!r}")
        if present[0] is int:
            return []  # fastavro's union takes only an int (no float, no bool) for an optional long
        return _value_lines(present[0], value, where, rules, source, namespace)
    if annotation is int:
        return [f"if type({value}) is not int:", "    return False"]
    if annotation in (str, float) or (isinstance(annotation, type) and issubclass(annotation, str)):
        return []  # fastavro takes only a str (an enum's symbol) and only a number there
    if origin is list:
        item = f"{value}_item"
        per_item = _value_lines(args[0], item, where, rules, source, namespace)
        lines = [f"if type({value}) is not list and type({value}) is not tuple:", "    return False"]
        if per_item:
            lines += [f"for {item} in {value}:", *(f"    {line}" for line in per_item)]
        return lines
    if origin is dict and args[1] in (str, float, int):
        return [f"if type({value}) is not dict:", "    return False"]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        nested = _define(annotation, rules, source, namespace)
        return [f"if not {nested}({value}):", "    return False"]
    raise TypeError(f"{where}: the fast path does not know the type {annotation!r}")
