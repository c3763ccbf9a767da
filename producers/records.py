"""The logger's fast path: encode a call's plain arguments as they are, refused exactly as the models would.

Serving code mostly passes plain values: dicts of strings and numbers, lists of strings. Building
pydantic models from them only to read the models back into the dicts fastavro writes cost more
than everything else a log call does besides encoding. Instead, for a dict of an event's fields:

1. :func:`shape_check` covers where fastavro is looser than the models: a nested record must be
   a dict with only its model's field names (fastavro ignores extra keys), an array a list or a
   tuple (fastavro iterates a string or a dict), a map a dict (fastavro writes ``""`` as an
   empty map), a required ``int`` an ``int`` (fastavro truncates a float there). Derived once
   from the model's fields; it visits only the nested records, the containers and those ints,
   not every value.
2. fastavro encodes the fields, checking every other value's type as it writes it (a wrong type
   raises; optional ints and floats are type-checked by the union they are in).
3. the contract's dict-level check (``check_inference_record`` / ``check_feedback_record``, the
   one the consumer runs on decoded records, which the tests hold to the models) checks the
   field constraints and the rules of :mod:`prefpair.schemas.rules`.

Whatever fails a step goes through the model itself: it coerces what it accepts (a ``bool`` for
a number, a model instance, bytes for a string...), and it raises exactly the model's
:class:`~prefpair.schemas.ValidationError`, field and reason, for what it refuses.
``tests/test_producer_records.py`` holds the two paths to the same bytes and the same errors.
Missing optional fields stay missing: fastavro writes the schema's default, the same bytes.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.wire import Codec

ShapeCheck = Callable[[Any], bool]
Event = TypeVar("Event", bound=BaseModel)

ENCODE_ERRORS = (TypeError, ValueError, AttributeError, OverflowError)
"""What fastavro raises for a value of the wrong type (or out of range)."""


@dataclass(frozen=True)
class Contract(Generic[Event]):
    """What it takes to check and encode one event type: its schema's name, the model and the checks."""

    name: str
    has_shape: ShapeCheck
    check: Callable[[dict[str, Any]], None]
    parse: Callable[[dict[str, Any]], Event]
    record_of: Callable[[Event], dict[str, Any]]


def encode_checked(codec: Codec, contract: Contract[Any], fields: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The record and message bytes of an event's ``fields``, if its model accepts them; else the model's error."""
    if contract.has_shape(fields):
        try:
            value = codec.encode(contract.name, fields)
        except ENCODE_ERRORS:
            pass  # a value of another type than the contract's: the model coerces or refuses it
        else:
            try:
                contract.check(fields)
            except ValidationError as refused:
                contract.parse(fields)  # raises the model's own error: the one callers always got
                raise refused from None  # the check and the model disagree: still refuse (tests hold them equal)
            return fields, value
    record = contract.record_of(contract.parse(fields))
    return record, codec.encode(contract.name, record)


def shape_check(model: type[BaseModel]) -> ShapeCheck:
    """Whether a dict has ``model``'s shape where fastavro is looser than the model (see the module doc)."""
    names = frozenset(model.model_fields)
    guarded = []
    for name, info in model.model_fields.items():
        guard = _guard(info.annotation, f"{model.__name__}.{name}")
        if guard is not None:
            guarded.append((name, guard))

    def has_shape(value: Any) -> bool:
        if type(value) is not dict or not value.keys() <= names:
            return False
        for name, guard in guarded:
            item = value.get(name)
            if item is not None and not guard(item):
                return False
        return True

    return has_shape


def _guard(annotation: Any, where: str) -> ShapeCheck | None:
    """A check of a field's value where fastavro is looser than the model; None where it is not."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1:
            raise TypeError(f"{where}: only optional values are supported, not {annotation!r}")
        if present[0] is int:
            return None  # fastavro's union accepts only an int (no float, no bool) for an optional long
        return _guard(present[0], where)  # a None passes: has_shape skips it
    if annotation is int:
        return _is_int
    if origin is list:
        item = _guard(args[0], where)
        return _is_array if item is None else _array_of(item)
    if origin is dict:
        if _guard(args[1], where) is not None:
            raise TypeError(f"{where}: only maps of plain values are supported, not {annotation!r}")
        return _is_map
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return shape_check(annotation)
    return None


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_map(value: Any) -> bool:
    return type(value) is dict


def _is_array(value: Any) -> bool:
    return type(value) is list or type(value) is tuple


def _array_of(item_has_shape: ShapeCheck) -> ShapeCheck:
    def has_shape(value: Any) -> bool:
        return (type(value) is list or type(value) is tuple) and all(item_has_shape(item) for item in value)

    return has_shape
