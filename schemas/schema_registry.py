"""A small Confluent Schema Registry client: the two REST calls the registry framing needs.

Standard library only (``urllib``): registering the shipped schemas under the topics'
``<topic>-value`` subjects (TopicNameStrategy), and fetching a writer schema by id. Ids are
cached; the registry is only asked once per subject and id per process.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

from prefpair.config import Settings
from prefpair.errors import PrefpairError
from prefpair.schemas.registry import FEEDBACK, INFERENCE, SIGNAL

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
DEFAULT_TIMEOUT = 10.0


class SchemaRegistryError(PrefpairError):
    """The registry refused a request or did not answer; keeps the ``url`` and ``reason``."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"schema registry {url}: {reason}")


def value_subjects(settings: Settings) -> dict[str, str]:
    """Subject of each record, by Confluent's TopicNameStrategy (``<topic>-value``); signals share the
    feedback topic, so theirs is by TopicRecordNameStrategy (``<topic>-prefpair.v1.SignalEvent``):
    one subject per record type keeps each subject's compatibility check to one schema."""
    return {
        INFERENCE: f"{settings.inference_topic}-value",
        FEEDBACK: f"{settings.feedback_topic}-value",
        SIGNAL: f"{settings.feedback_topic}-prefpair.v1.{SIGNAL}",
    }


class HttpSchemaRegistry:
    """Implements :class:`prefpair.schemas.wire.SchemaRegistryClient` over HTTP."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (a no-op if it is there already); its global id."""
        text = json.dumps(schema, sort_keys=True)
        with self._lock:
            cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        answer = self._call("POST", f"/subjects/{subject}/versions", {"schema": text})
        schema_id = int(answer["id"])
        with self._lock:
            self._ids[(subject, text)] = schema_id
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The schema the registry stores under ``schema_id``, as parsed JSON."""
        with self._lock:
            cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        answer = self._call("GET", f"/schemas/ids/{schema_id}")
        schema: dict[str, Any] = json.loads(answer["schema"])
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.url + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE,
        })  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            raise SchemaRegistryError(url, f"HTTP {exc.code}: {_message(exc)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SchemaRegistryError(url, str(getattr(exc, "reason", exc))) from None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("message", exc.reason))
    except Exception:
        return str(exc.reason)
