"""Where the shipped ``.avsc`` files are loaded, parsed once and fingerprinted.

``inference.avsc`` and ``feedback.avsc`` are the current (reader) schemas. Earlier versions
kept in ``history/`` (``<name>.v<N>.avsc``) stay readable: their fingerprints are known, and
fastavro resolves old writer data to the current reader schema (see EVOLUTION.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

INFERENCE = "InferenceEvent"
FEEDBACK = "FeedbackEvent"
SIGNAL = "SignalEvent"
"""Implicit signals: sent on the feedback topic, routed by this record name."""
SCHEMA_FILES = {INFERENCE: "inference.avsc", FEEDBACK: "feedback.avsc", SIGNAL: "signal.avsc"}


def fingerprint_of(parsed: Any) -> bytes:
    """CRC-64-AVRO fingerprint of the parsing canonical form, 8 bytes little-endian (Avro spec)."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))  # fastavro's hex is LE


@dataclass(frozen=True)
class SchemaSet:
    """Reader schemas by record name, and every known writer schema by fingerprint."""

    readers: dict[str, Any]
    writers: dict[bytes, tuple[str, Any]] = field(default_factory=dict)

    def fingerprint(self, name: str) -> bytes:
        return fingerprint_of(self.readers[name])

    def raw(self, name: str) -> dict[str, Any]:
        return load_raw(SCHEMA_FILES[name])


def load_raw(filename: str) -> dict[str, Any]:
    """The JSON of a shipped schema file."""
    text = resources.files("prefpair.schemas").joinpath(filename).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def build_schema_set(extra_writers: dict[str, list[dict[str, Any]]] | None = None) -> SchemaSet:
    """Parse the current schemas and the known older versions (plus ``extra_writers``)."""
    readers = {name: parse_schema(load_raw(filename)) for name, filename in SCHEMA_FILES.items()}
    writers: dict[bytes, tuple[str, Any]] = {}
    for name, parsed in readers.items():
        writers[fingerprint_of(parsed)] = (name, parsed)
    history = resources.files("prefpair.schemas").joinpath("history")
    if history.is_dir():
        for entry in sorted(history.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".avsc"):
                old: dict[str, Any] = json.loads(entry.read_text(encoding="utf-8"))
                parsed_old = parse_schema(old)
                writers[fingerprint_of(parsed_old)] = (str(old["name"]).rsplit(".", 1)[-1], parsed_old)
    for name, schemas in (extra_writers or {}).items():
        for raw in schemas:
            parsed = parse_schema(raw)
            writers[fingerprint_of(parsed)] = (name, parsed)
    return SchemaSet(readers=readers, writers=writers)


@cache
def default_schema_set() -> SchemaSet:
    """The schemas shipped with this package, parsed once per process."""
    return build_schema_set()
