"""Event factories for consumer tests: valid contract events as dicts, and a raw keyed producer.

The consumer tests write through a plain confluent-kafka Producer (not the SDK) so they can
send what the SDK refuses to: exact duplicates, poison bytes, events of the wrong kind.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from confluent_kafka import Producer

from prefpair.config import Settings
from prefpair.kafka import KEY_PARTITIONER
from prefpair.schemas.registry import FEEDBACK, INFERENCE, SIGNAL
from prefpair.schemas.wire import SingleObjectCodec

CODEC = SingleObjectCodec()


def inference(request_id: str, *, n_candidates: int = 2, ts: int = 1_700_000_000_000, size: int = 40) -> dict[str, Any]:
    candidates = [
        {
            "candidate_id": f"c{i}",
            "text": f"answer {i} to {request_id} " + "x" * size,
            "model_name": "model-a" if i % 2 == 0 else "model-b",
            "model_version": "v1",
            "temperature": 0.7,
        }
        for i in range(n_candidates)
    ]
    return {
        "event_id": uuid.uuid4().hex,
        "request_id": request_id,
        "timestamp_ms": ts,
        "prompt": f"question {request_id} " + "q" * size,
        "candidates": candidates,
        "presentation_order": [c["candidate_id"] for c in candidates],
        "user_id": "u1",
        "environment": "test",
    }


def pairwise(request_id: str, *, feedback_id: str | None = None, op: str = "CREATE", ts: int = 1_700_000_001_000,
             chosen: str = "c0", rejected: str = "c1") -> dict[str, Any]:  # fmt: skip
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "feedback_id": feedback_id or uuid.uuid4().hex,
        "op": op,
        "request_id": request_id,
        "timestamp_ms": ts,
    }
    if op == "CREATE":
        event.update(key="preference", kind="PAIRWISE", outcome="PREFERRED", chosen_id=chosen, rejected_id=rejected,
                     source={"type": "APP_USER", "source_id": "u1"})  # fmt: skip
    elif op == "UPDATE":
        event.update(comment="changed my mind")
    return event


class RawProducer:
    """Encodes with the shipped codec (or sends bytes as they are), keyed by request id."""

    def __init__(self, settings: Settings) -> None:
        assert settings.bootstrap_servers
        self.settings = settings
        self.producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True,
                                  "linger.ms": 5, "partitioner": KEY_PARTITIONER})  # fmt: skip
        self.failed: list[str] = []
        """Delivery errors (a record the broker refused): ``flush`` fails the test on any."""

    def _delivered(self, error: Any, msg: Any) -> None:
        if error is not None:
            self.failed.append(f"{msg.topic()} at {msg.timestamp()[1]}: {error}")

    def _send(self, topic: str, key: str, value: bytes, timestamp_ms: int | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key.encode(), value=value, timestamp=timestamp_ms or 0,
                                      on_delivery=self._delivered)  # fmt: skip
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def inference(self, event: dict[str, Any], *, timestamp_ms: int | None = None) -> bytes:
        """Send an inference event; ``timestamp_ms`` sets the record timestamp (default: now)."""
        value = CODEC.encode(INFERENCE, event)
        self._send(self.settings.inference_topic, event["request_id"], value, timestamp_ms)
        return value

    def feedback(self, event: dict[str, Any], *, timestamp_ms: int | None = None) -> bytes:
        """Send a feedback event; ``timestamp_ms`` sets the record timestamp (default: now)."""
        value = CODEC.encode(FEEDBACK, event)
        self._send(self.settings.feedback_topic, event["request_id"], value, timestamp_ms)
        return value

    def signal(self, request_id: str, kind: str, *, candidate_id: str | None = None) -> bytes:
        """Send an implicit signal (on the feedback topic, as the SDK does)."""
        record = {"signal_id": uuid.uuid4().hex, "request_id": request_id, "timestamp_ms": 1_700_000_000_000,
                  "kind": kind, "candidate_id": candidate_id, "value": None, "text": None, "dwell_ms": None,
                  "source": None, "metadata": {}}  # fmt: skip
        value = CODEC.encode(SIGNAL, record)
        self._send(self.settings.feedback_topic, request_id, value)
        return value

    def raw(self, topic: str, key: str, value: bytes, *, timestamp_ms: int | None = None) -> None:
        self._send(topic, key, value, timestamp_ms)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0
        assert not self.failed, f"the broker refused {len(self.failed)} record(s): {self.failed[:3]}"


def poison(rng: random.Random) -> bytes:
    """Bytes the consumer must dead-letter: bad magic, unknown fingerprint or a corrupt body."""
    kind = rng.randrange(3)
    if kind == 0:
        return b"not avro at all " + uuid.uuid4().bytes
    if kind == 1:
        return b"\xc3\x01" + uuid.uuid4().bytes[:8] + b"\x00\x02"
    return CODEC.encode(INFERENCE, inference("x"))[:14]
