"""The consumer daemon against the real broker: joins, orphans, dead letters, exactly-once
through SIGKILLs and a rebalance, landed joins, graceful shutdown, compaction."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import MakeSettings
from consumer_support import cli_env, dead_letters, feedback_rows, log_ids
from events import RawProducer, inference, pairwise, poison

from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon, compact
from prefpair.consumers.dead_letters import H_ERROR_CLASS, H_OFFSET, H_PARTITION, H_TOPIC
from prefpair.schemas.log import committed_segments, table_files


# --------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """What was sent, and therefore what the log must hold."""

    inference_ids: set[str] = field(default_factory=set)
    feedback_ids: set[str] = field(default_factory=set)
    poison: list[bytes] = field(default_factory=list)
    messages: int = 0


def send_workload(settings: Settings, n_requests: int, seed: int, pace_s: float = 0.0) -> Workload:
    """Requests with feedback, some feedback before its inference, updates, deletes, exact
    producer-side duplicates (same bytes, same event id) and poison messages on both topics;
    ``pace_s`` seconds of pause after each chunk of 500 requests."""
    rng = random.Random(seed)
    producer = RawProducer(settings)
    work = Workload()
    resend: list[tuple[str, str, bytes]] = []
    chunk = 500
    early: list[dict[str, Any]] = []
    for start in range(0, n_requests, chunk):
        for event in early:  # feedback whose inference comes one chunk later
            value = producer.feedback(event)
            work.feedback_ids.add(event["event_id"])
            work.messages += 1
        early = []
        later: list[dict[str, Any]] = []
        for i in range(start, min(start + chunk, n_requests)):
            request_id = f"req-{seed}-{i}"
            inf = inference(request_id, size=rng.randrange(20, 300))
            value = producer.inference(inf)
            work.inference_ids.add(inf["event_id"])
            work.messages += 1
            if rng.random() < 0.05:
                resend.append((settings.inference_topic, request_id, value))
            fid = f"fb-{i}"
            events = [pairwise(request_id, feedback_id=fid)]
            if rng.random() < 0.2:
                events.append(pairwise(request_id, feedback_id=fid, op="UPDATE", ts=1_700_000_002_000))
            if rng.random() < 0.1:
                events.append(pairwise(request_id, feedback_id=fid, op="DELETE", ts=1_700_000_003_000))
            if rng.random() < 0.1:
                events.append(pairwise(request_id, chosen="c1", rejected="c0"))
            if rng.random() < 0.15 and start + chunk < n_requests:
                # arrives before its inference: request i+chunk gets this feedback early
                early_id = f"req-{seed}-{i + chunk}"
                early.append(pairwise(early_id, feedback_id=f"fb-early-{i + chunk}"))
            later.extend(events)
        rng.shuffle(later)
        for event in later:
            value = producer.feedback(event)
            work.feedback_ids.add(event["event_id"])
            work.messages += 1
            if rng.random() < 0.05:
                resend.append((settings.feedback_topic, event["request_id"], value))
        for _ in range(rng.randrange(0, 4)):
            topic = rng.choice([settings.inference_topic, settings.feedback_topic])
            bad = poison(rng)
            producer.raw(topic, f"poison-{len(work.poison)}", bad)
            work.poison.append(bad)
            work.messages += 1
        while resend and rng.random() < 0.7:
            topic, key, value = resend.pop(rng.randrange(len(resend)))
            producer.raw(topic, key, value)
            work.messages += 1
        if pace_s:
            producer.flush()
            time.sleep(pace_s)
    for topic, key, value in resend:
        producer.raw(topic, key, value)
        work.messages += 1
    producer.flush()
    return work


def assert_exact(settings: Settings, work: Workload) -> None:
    ids = log_ids(settings.log_dir)
    inference_counts = Counter(ids["inference"])
    assert [i for i, n in inference_counts.items() if n > 1] == [], "duplicated inference rows"
    assert set(inference_counts) == work.inference_ids, "inference rows lost or invented"
    landed = Counter(ids["feedback"] + ids["orphans"])
    assert [i for i, n in landed.items() if n > 1] == [], "duplicated feedback rows"
    assert set(landed) == work.feedback_ids, (
        f"missing {len(work.feedback_ids - set(landed))}, unexpected {len(set(landed) - work.feedback_ids)}"
    )
    assert ids["orphans"] == [], "every inference came, so nothing may be orphaned"
    letters = dead_letters(settings)
    sources = Counter((h[H_TOPIC], h[H_PARTITION], h[H_OFFSET]) for _, h in letters)
    assert [s for s, n in sources.items() if n > 1] == [], "a poison message was dead-lettered twice"
    assert sorted(v for v, _ in letters) == sorted(work.poison)


def consume_cmd(*extra: str, until_caught_up: bool = True) -> list[str]:
    return [sys.executable, "-m", "prefpair.cli", "consume", *(["--until-caught-up"] if until_caught_up else []),
            "--group-id", "exact", "--grace-ms", "600000", "--progress-interval", "2", "--session-timeout-ms", "6000",
            *extra]  # fmt: skip


# --------------------------------------------------------------------------- tests
def test_join_orphan_and_dead_letter_rows(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    producer.feedback(pairwise("early", feedback_id="f-early"))  # before its inference
    producer.flush()
    time.sleep(0.2)
    producer.inference(inference("early"))
    producer.inference(inference("on-time"))
    producer.feedback(pairwise("on-time", feedback_id="f-on-time", chosen="c1", rejected="c0"))
    producer.feedback(pairwise("never", feedback_id="f-never"))
    bad = b"\xc3\x01" + b"\x00" * 8 + b"\xff"
    producer.raw(settings.feedback_topic, "never", bad)
    wrong_kind = producer.inference(inference("wrong-topic"))
    producer.raw(settings.feedback_topic, "wrong-topic", wrong_kind)
    producer.flush()

    stats = ConsumerDaemon(settings, ConsumerConfig(grace_ms=1500, flush_interval_ms=100)).run(until_caught_up=True)

    rows = {r["feedback_id"]: r for r in feedback_rows(settings.log_dir)}
    assert set(rows) == {"f-early", "f-on-time"}
    on_time = rows["f-on-time"]
    assert on_time["chosen_id"] == "c1" and on_time["prompt"].startswith("question on-time")
    assert [c["candidate_id"] for c in on_time["candidates"]] == ["c0", "c1"]
    assert on_time["feedback_topic"] == settings.feedback_topic
    assert on_time["inference_topic"] == settings.inference_topic
    assert rows["f-early"]["prompt"].startswith("question early")
    orphans = duckdb.sql(f"SELECT feedback_id, reason FROM read_parquet({[str(f) for f in table_files(settings.log_dir, 'orphans')]})").fetchall()  # noqa: E501
    assert len(orphans) == 1 and orphans[0][0] == "f-never" and "grace" in orphans[0][1]
    assert stats.dead_letters == 2 and stats.orphans == 1 and stats.joined == 2
    letters = dead_letters(settings)
    assert sorted(v for v, _ in letters) == sorted([bad, wrong_kind])
    by_value = {v: h for v, h in letters}
    assert by_value[bad][H_ERROR_CLASS] == "UnknownSchemaError"
    assert by_value[bad][H_TOPIC] == settings.feedback_topic
    assert by_value[wrong_kind][H_ERROR_CLASS] == "ContractError"


def test_feedback_that_comes_first_waits_for_its_inference(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1)
    producer = RawProducer(settings)
    daemon = ConsumerDaemon(settings, ConsumerConfig(grace_ms=60_000, flush_interval_ms=100))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        producer.feedback(pairwise("late-inference", feedback_id="f-first"))
        producer.flush()
        _wait_for(lambda: daemon.stats.feedback_events == 1, 60)  # consumed, and nothing to join it to
        time.sleep(0.5)
        assert log_ids(settings.log_dir)["feedback"] == []
        producer.inference(inference("late-inference"))
        producer.flush()
        _wait_for(lambda: len(feedback_rows(settings.log_dir)) == 1, 60)
    finally:
        daemon.stop()
        runner.join(60)
    (row,) = feedback_rows(settings.log_dir)
    assert row["feedback_id"] == "f-first" and row["join_path"] == "waited"
    assert row["prompt"].startswith("question late-inference")
    assert log_ids(settings.log_dir)["orphans"] == []


def test_feedback_after_hot_state_dropped_is_joined_from_landed_events(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    for i in range(50):
        producer.inference(inference(f"old-{i}"))
    producer.flush()
    ConsumerDaemon(settings, ConsumerConfig(group_id="g1")).run(until_caught_up=True)
    # Within one run, a budget of 1 byte drops every inference from memory at once.
    for i in range(50):
        producer.feedback(pairwise(f"old-{i}", feedback_id=f"late-{i}"))
    producer.inference(inference("fresh"))
    producer.feedback(pairwise("fresh", feedback_id="fresh-fb"))
    producer.flush()
    stats = ConsumerDaemon(settings, ConsumerConfig(group_id="g1", hot_state_bytes=1)).run(until_caught_up=True)
    rows = {r["feedback_id"]: r for r in feedback_rows(settings.log_dir)}
    assert len(rows) == 51
    assert {rows[f"late-{i}"]["join_path"] for i in range(50)} == {"landed"}
    assert rows["late-7"]["prompt"].startswith("question old-7")
    assert stats.joined_landed >= 50 and stats.orphans == 0
    assert stats.hot_evictions > 0


@pytest.mark.slow
def test_exactly_once_through_repeated_sigkill(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=4)
    results: list[Workload] = []
    sender = threading.Thread(target=lambda: results.append(send_workload(settings, 21_000, seed=7, pace_s=1.2)))
    sender.start()  # traffic keeps coming while the daemon is killed and restarted
    rng = random.Random(11)
    env = cli_env(settings)
    kills = interrupted_progress = 0
    for _ in range(30):
        segments_before = len(list(committed_segments(settings.log_dir)))
        flush_ms = str(rng.choice([100, 300, 1000]))  # static membership: a restart takes over at once
        command = consume_cmd("--flush-interval-ms", flush_ms, "--backlog-flush-interval-ms", flush_ms,
                              "--instance-id", "restarted", until_caught_up=False)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assigned = threading.Event()
        threading.Thread(target=_watch_for, args=(proc, "assigned partition", assigned), daemon=True).start()
        assigned.wait(30)
        deadline = time.monotonic() + 20  # once it has committed something of its own ...
        while (len(list(committed_segments(settings.log_dir))) == segments_before and proc.poll() is None
               and time.monotonic() < deadline):  # fmt: skip
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))  # ... a random moment while it works
        if proc.poll() is not None:
            assert proc.returncode == 0
            if not sender.is_alive():
                break
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        if len(list(committed_segments(settings.log_dir))) > segments_before:
            interrupted_progress += 1
        if kills >= 8 or (kills >= 6 and not sender.is_alive()):
            break
    sender.join()
    work = results[0]
    assert work.messages >= 50_000
    assert kills >= 5
    assert interrupted_progress >= 3, "the kills must land while the daemon is making progress"
    final = subprocess.run(consume_cmd("--instance-id", "restarted"), env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    assert_exact(settings, work)


@pytest.mark.slow
def test_two_instances_with_rebalance_mid_run(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=4)
    first_half = send_workload(settings, n_requests=12_000, seed=3)
    env = cli_env(settings)
    small_segments = ("--flush-interval-ms", "200", "--backlog-flush-interval-ms", "200")  # the first commits early
    first = subprocess.Popen(consume_cmd(*small_segments, until_caught_up=False), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: any(True for _ in committed_segments(settings.log_dir)), 60)
    assert first.poll() is None
    second = subprocess.Popen(consume_cmd(*small_segments), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    assigned = threading.Event()
    watcher = threading.Thread(target=_watch_for, args=(second, "assigned partition", assigned), daemon=True)
    watcher.start()
    assert assigned.wait(60), "the second instance was given no partition"
    second_half = send_workload(settings, n_requests=9_000, seed=4)  # traffic goes on after the rebalance
    assert second.wait(600) == 0
    first.send_signal(signal.SIGTERM)
    out_first, err_first = first.communicate(timeout=120)
    assert first.returncode == 0, err_first[-3000:]
    assert "revoked" in err_first  # the first instance handed partitions over mid-run
    assert second.stdout is not None
    stats = [json.loads(out.strip().splitlines()[-1]) for out in (out_first, second.stdout.read())]
    assert all(s["consumed"] > 0 for s in stats), "both instances must have done part of the work"
    assert_exact(settings, Workload(first_half.inference_ids | second_half.inference_ids,
                                    first_half.feedback_ids | second_half.feedback_ids,
                                    first_half.poison + second_half.poison))  # fmt: skip


def test_sigterm_flushes_commits_and_exits(make_settings: MakeSettings, run_cli: Any) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    for i in range(200):
        producer.inference(inference(f"t-{i}"))
        producer.feedback(pairwise(f"t-{i}"))
    producer.flush()
    env = cli_env(settings)
    # a long flush interval: rows reach disk only because SIGTERM flushes them
    proc = subprocess.Popen([sys.executable, "-m", "prefpair.cli", "consume", "--flush-interval-ms", "600000",
                             "--progress-interval", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        line = proc.stderr.readline() if proc.stderr else ""
        if "progress:" in line and " 0 consumed/s" not in line:
            break
    assert list(committed_segments(settings.log_dir)) == []
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "received SIGTERM" in err
    ids = log_ids(settings.log_dir)
    assert len(ids["inference"]) == 200 and len(ids["feedback"]) == 200


def test_compaction_keeps_rows_and_resume_point(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    for batch in range(4):
        for i in range(30):
            producer.inference(inference(f"c-{batch}-{i}"))
            producer.feedback(pairwise(f"c-{batch}-{i}"))
        producer.flush()
        ConsumerDaemon(settings, ConsumerConfig(group_id="cmp")).run(until_caught_up=True)
    before = log_ids(settings.log_dir)
    segments_before = list(committed_segments(settings.log_dir))
    on_disk = sum(1 for _ in settings.log_dir.glob("partition=*/seg-*"))
    report = compact(settings.log_dir)  # merged parts stay on disk, hidden, for readers that listed them
    segments_after = list(committed_segments(settings.log_dir))
    assert len(segments_after) < len(segments_before) and report.segments_after == len(segments_after)
    on_disk_merged = sum(1 for _ in settings.log_dir.glob("partition=*/seg-*"))
    assert report.parts_deleted == 0 and on_disk_merged > on_disk
    assert compact(settings.log_dir, delete_after_s=0).parts_deleted == on_disk_merged - len(segments_after)
    assert sum(1 for _ in settings.log_dir.glob("partition=*/seg-*")) == len(segments_after)
    after = log_ids(settings.log_dir)
    assert {k: sorted(v) for k, v in after.items()} == {k: sorted(v) for k, v in before.items()}
    ends = {p: max((s.inference_end, s.feedback_end) for s, _ in segments_before if s.partition == p) for p in (0, 1)}
    assert {p: max((s.inference_end, s.feedback_end) for s, _ in segments_after if s.partition == p)
            for p in (0, 1)} == ends  # fmt: skip
    for i in range(10):
        producer.inference(inference(f"after-{i}"))
        producer.feedback(pairwise(f"after-{i}"))
    producer.flush()
    ConsumerDaemon(settings, ConsumerConfig(group_id="cmp")).run(until_caught_up=True)
    final = log_ids(settings.log_dir)
    assert len(final["inference"]) == len(set(final["inference"])) == 130
    assert len(final["feedback"]) == len(set(final["feedback"])) == 130


def test_a_log_holds_one_pair_of_topics(make_settings: MakeSettings, run_cli: Any) -> None:
    first = make_settings(partitions=1)
    ConsumerDaemon(first, ConsumerConfig(group_id="bind")).run(until_caught_up=True)
    other = make_settings(partitions=1, home=first.home)  # new topics, same log directory
    result = run_cli("consume", "--until-caught-up", settings=other, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert first.inference_topic in result.stderr and other.inference_topic in result.stderr


def test_consume_help_and_bad_option(run_cli: Any, make_settings: MakeSettings) -> None:
    help_text = run_cli("consume", "--help")
    assert help_text.returncode == 0 and "--until-caught-up" in help_text.stdout and "--grace-ms" in help_text.stdout
    settings = make_settings(partitions=1)
    bad = run_cli("consume", "--flush-interval-ms", "1", settings=settings, timeout=30)
    assert bad.returncode == 2 and "--flush-interval-ms" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_exactly_once_across_a_broker_restart(tmp_path: Path, broker_cache_dir: Path) -> None:
    from prefpair.broker import LocalBroker
    from prefpair.topics import create_topics

    broker = LocalBroker(tmp_path / "broker", cache_dir=broker_cache_dir)
    bootstrap = broker.start(timeout=90)
    try:
        settings = Settings(bootstrap_servers=bootstrap, home=tmp_path / "home", partitions=2)
        create_topics(settings)
        first = send_workload(settings, n_requests=1_500, seed=21)
        env = cli_env(settings)
        proc = subprocess.Popen([sys.executable, "-m", "prefpair.cli", "consume", "--group-id", "restart",
                                 "--grace-ms", "600000", "--flush-interval-ms", "200"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            _wait_for(lambda: len(log_ids(settings.log_dir)["inference"]) > 0, 60)
            broker.stop()
            time.sleep(2.0)  # the daemon keeps running against a dead broker
            assert proc.poll() is None
            assert broker.start(timeout=90) == bootstrap  # same port, same data
            second = send_workload(settings, n_requests=1_500, seed=22)
            expected = (len(first.inference_ids | second.inference_ids), len(first.feedback_ids | second.feedback_ids))

            def caught_up() -> bool:
                ids = log_ids(settings.log_dir)
                return (len(set(ids["inference"])), len(set(ids["feedback"]))) >= expected

            _wait_for(caught_up, 120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        merged = Workload(first.inference_ids | second.inference_ids, first.feedback_ids | second.feedback_ids,
                          first.poison + second.poison)  # fmt: skip
        assert_exact(settings, merged)
    finally:
        broker.stop()


def _watch_for(proc: subprocess.Popen[str], text: str, seen: threading.Event) -> None:
    """Drain ``proc``'s stderr, setting ``seen`` once a line contains ``text``."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            seen.set()


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)
