"""Contract events as the consumer sees them: complete records, and the partition a key lands in.

The consumer decodes Avro, so every field of ``inference.avsc`` / ``feedback.avsc`` is present,
optional ones with their defaults. :func:`complete_inference` and :func:`complete_feedback` give
a simulated or hand-written event that shape (defaults read from the schema files, the one source
of truth), so it becomes a log row through the consumer's own
:func:`~prefpair.consumers.join.inference_row` / :func:`~prefpair.consumers.join.feedback_row`.
Default containers (``{}``, ``[]``) are shared between records: rows are read, never changed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from typing import Any

from prefpair.schemas.registry import FEEDBACK, INFERENCE, SCHEMA_FILES, SIGNAL, load_raw


def _records(schema: Any) -> Iterator[dict[str, Any]]:
    """Every named record type defined anywhere in ``schema``."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _records(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            yield schema
            for f in schema["fields"]:
                yield from _records(f["type"])
        else:
            for key in ("items", "values", "type"):
                if key in schema:
                    yield from _records(schema[key])


@cache
def defaults(record_name: str) -> Mapping[str, Any]:
    """Field defaults of a record type of the contract (``InferenceEvent``, ``Candidate``, ...)."""
    for schema_name in (INFERENCE, FEEDBACK, SIGNAL):
        for record in _records(load_raw(SCHEMA_FILES[schema_name])):
            if record["name"] == record_name:
                return {f["name"]: f["default"] for f in record["fields"] if "default" in f}
    raise KeyError(record_name)


def _complete(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {**defaults(name), **record}


def _messages(messages: Any) -> Any:
    return None if messages is None else [_complete(m, "Message") for m in messages]


def complete_inference(event: Mapping[str, Any]) -> dict[str, Any]:
    """An inference event with every field, as decoding it from Avro gives (a new dict)."""
    record = _complete(event, "InferenceEvent")
    record["messages"] = _messages(record["messages"])
    record["candidates"] = [
        {**_complete(c, "Candidate"), "messages": _messages(c.get("messages"))} for c in record["candidates"]
    ]
    return record


def complete_feedback(event: Mapping[str, Any]) -> dict[str, Any]:
    """A feedback event with every field, as decoding it from Avro gives (a new dict)."""
    record = _complete(event, "FeedbackEvent")
    if record["source"] is not None:
        record["source"] = _complete(record["source"], "FeedbackSource")
    config = record["config"]
    if config is not None:
        config = _complete(config, "FeedbackConfig")
        config["categories"] = [_complete(c, "FeedbackCategory") for c in config["categories"]]
        record["config"] = config
    return record


def complete_signal(event: Mapping[str, Any]) -> dict[str, Any]:
    """A signal event with every field, as decoding it from Avro gives (a new dict)."""
    return _complete(event, "SignalEvent")


# --------------------------------------------------------------------------- partitioning
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (as Java's ``Utils.murmur2`` and librdkafka compute it), unsigned 32 bits."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    body = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:body]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[body + 2] << 16
    if tail >= 2:
        h ^= data[body + 1] << 8
    if tail >= 1:
        h ^= data[body]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 16)
def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's producers (prefpair's ``murmur2_random`` partitioner) give a non-empty key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
