"""The consumer's event-time join, resumable waiting state and per-pipeline dead letters, against
the real broker: what a backlog with large inference and small feedback messages does, what
record timestamps decide, what a restart and compaction keep, and what two pipelines see."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from conftest import MakeSettings
from consumer_support import cli_env, dead_letters, feedback_rows, log_ids
from events import RawProducer, inference, pairwise

from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon, compact
from prefpair.consumers.dead_letters import H_OFFSET, H_PIPELINE, DeadLetterSink
from prefpair.consumers.segments import STATE_FILE, read_resume_state
from prefpair.schemas.log import committed_segments, table_files


def orphan_ids(log_dir: Path) -> list[str]:
    files = [str(f) for f in table_files(log_dir, "orphans")]
    return [r[0] for r in duckdb.sql(f"SELECT feedback_id FROM read_parquet({files})").fetchall()] if files else []


def consume_until_caught_up(settings: Settings, *flags: str, timeout: float = 300) -> dict[str, Any]:
    """``prefpair consume --until-caught-up`` as a user runs it; returns its final stats line."""
    result = subprocess.run([sys.executable, "-m", "prefpair.cli", "consume", "--until-caught-up", *flags],
                            env=cli_env(settings), capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return stats


# --------------------------------------------------------------------------- a backlog read from the start
@pytest.fixture(scope="module")
def backlog(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, set[str], set[str]]:
    """2,400 requests whose ~10 KB inference events were all produced before their ~300-byte
    feedback, plus 30 feedback events (spread through the feedback topic) whose inference never comes."""
    from conftest import unique_topics

    from prefpair.topics import create_topics

    settings = Settings(bootstrap_servers=kafka_bootstrap, home=tmp_path_factory.mktemp("backlog"), partitions=2,
                        **unique_topics("backlog"))  # fmt: skip
    create_topics(settings)
    producer = RawProducer(settings)
    n = 2_400
    for i in range(n):
        producer.inference(inference(f"b-{i}", size=5_000))
    producer.flush()
    joined: set[str] = set()
    missing: set[str] = set()
    for i in range(n):
        producer.feedback(pairwise(f"b-{i}", feedback_id=f"fb-{i}"))
        joined.add(f"fb-{i}")
        if i % 80 == 0:
            producer.feedback(pairwise(f"never-{i}", feedback_id=f"lost-{i}"))
            missing.add(f"lost-{i}")
    producer.flush()
    return settings, joined, missing


@pytest.mark.parametrize("fetch", ["default", "small-fetches"])
def test_backlog_with_large_inference_events_orphans_only_what_truly_lacks_its_inference(
    backlog: tuple[Settings, set[str], set[str]], tmp_path: Path, fetch: str
) -> None:
    settings, joined, missing = backlog
    own = settings.model_copy(update={"home": tmp_path / fetch})  # a pipeline of its own on the same topics
    flags = ["--group-id", f"backlog-{fetch}", "--grace-ms", "2000"]
    if fetch == "small-fetches":  # the inference topic trickles in; the feedback topic is read in a few fetches
        flags += ["--kafka-option", "max.partition.fetch.bytes=32768"]
    stats = consume_until_caught_up(own, *flags)
    rows = {r["feedback_id"]: r["join_path"] for r in feedback_rows(own.log_dir)}
    assert set(rows) == joined
    assert sorted(orphan_ids(own.log_dir)) == sorted(missing)
    assert stats["orphans"] == len(missing) and stats["joined"] == len(joined)
    assert Counter(rows.values())["hot"] > len(joined) * 0.9  # aligned: each inference came just before


# --------------------------------------------------------------------------- record timestamps decide
def test_record_timestamps_decide_what_joins_whatever_the_order_of_production(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    producer = RawProducer(settings)
    t0 = int(time.time() * 1000) - 3_600_000  # an hour-old backlog: the wall clock plays no part
    grace = 10_000
    # Every feedback is produced first, every inference after it: only the timestamps say what is on time.
    feedback_at = {
        "f-within": ("r-within", t0 + 95_000),  # 5 s before its inference: waits and joins
        "f-exact": ("r-exact", t0 + 140_000),  # exactly the grace before its inference: joins
        "f-too-early": ("r-too-early", t0 + 185_000),  # 15 s before its inference: an orphan
        "f-after": ("r-after", t0 + 300_000),  # after its inference: joins from memory
        "f-missing": ("r-missing", t0 + 400_000),  # its inference never comes: an orphan
    }
    for feedback_id, (request_id, ts) in feedback_at.items():
        producer.feedback(pairwise(request_id, feedback_id=feedback_id), timestamp_ms=ts)
    producer.flush()
    for request_id, ts in [("r-within", t0 + 100_000), ("r-exact", t0 + 150_000), ("r-too-early", t0 + 200_000),
                           ("r-after", t0 + 290_000), ("r-later", t0 + 500_000)]:  # fmt: skip
        producer.inference(inference(request_id), timestamp_ms=ts)
    producer.flush()

    stats = ConsumerDaemon(settings, ConsumerConfig(grace_ms=grace, flush_interval_ms=100)).run(until_caught_up=True)

    paths = {r["feedback_id"]: r["join_path"] for r in feedback_rows(settings.log_dir)}
    assert paths == {"f-within": "waited", "f-exact": "waited", "f-after": "hot"}
    assert sorted(orphan_ids(settings.log_dir)) == ["f-missing", "f-too-early"]
    files = [str(f) for f in table_files(settings.log_dir, "orphans")]
    reasons = dict(duckdb.sql(f"SELECT feedback_id, reason FROM read_parquet({files})").fetchall())
    assert "of event time" in reasons["f-too-early"] and str(t0 + 185_000) in reasons["f-too-early"]
    assert stats.stream_time_ms == t0 + 500_000


def test_a_record_stamped_far_ahead_of_the_clock_does_not_make_on_time_feedback_late(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(partitions=1)
    producer = RawProducer(settings)
    config = ConsumerConfig(grace_ms=10_000, flush_interval_ms=100)
    t0 = int(time.time() * 1000) - 3_600_000
    ahead = 50 * 60_000 + 3_600_000  # 50 minutes ahead of now (the broker refuses an hour or more)
    # A producer whose clock is 50 minutes ahead logs feedback on a request that is already there.
    producer.inference(inference("r-skewed"), timestamp_ms=t0)
    producer.feedback(pairwise("r-skewed", feedback_id="f-skewed"), timestamp_ms=t0 + ahead)
    producer.flush()
    first = ConsumerDaemon(settings, config).run(until_caught_up=True)
    assert first.stream_time_ms == t0  # the skewed record joined but moved no time
    # Then on-time traffic: feedback 5 s before its inference, well within the grace.
    producer.feedback(pairwise("r-on-time", feedback_id="f-on-time"), timestamp_ms=t0 + 60_000)
    producer.flush()
    producer.inference(inference("r-on-time"), timestamp_ms=t0 + 65_000)
    producer.flush()
    second = ConsumerDaemon(settings, config).run(until_caught_up=True)

    paths = {r["feedback_id"]: r["join_path"] for r in feedback_rows(settings.log_dir)}
    assert paths == {"f-skewed": "hot", "f-on-time": "waited"}
    assert orphan_ids(settings.log_dir) == []
    assert second.stream_time_ms == t0 + 65_000


# --------------------------------------------------------------------------- waiting feedback across restarts
def test_waiting_feedback_survives_restarts_and_compaction_and_is_stored_once(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    producer = RawProducer(settings)
    config = ConsumerConfig(group_id="resume", grace_ms=3_600_000, flush_interval_ms=100)

    def run_until(condition: Any) -> ConsumerDaemon:
        daemon = ConsumerDaemon(settings, config)
        runner = threading.Thread(target=daemon.run)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            while not condition(daemon):
                assert time.monotonic() < deadline, "condition not met in time"
                time.sleep(0.2)
        finally:
            daemon.stop()
            runner.join(60)
        return daemon

    for i in range(30):  # their inference events come three runs later
        producer.feedback(pairwise(f"w-{i}", feedback_id=f"waits-{i}"))
    for i in range(20):
        producer.inference(inference(f"now-{i}"))
        producer.feedback(pairwise(f"now-{i}"))
    producer.flush()
    run_until(lambda d: d.stats.feedback_events == 50 and d.stats.joined == 20 and d.stats.pending == 30)
    for round_ in range(2):  # more segments after the one that stored what waits
        for i in range(10):
            producer.inference(inference(f"more-{round_}-{i}"))
            producer.feedback(pairwise(f"more-{round_}-{i}"))
        producer.flush()
        run_until(lambda d: d.stats.joined == 10 and d.stats.pending == 30)

    segments = list(committed_segments(settings.log_dir, 0))
    stored = [pq.read_table(path / "pending.parquet").num_rows for _, path in segments
              if (path / "pending.parquet").exists()]  # fmt: skip
    assert stored == [30], "each waiting event is stored once, in the segment where it started waiting"
    newest_state = json.loads((max(segments)[1] / STATE_FILE).read_text())
    assert newest_state["pending_count"] == 30 and "pending" not in newest_state
    assert len(read_resume_state(settings.log_dir, 0).pending) == 30

    compact(settings.log_dir, delete_after_s=0)
    assert len(read_resume_state(settings.log_dir, 0).pending) == 30

    for i in range(30):
        producer.inference(inference(f"w-{i}"))
    producer.flush()
    stats = ConsumerDaemon(settings, config).run(until_caught_up=True)
    assert stats.joined_waited == 30 and stats.orphans == 0
    ids = log_ids(settings.log_dir)
    assert len(ids["feedback"]) == len(set(ids["feedback"])) == 70
    paths = {r["feedback_id"]: r["join_path"] for r in feedback_rows(settings.log_dir)}
    assert {paths[f"waits-{i}"] for i in range(30)} == {"waited"}


def test_waiting_feedback_recorded_by_the_first_state_layout_is_resumed(tmp_path: Path) -> None:
    from prefpair.consumers.join import feedback_row
    from prefpair.consumers.segments import ResumeState, write_segment
    from prefpair.schemas.log import SegmentName

    log_dir = tmp_path / "log"
    name = SegmentName(0, 0, 3, 0, 5)
    path = write_segment(log_dir, name, {}, ResumeState(0, 3, 5, has_segments=True))
    row = feedback_row(pairwise("old", feedback_id="from-v1"), "t.feedback", 0, 4)
    (path / STATE_FILE).write_text(json.dumps({
        "version": 1, "partition": 0, "inference_next": 3, "feedback_next": 5,
        "pending": [{"row": row, "arrived_ms": 1_700_000_000_000}], "dead_letter_next": {"0": 7},
    }))  # fmt: skip
    state = read_resume_state(log_dir, 0)
    assert [item.row["feedback_id"] for item in state.pending] == ["from-v1"]
    assert state.pending[0].offset == 4 and not state.pending_stored and state.dead_letter_next == {0: 7}


# --------------------------------------------------------------------------- dead letters per pipeline
def _fetch(settings: Settings, topic: str, count: int) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Message] = []
    deadline = time.monotonic() + 30
    while len(out) < count and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and (msg.error() is None or msg.error().code() != KafkaError._PARTITION_EOF):
            out.append(msg)
    consumer.close()
    assert len(out) == count
    return out


def test_a_dead_letter_position_never_passes_one_it_does_not_cover(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    producer = RawProducer(settings)
    producer.raw(settings.feedback_topic, "k", b"poison zero")
    producer.raw(settings.feedback_topic, "k", b"poison one")
    producer.flush()
    first, second = _fetch(settings, settings.feedback_topic, 2)

    crashed = DeadLetterSink(settings, 1, pipeline="p1")  # sends both, dies before any segment is written
    crashed.resume(0, {}, 0, 0)
    assert crashed.send(first, ValueError("bad"), "decode") and crashed.send(second, ValueError("bad"), "decode")
    crashed.flush()
    crashed.close()

    restarted = DeadLetterSink(settings, 1, pipeline="p1")
    restarted.resume(0, {}, 0, 0)
    assert not restarted.send(first, ValueError("bad"), "decode"), "a replay must not send it again"
    # Its next segment covers feedback offset 0 (and inference only beyond): the dead letter of
    # offset 1 (at dead-letter offset 1) is not covered, so the position must stay at it.
    recorded = restarted.positions(0, inference_next=50, feedback_next=1)
    assert recorded == {0: 1}
    restarted.close()

    after_another_crash = DeadLetterSink(settings, 1, pipeline="p1")
    after_another_crash.resume(0, recorded, 50, 1)
    assert not after_another_crash.send(second, ValueError("bad"), "decode")
    after_another_crash.close()

    other_pipeline = DeadLetterSink(settings, 1, pipeline="p2")
    other_pipeline.resume(0, {}, 0, 0)
    assert other_pipeline.send(first, ValueError("bad"), "decode"), "another pipeline's dead letters are not ours"
    other_pipeline.flush()
    other_pipeline.close()
    letters = dead_letters(settings)
    assert Counter((h[H_PIPELINE], h[H_OFFSET]) for _, h in letters) == {("p1", "0"): 1, ("p1", "1"): 1,
                                                                          ("p2", "0"): 1}  # fmt: skip


def test_two_pipelines_on_the_same_topics_each_dead_letter_their_own_poison(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    for i in range(20):
        producer.inference(inference(f"p-{i}"))
        producer.feedback(pairwise(f"p-{i}"))
    poison = [b"not avro " + bytes([i]) for i in range(3)]
    for i, bad in enumerate(poison):
        producer.raw(settings.feedback_topic if i % 2 else settings.inference_topic, f"bad-{i}", bad)
    producer.flush()
    other = settings.model_copy(update={"home": settings.home.parent / "second-pipeline"})
    first = ConsumerDaemon(settings, ConsumerConfig(group_id="pipeline-a")).run(until_caught_up=True)
    second = ConsumerDaemon(other, ConsumerConfig(group_id="pipeline-b")).run(until_caught_up=True)
    assert first.dead_letters == second.dead_letters == 3
    letters = dead_letters(settings)
    by_pipeline = Counter(h[H_PIPELINE] for _, h in letters)
    assert len(by_pipeline) == 2 and set(by_pipeline.values()) == {3}
    for log_dir in (settings.log_dir, other.log_dir):
        log_id = json.loads((log_dir / "LOG.json").read_text())["log_id"]
        assert sorted(v for v, h in letters if h[H_PIPELINE] == log_id) == sorted(poison)


# --------------------------------------------------------------------------- a full disk
def test_a_full_disk_ends_in_one_line_and_loses_nothing(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    sent_inference, sent_feedback = set(), set()
    for i in range(1_500):
        event = inference(f"d-{i}")
        event["prompt"] += " ".join(uuid.uuid4().hex for _ in range(20))  # does not compress away
        producer.inference(event)
        sent_inference.add(event["event_id"])
        fb = pairwise(f"d-{i}")
        producer.feedback(fb)
        sent_feedback.add(fb["event_id"])
    producer.flush()
    settings.log_dir.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(settings.log_dir)],
                           capture_output=True, text=True)  # fmt: skip
    assert mount.returncode == 0, f"this test needs root to mount a small tmpfs: {mount.stderr}"
    try:
        result = subprocess.run([sys.executable, "-m", "prefpair.cli", "consume", "--until-caught-up",
                                 "--group-id", "full", "--flush-interval-ms", "50", "--grace-ms", "600000"],
                                env=cli_env(settings), capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].startswith("prefpair consume: error: cannot write log segment")
        assert "No space left on device" in errors[0]
        # Nothing committed to Kafka past what is on disk.
        ends = {}
        for name, _ in committed_segments(settings.log_dir):
            ends[name.partition] = max(ends.get(name.partition, (0, 0)), (name.inference_end, name.feedback_end))
        consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "full"})
        committed = consumer.committed([TopicPartition(t, p) for t in (settings.inference_topic,
                                        settings.feedback_topic) for p in (0, 1)], timeout=10)  # fmt: skip
        consumer.close()
        for tp in committed:
            on_disk = ends.get(tp.partition, (0, 0))[0 if tp.topic == settings.inference_topic else 1]
            assert tp.offset <= on_disk
        partial = log_ids(settings.log_dir)
        assert len(partial["inference"]) + len(partial["feedback"]) < len(sent_inference) + len(sent_feedback)
        shutil.copytree(settings.log_dir, tmp_path / "roomy" / "log")
    finally:
        subprocess.run(["umount", str(settings.log_dir)], check=False)
    roomy = settings.model_copy(update={"home": tmp_path / "roomy"})
    consume_until_caught_up(roomy, "--group-id", "full", "--grace-ms", "600000")
    ids = log_ids(roomy.log_dir)
    assert sorted(ids["inference"]) == sorted(sent_inference)
    assert sorted(ids["feedback"]) == sorted(sent_feedback)
