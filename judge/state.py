"""The durable state of a judge run, and the recovery that makes a resumed run write nothing twice.

A run lives in ``<home>/judge/<run id>/``: ``state.json`` (replaced atomically: written aside,
fsynced, renamed) and ``lock`` (an ``flock`` the operating system releases when the process dies,
even by SIGKILL). The state holds the run's definition (a resumed run must be the same run), the
feedback ids Kafka acknowledged at each checkpoint, the tokens and questions counted so far, and,
per attempt, the feedback topic's end offsets when the attempt began.

Judgments sent after the last checkpoint of a crashed attempt are in the topic but not in the
state. Before a new attempt sends anything, :func:`recover` reads the feedback topic from where
the previous attempt began to its end and adds the ids of this run's judgments it finds (source
``run_id``) to the state. Every earlier attempt was recovered the same way before the next began,
so only the last attempt's range is ever read.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from prefpair.config import Settings
from prefpair.durable import write_text_atomic
from prefpair.judge.exceptions import RunStateError
from prefpair.kafka import client_config, create_consumer
from prefpair.schemas.exceptions import DecodeError
from prefpair.schemas.models import now_ms
from prefpair.schemas.wire import codec_for

STATE_FILE = "state.json"
LOCK_FILE = "lock"
STATE_VERSION = 1
WATERMARK_TIMEOUT_S = 10.0
RECOVERY_TIMEOUT_S = 120.0
_LEADER_CODES = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._UNKNOWN_PARTITION,
                 KafkaError.UNKNOWN_TOPIC_OR_PART)


@dataclass
class Totals:
    """What a run has cost so far, over all its attempts (as of its last checkpoint)."""

    questions: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Totals) -> None:
        self.questions += other.questions
        self.retries += other.retries
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass
class RunState:
    run_id: str
    definition: dict[str, Any]
    feedback_topic: str
    done: set[str] = field(default_factory=set)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    finished: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "run_id": self.run_id,
                "definition": self.definition,
                "feedback_topic": self.feedback_topic,
                "finished": self.finished,
                "totals": vars(self.totals),
                "attempts": self.attempts,
                "done": sorted(self.done),
            },
            indent=1,
        )


class RunDirectory:
    """The folder of one run: its lock and its state file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock; another process judging the same run is refused, not waited for."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunStateError(str(self.path), "another `prefpair judge` is running this run") from None
            yield
        finally:
            os.close(fd)

    def load(self, run_id: str, definition: dict[str, Any], feedback_topic: str) -> RunState:
        """The saved state, or a new one; refuses a state of another definition or topic."""
        if not self.state_path.exists():
            return RunState(run_id, definition, feedback_topic)
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunStateError(str(self.state_path), f"unreadable run state: {exc}") from None
        if raw.get("definition") != definition:
            raise RunStateError(
                str(self.state_path),
                "this run id was used by another judge definition (evaluator, kind, key, template or selection "
                "changed); give another --run-id",
            )
        if raw.get("feedback_topic") != feedback_topic:
            raise RunStateError(
                str(self.state_path),
                f"this run wrote to topic {raw.get('feedback_topic')!r}, not {feedback_topic!r}; give another --run-id",
            )
        return RunState(
            run_id=run_id,
            definition=definition,
            feedback_topic=feedback_topic,
            done=set(raw.get("done", [])),
            attempts=list(raw.get("attempts", [])),
            totals=Totals(**raw.get("totals", {})),
            finished=bool(raw.get("finished", False)),
        )

    def save(self, state: RunState) -> None:
        write_text_atomic(self.state_path, state.to_json())


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The high watermark of every partition of ``topic``."""
    consumer = create_consumer(client_config(settings, group_id="prefpair-judge-offsets", enable_auto_commit=False))
    try:
        metadata = consumer.list_topics(topic, timeout=WATERMARK_TIMEOUT_S)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        if not partitions:
            raise RunStateError(topic, "the feedback topic does not exist (run `prefpair topics create`)")
        return {p: _high_watermark(consumer, TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


def _high_watermark(consumer: Any, partition: TopicPartition) -> int:
    """The partition's end offset, retrying while its leader is not known yet (a topic just created)."""
    deadline = time.monotonic() + WATERMARK_TIMEOUT_S
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=WATERMARK_TIMEOUT_S)[1])
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (error.retriable() or error.code() in _LEADER_CODES)
            if not retriable or time.monotonic() > deadline:
                raise RunStateError(partition.topic, f"cannot read the end offset of partition "
                                    f"{partition.partition}: {error.str() if error else exc}") from None
            time.sleep(0.2)


def begin_attempt(settings: Settings, state: RunState) -> None:
    """Record where this attempt starts writing (before it writes anything)."""
    offsets = end_offsets(settings, state.feedback_topic)
    state.attempts.append({"started_ms": now_ms(), "offsets": {str(p): o for p, o in offsets.items()}})


def recover(settings: Settings, state: RunState) -> int:
    """Add to ``state.done`` this run's judgments found in the topic since the last attempt began; returns how many."""
    if not state.attempts:
        return 0
    start = {int(p): int(o) for p, o in state.attempts[-1]["offsets"].items()}
    end = end_offsets(settings, state.feedback_topic)
    todo = {p: (start.get(p, 0), e) for p, e in end.items() if e > start.get(p, 0)}
    if not todo:
        return 0
    codec = codec_for(settings)
    found: set[str] = set()
    consumer = create_consumer(client_config(
        settings, group_id=f"prefpair-judge-{state.run_id}", enable_auto_commit=False, enable_partition_eof=True,
    ))  # fmt: skip
    try:
        consumer.assign([TopicPartition(state.feedback_topic, p, s) for p, (s, _) in todo.items()])
        remaining = set(todo)
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise RunStateError(state.feedback_topic, f"could not read partitions {sorted(remaining)} to their end "
                                    f"within {RECOVERY_TIMEOUT_S:g} s to recover the last attempt")
            for message in consumer.consume(500, timeout=0.5):
                partition, offset, error = message.partition(), message.offset(), message.error()
                if partition is None:
                    continue
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(partition)
                    continue
                if offset is not None and offset + 1 >= todo[partition][1]:
                    remaining.discard(partition)
                fid = _run_feedback_id(codec, message.value(), state.run_id)
                if fid is not None:
                    found.add(fid)
    finally:
        consumer.close()
    new = found - state.done
    state.done |= found
    return len(new)


def _run_feedback_id(codec: Any, value: bytes | None, run_id: str) -> str | None:
    """The feedback id of a CREATE of this run, or None (another producer's message, or one we cannot read)."""
    if not value:
        return None
    try:
        _, record = codec.decode(value)
    except DecodeError:
        return None
    source = record.get("source") or {}
    if record.get("op") == "CREATE" and source.get("run_id") == run_id:
        return str(record["feedback_id"])
    return None
