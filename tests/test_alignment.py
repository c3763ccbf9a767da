"""The timers of one partition's alignment restart when what they time ends (records from Kafka's own
``Message`` class, as the consumer fetches them)."""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from prefpair.consumers.alignment import FEEDBACK, INFERENCE, AlignedPartition


def _record(side: int, offset: int, timestamp_ms: int) -> Message:
    topic = "inference" if side == INFERENCE else "feedback"
    return Message(topic=topic, partition=0, offset=offset, value=b"event", timestamp=(TIMESTAMP_CREATE_TIME,
                                                                                         timestamp_ms))  # fmt: skip


def test_a_record_handled_restarts_the_idle_clock_even_when_it_came_with_its_partitions_end() -> None:
    aligned = AlignedPartition(max_idle_ms=2_000)
    aligned.reached_end(INFERENCE, 0)
    aligned.reached_end(FEEDBACK, 0)
    assert aligned.idle_since(10.0) == 10.0
    assert aligned.idle_since(40.0) == 10.0  # idle for 30 s

    # feedback and the end of its partition in one fetch (a slow poll), its inference not fetched yet
    aligned.push(FEEDBACK, _record(FEEDBACK, 0, 1_700_000_000_000), 0)
    aligned.reached_end(FEEDBACK, 1)
    popped = aligned.pop(40.0)
    assert popped is not None and popped[0] == FEEDBACK
    assert aligned.pop(40.0) is None and aligned.idle
    # idle from now: counted from 10.0, the feedback would wait "30 s" at once and expire past any grace
    assert aligned.idle_since(40.0) == 40.0
    assert aligned.idle_since(41.0) == 40.0

    aligned.push(INFERENCE, _record(INFERENCE, 0, 1_700_000_000_000), 0)
    assert aligned.idle_since(41.5) is None  # a record queued: not idle


def test_a_wait_for_the_other_topic_starts_afresh_after_that_topic_reached_its_end() -> None:
    aligned = AlignedPartition(max_idle_ms=2_000)
    aligned.push(INFERENCE, _record(INFERENCE, 0, 1_000), 0)
    assert aligned.pop(0.0) is None  # feedback not fetched yet: wait for it
    aligned.reached_end(FEEDBACK, 0)
    assert aligned.pop(0.5) is not None  # the feedback topic has nothing more: go on

    # later, the feedback topic has records again, read without a wait (the inference topic is at its end)...
    aligned.reached_end(INFERENCE, 1)
    aligned.push(FEEDBACK, _record(FEEDBACK, 0, 2_000), 0)
    assert aligned.pop(100.0) is not None
    # ...and an inference arrives before the feedback partition's end is known: wait up to max_idle_ms
    aligned.push(INFERENCE, _record(INFERENCE, 1, 3_000), 0)
    assert aligned.pop(100.0) is None
    assert aligned.pop(101.0) is None
    assert aligned.pop(102.0) is not None and aligned.enforced == 1
