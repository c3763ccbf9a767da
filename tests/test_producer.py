"""PreferenceLogger against a real broker: round trips, refusals, a full queue, a broker that goes away.

Events are read back with a plain confluent_kafka Consumer and the codec, and compared with
records written out by hand here (not with the logger's own output), so a field the logger
drops, renames or mangles fails the test.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from prefpair.broker import LocalBroker
from prefpair.config import Settings
from prefpair.producers import (
    DeliveryError,
    FailedEvent,
    LoggerClosedError,
    PreferenceLogger,
    QueueFullError,
)
from prefpair.schemas import (
    Candidate,
    FeedbackConfig,
    FeedbackSource,
    Message,
    PairwiseOutcome,
    SourceType,
    ValidationError,
)
from prefpair.schemas.registry import FEEDBACK, INFERENCE
from prefpair.schemas.wire import SingleObjectCodec
from prefpair.topics import create_topics

MakeSettings = Callable[..., Settings]
REPO = Path(__file__).resolve().parents[1]
TS = 1_790_000_000_000


# --------------------------------------------------------------------------- reading topics back
def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """High watermark of every partition of the inference and feedback topics."""
    consumer = _consumer(settings)
    try:
        offsets = {}
        for topic in (settings.inference_topic, settings.feedback_topic):
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                offsets[(topic, partition)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )[1]
        return offsets
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    """Every message of ``topic``: (partition, key, record name, decoded record)."""
    codec = SingleObjectCodec()
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        remaining = {p for p, end in ends.items() if end > 0}
        out = []
        while remaining:
            message = consumer.poll(10)
            assert message is not None, f"no message within 10 s; still waiting on partitions {remaining}"
            assert message.error() is None, message.error()
            name, record = codec.decode(message.value())
            out.append((message.partition(), message.key().decode(), name, record))
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
        return out
    finally:
        consumer.close()


def _consumer(settings: Settings) -> Consumer:
    assert settings.bootstrap_servers
    return Consumer({
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"test-producer-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })


# --------------------------------------------------------------------------- expected records
def candidate(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "candidate_id": None, "text": None, "messages": None, "model_name": None, "model_version": None,
        "model_checkpoint": None, "temperature": None, "top_p": None, "max_tokens": None, "seed": None,
        "sampling_extra": {}, "finish_reason": None, "prompt_tokens": None, "completion_tokens": None,
        "latency_ms": None,
    }  # fmt: skip
    return {**base, **fields}


def inference(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": None, "timestamp_ms": None, "system_prompt": None, "prompt": None, "messages": None,
        "candidates": [], "presentation_order": [], "user_id": None, "session_id": None,
        "environment": None, "tags": [], "metadata": {}, "parent_request_id": None,
    }  # fmt: skip
    return {**base, **fields}


def feedback(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "feedback_id": None, "op": "CREATE", "request_id": None, "timestamp_ms": None, "key": None,
        "kind": None, "outcome": None, "chosen_id": None, "rejected_id": None, "ranking": None,
        "candidate_id": None, "score": None, "value": None, "comment": None, "correction": None,
        "config": None, "source": None, "metadata": {}, "experiment_id": None, "feedback_group_id": None,
    }  # fmt: skip
    return {**base, **fields}


def source(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "source_id": None, "model": None, "model_version": None, "run_id": None, **fields}


def without_event_id(record: dict[str, Any]) -> dict[str, Any]:
    event_id = record["event_id"]
    assert isinstance(event_id, str) and len(event_id) == 32
    return {k: v for k, v in record.items() if k != "event_id"}


# --------------------------------------------------------------------------- round trip
def test_every_event_kind_round_trips(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=4)
    with PreferenceLogger(settings) as logger:
        full_candidate = {
            "candidate_id": "a", "text": "Federated learning keeps data local.", "model_name": "chat-large",
            "model_version": "2026-11", "model_checkpoint": "ckpt-42", "temperature": 0.7, "top_p": 0.95,
            "max_tokens": 512, "seed": 2**40, "sampling_extra": {"presence_penalty": "0.1"},
            "finish_reason": "stop", "prompt_tokens": 12, "completion_tokens": 80, "latency_ms": 812.5,
        }  # fmt: skip
        rid1 = logger.log_inference(
            prompt="Summarize the key arguments for federated learning.",
            system_prompt="Be brief.",
            candidates=[full_candidate, {"candidate_id": "b", "text": "It is private.", "model_name": "chat-small"}],
            presentation_order=["b", "a"], user_id="u-17", session_id="s-1", environment="production",
            tags=["faq", "ml"], metadata={"app": "test"}, timestamp_ms=TS,
        )  # fmt: skip
        assert len(rid1) == 32 and int(rid1, 16) >= 0  # generated uuid4 hex
        rid2 = logger.log_inference(
            request_id="req-chat-2",
            messages=[Message(role="user", content="Hi"), {"role": "assistant", "content": "Hello", "name": "bot"},
                      {"role": "user", "content": "Tell me a joke"}],
            candidates=[
                Candidate(candidate_id="x", messages=[Message(role="assistant", content="Knock knock.")],
                          model_name="chat-large"),
                Candidate(candidate_id="y", text="Why did the chicken...", model_name="chat-large", seed=-1),
                {"candidate_id": "z", "text": "", "model_name": "chat-tiny"},
            ],
            timestamp_ms=TS + 1,
        )  # fmt: skip
        assert rid2 == "req-chat-2"

        fb = []
        fb.append(logger.log_preference(rid1, chosen="a", rejected="b", source="app_user", timestamp_ms=TS + 2,
                                        metadata={"ui": "side-by-side"}))  # fmt: skip
        fb.append(logger.log_preference(rid2, chosen="x", rejected="y", outcome="tie", key="judge_preference",
                                        feedback_id="fb-judge-1", comment="equally good", timestamp_ms=TS + 3,
                                        source={"type": "model_judge", "model": "judge-xl", "model_version": "3",
                                                "run_id": "run-9"}))  # fmt: skip
        fb.append(logger.log_preference(rid2, chosen="y", rejected="z", outcome=PairwiseOutcome.BOTH_BAD,
                                        source=SourceType.HUMAN_ANNOTATOR, timestamp_ms=TS + 4))  # fmt: skip
        fb.append(logger.log_ranking(rid2, ranking=[["x"], ["y", "z"]], timestamp_ms=TS + 5,
                                     source=FeedbackSource(type=SourceType.HUMAN_ANNOTATOR, source_id="ann-3")))
        fb.append(logger.log_ranking(rid1, ranking=["b", "a"], key="annotator_rank", timestamp_ms=TS + 6,
                                     source="human_annotator"))  # fmt: skip
        fb.append(logger.log_feedback(rid1, key="user_rating", score=1, candidate="a", timestamp_ms=TS + 7,
                                      config={"type": "CONTINUOUS", "min": 0, "max": 1}, source="APP_USER"))
        fb.append(logger.log_feedback(rid1, key="correctness", value="partly", candidate="b", timestamp_ms=TS + 8,
                                      config=FeedbackConfig.parse({"type": "CATEGORICAL", "categories": [
                                          {"label": "yes", "value": 1}, {"label": "partly", "value": 0.5},
                                          {"label": "no"}]}),
                                      source="human_annotator"))  # fmt: skip
        fb.append(logger.log_feedback(rid2, key="note", comment="too long", correction="A shorter joke.",
                                      candidate="y", config={"type": "FREEFORM"}, timestamp_ms=TS + 9))
        fb.append(logger.log_feedback(rid2, key="reward", score=-3.25, candidate="z", timestamp_ms=TS + 10,
                                      source={"type": "REWARD_MODEL", "model": "rm", "model_version": "v3"}))
        logger.update_feedback(fb[0], request_id=rid1, comment="changed my mind", chosen="b", rejected="a",
                               timestamp_ms=TS + 11)  # fmt: skip
        logger.update_feedback(fb[5], request_id=rid1, comment="on reflection", timestamp_ms=TS + 12)
        logger.delete_feedback(fb[8], request_id=rid2, timestamp_ms=TS + 13)
        assert logger.flush(30) == 0
        assert len(set(fb)) == len(fb) and fb[1] == "fb-judge-1"
    report = logger.close()
    assert report.ok and report.sent == report.delivered == 14 and report.failed == 0

    expected_inference = {
        rid1: inference(
            request_id=rid1, timestamp_ms=TS, system_prompt="Be brief.",
            prompt="Summarize the key arguments for federated learning.",
            candidates=[candidate(**full_candidate),
                        candidate(candidate_id="b", text="It is private.", model_name="chat-small")],
            presentation_order=["b", "a"], user_id="u-17", session_id="s-1", environment="production",
            tags=["faq", "ml"], metadata={"app": "test"},
        ),
        rid2: inference(
            request_id=rid2, timestamp_ms=TS + 1,
            messages=[{"role": "user", "content": "Hi", "name": None},
                      {"role": "assistant", "content": "Hello", "name": "bot"},
                      {"role": "user", "content": "Tell me a joke", "name": None}],
            candidates=[
                candidate(candidate_id="x", messages=[{"role": "assistant", "content": "Knock knock.", "name": None}],
                          model_name="chat-large"),
                candidate(candidate_id="y", text="Why did the chicken...", model_name="chat-large", seed=-1),
                candidate(candidate_id="z", text="", model_name="chat-tiny"),
            ],
        ),
    }  # fmt: skip
    categories = [{"label": "yes", "value": 1.0}, {"label": "partly", "value": 0.5}, {"label": "no", "value": None}]
    expected_feedback = [
        feedback(feedback_id=fb[0], request_id=rid1, timestamp_ms=TS + 2, key="preference", kind="PAIRWISE",
                 outcome="PREFERRED", chosen_id="a", rejected_id="b", source=source("APP_USER"),
                 metadata={"ui": "side-by-side"}),
        feedback(feedback_id="fb-judge-1", request_id=rid2, timestamp_ms=TS + 3, key="judge_preference",
                 kind="PAIRWISE", outcome="TIE", chosen_id="x", rejected_id="y", comment="equally good",
                 source=source("MODEL_JUDGE", model="judge-xl", model_version="3", run_id="run-9")),
        feedback(feedback_id=fb[2], request_id=rid2, timestamp_ms=TS + 4, key="preference", kind="PAIRWISE",
                 outcome="BOTH_BAD", chosen_id="y", rejected_id="z", source=source("HUMAN_ANNOTATOR")),
        feedback(feedback_id=fb[3], request_id=rid2, timestamp_ms=TS + 5, key="ranking", kind="RANKING",
                 ranking=[["x"], ["y", "z"]], source=source("HUMAN_ANNOTATOR", source_id="ann-3")),
        feedback(feedback_id=fb[4], request_id=rid1, timestamp_ms=TS + 6, key="annotator_rank", kind="RANKING",
                 ranking=[["b"], ["a"]], source=source("HUMAN_ANNOTATOR")),
        feedback(feedback_id=fb[5], request_id=rid1, timestamp_ms=TS + 7, key="user_rating", kind="SCORE",
                 candidate_id="a", score=1.0, source=source("APP_USER"),
                 config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0, "categories": []}),
        feedback(feedback_id=fb[6], request_id=rid1, timestamp_ms=TS + 8, key="correctness", kind="SCORE",
                 candidate_id="b", value="partly", source=source("HUMAN_ANNOTATOR"),
                 config={"type": "CATEGORICAL", "min": None, "max": None, "categories": categories}),
        feedback(feedback_id=fb[7], request_id=rid2, timestamp_ms=TS + 9, key="note", kind="SCORE",
                 candidate_id="y", comment="too long", correction="A shorter joke.", source=source("API"),
                 config={"type": "FREEFORM", "min": None, "max": None, "categories": []}),
        feedback(feedback_id=fb[8], request_id=rid2, timestamp_ms=TS + 10, key="reward", kind="SCORE",
                 candidate_id="z", score=-3.25, source=source("REWARD_MODEL", model="rm", model_version="v3")),
        feedback(feedback_id=fb[0], op="UPDATE", request_id=rid1, timestamp_ms=TS + 11, kind="PAIRWISE",
                 outcome="PREFERRED", chosen_id="b", rejected_id="a", comment="changed my mind"),
        feedback(feedback_id=fb[5], op="UPDATE", request_id=rid1, timestamp_ms=TS + 12, comment="on reflection"),
        feedback(feedback_id=fb[8], op="DELETE", request_id=rid2, timestamp_ms=TS + 13),
    ]  # fmt: skip

    inferences = read_topic(settings, settings.inference_topic)
    feedbacks = read_topic(settings, settings.feedback_topic)
    assert {key: without_event_id(record) for _, key, _, record in inferences} == expected_inference
    assert all(name == INFERENCE for _, _, name, _ in inferences)
    assert all(name == FEEDBACK for _, _, name, _ in feedbacks)
    assert all(key == record["request_id"] for _, key, _, record in inferences + feedbacks)
    got = sorted((without_event_id(r) for _, _, _, r in feedbacks), key=lambda r: r["timestamp_ms"])
    assert got == expected_feedback
    # Co-partitioning: every event of a request sits in the same partition number of both topics.
    partition_of = {key: partition for partition, key, _, _ in inferences}
    assert all(partition == partition_of[key] for partition, key, _, _ in feedbacks)
    event_ids = [r["event_id"] for _, _, _, r in inferences + feedbacks]
    assert len(set(event_ids)) == len(event_ids) == 14


# --------------------------------------------------------------------------- refusals
BadCall = Callable[[PreferenceLogger, str], Any]
CANDIDATES = [{"candidate_id": c, "text": c.upper(), "model_name": "m"} for c in ("a", "b")]
RANGE = {"type": "CONTINUOUS", "min": 1, "max": 5}
LABELS = {"type": "CATEGORICAL", "categories": [{"label": "good"}, {"label": "bad"}]}

BAD_INPUTS: list[tuple[str, str, BadCall]] = [
    ("unknown candidate id in a preference", "rejected_id",
     lambda log, rid: log.log_preference(rid, chosen="a", rejected="zz")),
    ("unknown chosen id", "chosen_id", lambda log, rid: log.log_preference(rid, chosen="zz", rejected="a")),
    ("unknown candidate in a ranking", "ranking", lambda log, rid: log.log_ranking(rid, ranking=["a", "zz"])),
    ("unknown candidate of a score", "candidate_id",
     lambda log, rid: log.log_feedback(rid, key="thumbs", score=1, candidate="zz")),
    ("unknown candidate, ids given by the caller", "candidate_id",
     lambda log, rid: log.log_feedback("elsewhere", key="k", score=1, candidate="q", candidates=["p", "r"])),
    ("unknown candidate in an update", "chosen_id",
     lambda log, rid: log.update_feedback("f", request_id=rid, chosen="zz", rejected="a")),
    ("chosen equals rejected", "rejected_id", lambda log, rid: log.log_preference(rid, chosen="a", rejected="a")),
    ("score above the config's max", "score",
     lambda log, rid: log.log_feedback(rid, key="stars", score=6, candidate="a", config=RANGE)),
    ("score below the config's min", "score",
     lambda log, rid: log.log_feedback(rid, key="stars", score=0.5, candidate="a", config=RANGE)),
    ("score not a number", "score", lambda log, rid: log.log_feedback(rid, key="r", score=math.nan, candidate="a")),
    ("category not allowed", "value",
     lambda log, rid: log.log_feedback(rid, key="verdict", value="meh", candidate="a", config=LABELS)),
    ("categorical config without categories", "config.categories",
     lambda log, rid: log.log_feedback(rid, key="verdict", value="meh", config={"type": "CATEGORICAL"})),
    ("score judgment without anything", "score", lambda log, rid: log.log_feedback(rid, key="empty")),
    ("empty prompt", "prompt", lambda log, rid: log.log_inference(prompt="  ", candidates=CANDIDATES)),
    ("no prompt at all", "prompt", lambda log, rid: log.log_inference(candidates=CANDIDATES)),
    ("no candidates", "candidates", lambda log, rid: log.log_inference(prompt="p", candidates=[])),
    ("duplicate candidate ids", "candidates.candidate_id",
     lambda log, rid: log.log_inference(prompt="p", candidates=CANDIDATES + CANDIDATES[:1])),
    ("candidate without output", "candidates.text",
     lambda log, rid: log.log_inference(prompt="p", candidates=[{"candidate_id": "a", "model_name": "m"}])),
    ("candidate without model", "candidates.0.model_name",
     lambda log, rid: log.log_inference(prompt="p", candidates=[{"candidate_id": "a", "text": "t"}])),
    ("presentation order names an unknown candidate", "presentation_order",
     lambda log, rid: log.log_inference(prompt="p", candidates=CANDIDATES, presentation_order=["a", "c"])),
    ("metadata value not a string", "metadata.n",
     lambda log, rid: log.log_inference(prompt="p", candidates=CANDIDATES, metadata={"n": 1})),
    ("message over the size limit", "message",
     lambda log, rid: log.log_inference(prompt="x" * 1_100_000, candidates=CANDIDATES)),
    ("missing source", "source", lambda log, rid: log.log_preference(rid, chosen="a", rejected="b", source=None)),
    ("unknown source type", "source",
     lambda log, rid: log.log_preference(rid, chosen="a", rejected="b", source="robot")),
    ("missing key", "key", lambda log, rid: log.log_feedback(rid, key="", score=1, candidate="a")),
    ("blank key", "key", lambda log, rid: log.log_feedback(rid, key="  ", score=1, candidate="a")),
    ("unknown outcome", "outcome",
     lambda log, rid: log.log_preference(rid, chosen="a", rejected="b", outcome="maybe")),
    ("ranking of one candidate", "ranking", lambda log, rid: log.log_ranking(rid, ranking=["a"])),
    ("candidate twice in a ranking", "ranking", lambda log, rid: log.log_ranking(rid, ranking=[["a", "b"], ["a"]])),
    ("empty request id", "request_id", lambda log, rid: log.log_preference("", chosen="a", rejected="b")),
    ("update restating two judgments", "score",
     lambda log, rid: log.update_feedback("f", request_id=rid, ranking=["a", "b"], score=1.0)),
]  # fmt: skip


def test_bad_input_names_the_field_and_sends_nothing(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2)
    with PreferenceLogger(settings) as logger:
        request_id = logger.log_inference(prompt="p", candidates=CANDIDATES)
        assert logger.flush(30) == 0
        before, sent = end_offsets(settings), logger.stats.sent
        assert sum(before.values()) == 1  # the one good event is there: offsets are being read right

        failures = []
        for label, field, call in BAD_INPUTS:
            try:
                call(logger, request_id)
            except ValidationError as exc:
                if exc.field != field or not exc.reason:
                    failures.append(f"{label}: field {exc.field!r} ({exc.reason}), expected {field!r}")
            else:
                failures.append(f"{label}: accepted")
        assert not failures, "\n".join(failures)
        calls = {label: call for label, _, call in BAD_INPUTS}
        assert "bytes over the limit" in _raised(calls["message over the size limit"], logger, request_id).reason
        assert "'zz'" in _raised(calls["unknown candidate id in a preference"], logger, request_id).reason

        assert logger.flush(30) == 0
        assert logger.stats.sent == sent
    assert end_offsets(settings) == before


def _raised(call: BadCall, logger: PreferenceLogger, request_id: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        call(logger, request_id)
    return info.value


def test_max_message_bytes_is_configurable(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    with PreferenceLogger(settings, max_message_bytes=600) as logger:
        small = logger.log_inference(prompt="p", candidates=CANDIDATES)
        with pytest.raises(ValidationError) as info:
            logger.log_inference(prompt="p" * 600, candidates=CANDIDATES)
        assert info.value.field == "message"
    assert logger.close().delivered == 1
    assert [key for _, key, _, _ in read_topic(settings, settings.inference_topic)] == [small]


# --------------------------------------------------------------------------- queue full, closing, threads
def test_queue_full_raise_refuses_and_block_waits_for_room(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    # linger.ms holds messages locally, so a 3-message queue stays full.
    held = {"queue.buffering.max.messages": 3, "linger.ms": 60_000}
    with PreferenceLogger(settings, queue_full="raise", producer_config=held) as logger:
        ids = [logger.log_inference(prompt="p", candidates=CANDIDATES) for _ in range(3)]
        with pytest.raises(QueueFullError) as info:
            logger.log_inference(prompt="p", candidates=CANDIDATES)
        assert info.value.queued == 3
        assert logger.stats.sent == 3
    with PreferenceLogger(settings, queue_full="block", queue_full_timeout=0.2, producer_config=held) as logger:
        ids += [logger.log_inference(prompt="p", candidates=CANDIDATES) for _ in range(3)]
        with pytest.raises(QueueFullError) as info:
            logger.log_inference(prompt="p", candidates=CANDIDATES)
        assert info.value.timeout == 0.2
    # Blocking with room coming back (short linger): every event is accepted, none dropped.
    quick = {"queue.buffering.max.messages": 3, "linger.ms": 20}
    with PreferenceLogger(settings, queue_full="block", queue_full_timeout=60, producer_config=quick) as logger:
        ids += [logger.log_inference(prompt="p", candidates=CANDIDATES) for _ in range(12)]
    assert logger.close().delivered == 12
    assert sorted(key for _, key, _, _ in read_topic(settings, settings.inference_topic)) == sorted(ids)


def test_closed_logger_refuses_and_close_is_idempotent(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    logger = PreferenceLogger(settings)
    request_id = logger.log_inference(prompt="p", candidates=CANDIDATES)
    first = logger.close()
    assert first.ok and first.delivered == 1 and logger.closed
    with pytest.raises(LoggerClosedError):
        logger.log_preference(request_id, chosen="a", rejected="b")
    assert logger.close() is first
    assert logger.stats.sent == 1


def test_threads_and_asyncio_share_one_logger(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=4)
    logger = PreferenceLogger(settings)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(100):
                rid = logger.log_inference(request_id=f"t{thread}-{i}", prompt="p", candidates=CANDIDATES)
                logger.log_preference(rid, chosen="a", rejected="b")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()

    async def on_a_loop() -> int:
        for i in range(50):
            logger.log_inference(request_id=f"loop-{i}", prompt="p", candidates=CANDIDATES)
        return await logger.aflush(30)

    assert asyncio.run(on_a_loop()) == 0
    for thread in threads:
        thread.join()
    assert not errors
    report = logger.close()
    assert report.ok and report.sent == report.delivered == 850
    assert logger.stats.sent == 850 and logger.stats.queued == 0
    events = read_topic(settings, settings.inference_topic) + read_topic(settings, settings.feedback_topic)
    assert len({r["event_id"] for _, _, _, r in events}) == len(events) == 850


# --------------------------------------------------------------------------- a broker that goes away
@pytest.fixture
def private_broker(tmp_path: Path, broker_cache_dir: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path / "broker", cache_dir=broker_cache_dir)
    try:
        yield broker
    finally:
        broker.stop()


def _log_request(logger: PreferenceLogger, request_id: str) -> str:
    logger.log_inference(request_id=request_id, prompt="p", candidates=CANDIDATES)
    return logger.log_preference(request_id, chosen="a", rejected="b")


@pytest.mark.slow
def test_events_survive_a_broker_restart_and_fail_when_it_stays_down(
    private_broker: LocalBroker, tmp_path: Path
) -> None:
    bootstrap = private_broker.start(timeout=90)
    settings = Settings(bootstrap_servers=bootstrap, home=tmp_path / "home", partitions=2,
                        inference_topic="restart.inference", feedback_topic="restart.feedback",
                        dead_letter_topic="restart.dead-letters")  # fmt: skip
    create_topics(settings)

    # 1. Down for a while, back within the delivery timeout: everything lands, exactly once.
    logger = PreferenceLogger(settings, delivery_timeout_ms=180_000)
    for i in range(10):
        _log_request(logger, f"before-{i}")
    assert logger.flush(30) == 0
    private_broker.stop()
    for i in range(10):
        _log_request(logger, f"during-{i}")  # returns at once: buffered by librdkafka
    assert logger.flush(1) > 0 and logger.stats.failed == 0
    assert private_broker.start(timeout=90) == bootstrap  # same port, same data
    report = logger.close(timeout=120)
    assert report.ok and report.sent == report.delivered == 40, report

    events = read_topic(settings, settings.inference_topic) + read_topic(settings, settings.feedback_topic)
    per_event = Counter(record["event_id"] for _, _, _, record in events)
    assert len(per_event) == 40 and set(per_event.values()) == {1}
    per_request = Counter(key for _, key, _, _ in events)
    assert per_request == {f"{when}-{i}": 2 for when in ("before", "during") for i in range(10)}

    # 2. Down for longer than the delivery timeout: close() reports each undelivered event.
    seen: list[FailedEvent] = []
    logger = PreferenceLogger(settings, delivery_timeout_ms=5_000, on_delivery_error=seen.append)
    _log_request(logger, "ok-0")
    assert logger.flush(30) == 0
    private_broker.stop()
    lost_feedback = {_log_request(logger, f"lost-{i}") for i in range(3)}
    deadline = time.monotonic() + 30
    while len(seen) < 6 and time.monotonic() < deadline:  # no calls: the logger's own thread reports
        time.sleep(0.2)
    assert len(seen) == 6 and logger.stats.failed == 6
    report = logger.close()
    assert (report.sent, report.delivered, report.failed, report.pending) == (8, 2, 6, 0)
    assert {f.request_id for f in report.failed_events} == {"lost-0", "lost-1", "lost-2"}
    assert {f.feedback_id for f in report.failed_events} - {None} == lost_feedback
    assert {f.topic for f in report.failed_events} == {settings.inference_topic, settings.feedback_topic}
    assert len(set(report.failed_event_ids)) == 6 and all(f.value for f in report.failed_events)
    assert sorted(f.event_id or "" for f in seen) == sorted(report.failed_event_ids)
    assert logger.stats.failed == 6
    with pytest.raises(DeliveryError) as info:
        report.raise_for_failures()
    assert len(info.value.failed) == 6


# --------------------------------------------------------------------------- examples
def _example_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
    assert settings.bootstrap_servers
    env.update({
        "PREFPAIR_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "PREFPAIR_INFERENCE_TOPIC": settings.inference_topic,
        "PREFPAIR_FEEDBACK_TOPIC": settings.feedback_topic,
        "PREFPAIR_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "PREFPAIR_HOME": str(settings.home),
    })  # fmt: skip
    return env


def test_batch_reward_scores_example(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps({
        "request_id": f"batch-{i}", "prompt": f"question {i}",
        "candidates": [{"candidate_id": c, "text": f"answer {c}{i}" * (i + 1), "model_name": "chat-small"}
                       for c in ("a", "b")],
    }) for i in range(4)) + "\n")  # fmt: skip
    script = REPO / "examples" / "batch_reward_scores.py"
    assert "--limit" in _run([str(script), "--help"], _example_env(settings)).stdout
    result = _run([str(script), str(requests), "--limit", "3", "--log-inference"], _example_env(settings))
    assert "3 requests, 6 scores delivered" in result.stdout, result.stdout

    inferences = read_topic(settings, settings.inference_topic)
    scores = [record for _, _, _, record in read_topic(settings, settings.feedback_topic)]
    assert sorted(key for _, key, _, _ in inferences) == ["batch-0", "batch-1", "batch-2"]
    assert sorted((s["request_id"], s["candidate_id"]) for s in scores) == [
        (f"batch-{i}", c) for i in range(3) for c in ("a", "b")
    ]
    assert all(s["source"]["type"] == "REWARD_MODEL" and s["key"] == "reward" for s in scores)
    assert len({s["source"]["run_id"] for s in scores}) == 1


def test_async_web_handler_example(make_settings: MakeSettings) -> None:
    import urllib.request

    settings = make_settings(partitions=2)
    script = REPO / "examples" / "async_web_handler.py"
    assert "--max-requests" in _run([str(script), "--help"], _example_env(settings)).stdout
    server = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--max-requests", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_example_env(settings),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        address = server.stdout.readline().split()[-1]  # "listening on http://127.0.0.1:PORT"
        assert address.startswith("http://127.0.0.1:"), address

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(address + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer

        chat = post("/chat", {"prompt": "What is Kafka?", "user_id": "u-1"})
        ids = [c["candidate_id"] for c in chat["candidates"]]
        vote = post("/feedback", {"request_id": chat["request_id"], "chosen": ids[1], "rejected": ids[0]})
        assert vote["feedback_id"]
        out, err = server.communicate(timeout=60)
        assert server.returncode == 0, err
        assert "handled 2 requests; 2 events delivered, 0 failed" in out, out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    (inference_event,) = [r for _, _, _, r in read_topic(settings, settings.inference_topic)]
    (preference,) = [r for _, _, _, r in read_topic(settings, settings.feedback_topic)]
    assert inference_event["request_id"] == preference["request_id"] == chat["request_id"]
    assert inference_event["prompt"] == "What is Kafka?" and inference_event["user_id"] == "u-1"
    assert (preference["chosen_id"], preference["rejected_id"]) == (ids[1], ids[0])
    assert preference["feedback_id"] == vote["feedback_id"] and preference["source"]["type"] == "APP_USER"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result
