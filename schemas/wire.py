"""Message framing: Avro single-object encoding by default, Schema Registry framing on request.

Single-object encoding (Avro spec): ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint
of the writer schema + the binary body. The fingerprint picks the writer schema among those
shipped in ``schemas/`` and fastavro resolves it to the current reader schema, so old
events stay readable. An unknown fingerprint or a bad marker raises a DecodeError the
consumer routes to the dead-letter topic; it never crashes the reader.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Protocol

from fastavro import schemaless_reader, schemaless_writer

from prefpair.schemas.exceptions import BadMagicError, DecodeError, UnknownSchemaError
from prefpair.schemas.registry import SchemaSet, default_schema_set

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = 10
CONFLUENT_MAGIC = b"\x00"


class Codec(Protocol):
    """Encodes records of a named schema to message bytes and back."""

    def encode(self, name: str, record: dict[str, Any]) -> bytes: ...

    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]: ...


class SingleObjectCodec:
    """Avro single-object encoding against the schemas shipped in ``prefpair.schemas``."""

    def __init__(self, schemas: SchemaSet | None = None) -> None:
        self.schemas = schemas or default_schema_set()
        self._headers = {
            name: SINGLE_OBJECT_MAGIC + self.schemas.fingerprint(name) for name in self.schemas.readers
        }

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._headers[name])
        schemaless_writer(buffer, self.schemas.readers[name], record)
        return buffer.getvalue()

    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        if len(payload) < SINGLE_OBJECT_HEADER_SIZE or payload[:2] != SINGLE_OBJECT_MAGIC:
            raise BadMagicError("not Avro single-object encoded (expected C3 01)", payload)
        writer = self.schemas.writers.get(payload[2:10])
        if writer is None:
            raise UnknownSchemaError(payload[2:10][::-1].hex(), payload)
        name, writer_schema = writer
        reader_schema = self.schemas.readers[name]
        # Same schema: skip fastavro's resolution pass, it costs decode time on the hot path.
        return name, _read(payload, SINGLE_OBJECT_HEADER_SIZE, writer_schema,
                           None if writer_schema is reader_schema else reader_schema)


def _read(payload: bytes, offset: int, writer_schema: Any, reader_schema: Any | None) -> dict[str, Any]:
    buffer = io.BytesIO(payload)
    buffer.seek(offset)
    try:
        record = schemaless_reader(buffer, writer_schema, reader_schema)
    except Exception as exc:  # fastavro raises many types on truncated or corrupt bodies
        raise DecodeError(f"corrupt Avro body: {type(exc).__name__}: {exc}", payload) from None
    if buffer.tell() != len(payload):
        raise DecodeError(f"{len(payload) - buffer.tell()} trailing bytes after the Avro body", payload)
    if not isinstance(record, dict):
        raise DecodeError("Avro body is not a record", payload)
    return record


def codec_for(settings: Any) -> Codec:
    """The codec the settings ask for: registry framing when a registry URL is set, else single-object."""
    url = getattr(settings, "schema_registry_url", None)
    if not url:
        return SingleObjectCodec()
    from prefpair.schemas.schema_registry import HttpSchemaRegistry, value_subjects

    return ConfluentCodec(HttpSchemaRegistry(url), value_subjects(settings))


class SchemaRegistryClient(Protocol):
    """The two calls the registry framing needs (see ``prefpair.schemas.schema_registry``)."""

    def register(self, subject: str, schema: dict[str, Any]) -> int: ...

    def schema_by_id(self, schema_id: int) -> dict[str, Any]: ...


class ConfluentCodec:
    """Confluent Schema Registry framing: ``00`` + 4-byte big-endian schema id + body."""

    def __init__(self, client: SchemaRegistryClient, subjects: dict[str, str], schemas: SchemaSet | None = None):
        self.client = client
        self.schemas = schemas or default_schema_set()
        self.subjects = subjects
        self._ids: dict[str, int] = {}
        self._writers: dict[int, tuple[str, Any]] = {}

    def _id_for(self, name: str) -> int:
        if name not in self._ids:
            self._ids[name] = self.client.register(self.subjects[name], self.schemas.raw(name))
        return self._ids[name]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(CONFLUENT_MAGIC + struct.pack(">I", self._id_for(name)))
        schemaless_writer(buffer, self.schemas.readers[name], record)
        return buffer.getvalue()

    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        if len(payload) < 5 or payload[:1] != CONFLUENT_MAGIC:
            raise BadMagicError("not Schema Registry framed (expected 00 + schema id)", payload)
        (schema_id,) = struct.unpack(">I", payload[1:5])
        writer = self._writers.get(schema_id)
        if writer is None:
            from fastavro import parse_schema

            try:
                raw = self.client.schema_by_id(schema_id)
            except Exception as exc:
                raise UnknownSchemaError(f"registry id {schema_id} ({exc})", payload) from None
            name = str(raw.get("name", "")).rsplit(".", 1)[-1]
            if name not in self.schemas.readers:
                raise UnknownSchemaError(f"registry id {schema_id} (record {name!r})", payload)
            writer = (name, parse_schema(raw))
            self._writers[schema_id] = writer
        name, writer_schema = writer
        return name, _read(payload, 5, writer_schema, self.schemas.readers[name])
