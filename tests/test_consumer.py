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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import MakeSettings
from consumer_support import cli_env, dead_letters, feedback_rows, log_ids
from events import RawProducer, inference, pairwise, poison
from s3_support import REGION, S3Endpoint

from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon, compact
from prefpair.consumers.dead_letters import H_ERROR_CLASS, H_OFFSET, H_PARTITION, H_TOPIC
from prefpair.consumers.exceptions import SegmentCommitError
from prefpair.consumers.join import inference_row
from prefpair.consumers.segments import (
    ResumeState,
    read_parquet,
    read_resume_state,
    sweep_temporaries,
    write_segment,
)
from prefpair.schemas.log import SegmentName, committed_segments, table_files
from prefpair.simulate.records import complete_inference
from prefpair.storage import S3Storage, Storage


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


def assert_exact(settings: Settings, work: Workload, log: Path | Storage | None = None) -> None:
    ids = log_ids(settings.log_dir if log is None else log)
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


@dataclass
class LogTarget:
    """Where a test's consumers write the log: the settings' local folder, or a prefix on the S3 server."""

    log: Path | Storage
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(params=["local", "s3"])
def log_target(request: pytest.FixtureRequest) -> Callable[[Settings], LogTarget]:
    """``log_target(settings)``: the log in ``settings``' home, or on S3 (``--log-dir s3://...``)."""

    def target(settings: Settings) -> LogTarget:
        if request.param == "local":
            return LogTarget(settings.log_dir)
        s3_root: S3Storage = request.getfixturevalue("s3_root")
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        log = s3_root / "log"
        return LogTarget(log, ("--log-dir", log.url), endpoint.environment())

    return target


def consume_cmd(*extra: str, group: str = "exact", until_caught_up: bool = True) -> list[str]:
    """``group``: a static member (``--instance-id``) that exits stays in its group for the session
    timeout, with its topics: a test that comes next must use another group."""
    return [sys.executable, "-m", "prefpair.cli", "consume", *(["--until-caught-up"] if until_caught_up else []),
            "--group-id", group, "--grace-ms", "600000", "--progress-interval", "2", "--session-timeout-ms", "6000",
            *extra]  # fmt: skip


# --------------------------------------------------------------------------- tests
def test_join_orphan_and_dead_letter_rows(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2)
    producer = RawProducer(settings)
    # Record timestamps are set here, not by the producer's clock: the join runs on event time, and a
    # slow first delivery (an idempotent producer waiting for its id) must not stretch the 200 ms
    # between the early feedback and its inference past the grace.
    t0 = int(time.time() * 1000)
    producer.feedback(pairwise("early", feedback_id="f-early"), timestamp_ms=t0)  # before its inference
    producer.flush()
    producer.inference(inference("early"), timestamp_ms=t0 + 200)
    producer.inference(inference("on-time"), timestamp_ms=t0 + 210)
    producer.feedback(pairwise("on-time", feedback_id="f-on-time", chosen="c1", rejected="c0"), timestamp_ms=t0 + 220)
    producer.feedback(pairwise("never", feedback_id="f-never"), timestamp_ms=t0 + 230)
    bad = b"\xc3\x01" + b"\x00" * 8 + b"\xff"
    producer.raw(settings.feedback_topic, "never", bad, timestamp_ms=t0 + 240)
    wrong_kind = producer.inference(inference("wrong-topic"), timestamp_ms=t0 + 250)
    producer.raw(settings.feedback_topic, "wrong-topic", wrong_kind, timestamp_ms=t0 + 260)
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
def test_exactly_once_through_repeated_sigkill(
    make_settings: MakeSettings, log_target: Callable[[Settings], LogTarget]
) -> None:
    settings = make_settings(partitions=4)
    target = log_target(settings)
    results: list[Workload] = []
    sender = threading.Thread(target=lambda: results.append(send_workload(settings, 21_000, seed=7, pace_s=1.2)))
    sender.start()  # traffic keeps coming while the daemon is killed and restarted
    rng = random.Random(11)
    env = {**cli_env(settings), **target.env}
    group = f"exact-{settings.inference_topic}"
    kills = interrupted_progress = 0
    for _ in range(30):
        segments_before = len(list(committed_segments(target.log)))
        flush_ms = str(rng.choice([100, 300, 1000]))  # static membership: a restart takes over at once
        command = consume_cmd("--flush-interval-ms", flush_ms, "--backlog-flush-interval-ms", flush_ms,
                              "--instance-id", "restarted", *target.args, group=group, until_caught_up=False)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assigned = threading.Event()
        threading.Thread(target=_watch_for, args=(proc, "assigned partition", assigned), daemon=True).start()
        assigned.wait(30)
        deadline = time.monotonic() + 20  # once it has committed something of its own ...
        while (len(list(committed_segments(target.log))) == segments_before and proc.poll() is None
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
        if len(list(committed_segments(target.log))) > segments_before:
            interrupted_progress += 1
        if kills >= 8 or (kills >= 6 and not sender.is_alive()):
            break
    sender.join()
    work = results[0]
    assert work.messages >= 50_000
    assert kills >= 5
    assert interrupted_progress >= 3, "the kills must land while the daemon is making progress"
    final = subprocess.run(consume_cmd("--instance-id", "restarted", *target.args, group=group), env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    assert_exact(settings, work, target.log)


@pytest.mark.slow
def test_two_instances_with_rebalance_mid_run(
    make_settings: MakeSettings, log_target: Callable[[Settings], LogTarget]
) -> None:
    settings = make_settings(partitions=4)
    target = log_target(settings)
    first_half = send_workload(settings, n_requests=12_000, seed=3)
    env = {**cli_env(settings), **target.env}
    small_segments = ("--flush-interval-ms", "200", "--backlog-flush-interval-ms", "200",  # the first commits early
                      *target.args)  # fmt: skip
    group = f"exact-{settings.inference_topic}"
    first = subprocess.Popen(consume_cmd(*small_segments, group=group, until_caught_up=False), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: any(True for _ in committed_segments(target.log)), 60)
    assert first.poll() is None
    second = subprocess.Popen(consume_cmd(*small_segments, group=group), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
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
                                    first_half.poison + second_half.poison), target.log)  # fmt: skip


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


# --------------------------------------------------------------------------- the log on S3
def _s3_settings(make_settings: MakeSettings, endpoint: S3Endpoint, partitions: int = 1) -> Settings:
    return make_settings(partitions=partitions, s3_endpoint_url=endpoint.url, s3_region=REGION,
                         s3_access_key_id=endpoint.access_key_id,
                         s3_secret_access_key=endpoint.secret_access_key)  # fmt: skip


def test_the_daemon_resumes_waiting_feedback_and_joins_landed_events_from_an_s3_log(
    make_settings: MakeSettings, s3_root: S3Storage, s3_endpoint: S3Endpoint
) -> None:
    settings = _s3_settings(make_settings, s3_endpoint)
    log = s3_root / "log"
    options: dict[str, Any] = {"group_id": "s3-resume", "log_dir": log.url, "grace_ms": 600_000,
                               "flush_interval_ms": 100}  # fmt: skip
    producer = RawProducer(settings)
    for i in range(20):
        producer.inference(inference(f"old-{i}"))
    producer.feedback(pairwise("later", feedback_id="f-waits"))  # its inference comes in the second run
    producer.flush()
    first = ConsumerDaemon(settings, ConsumerConfig(**options))
    runner = threading.Thread(target=first.run)
    runner.start()
    try:
        _wait_for(lambda: first.stats.consumed == 21, 60)
    finally:
        first.stop()  # flushes what it consumed: the waiting feedback goes to S3 as consumer state
        runner.join(60)
    assert not runner.is_alive() and first.stats.segments >= 1
    assert not (settings.home / "log").exists(), "nothing may be written locally"
    resume = read_resume_state(log, 0)
    assert [item.row["feedback_id"] for item in resume.pending] == ["f-waits"]
    assert (resume.inference_next, resume.feedback_next) == (20, 1)
    assert log_ids(log)["feedback"] == [] and len(log_ids(log)["inference"]) == 20

    for i in range(10):  # a new process holds nothing in memory: these join landed rows read from S3
        producer.feedback(pairwise(f"old-{i}", feedback_id=f"late-{i}"))
    producer.inference(inference("later"))
    producer.flush()
    stats = ConsumerDaemon(settings, ConsumerConfig(**options)).run(until_caught_up=True)
    rows = {r["feedback_id"]: r for r in feedback_rows(log)}
    assert set(rows) == {"f-waits", *(f"late-{i}" for i in range(10))}
    assert rows["f-waits"]["join_path"] == "waited" and rows["f-waits"]["prompt"].startswith("question later")
    assert {rows[f"late-{i}"]["join_path"] for i in range(10)} == {"landed"}
    assert rows["late-3"]["prompt"].startswith("question old-3")
    assert stats.joined_landed == 10 and stats.orphans == 0
    ids = log_ids(log)
    assert len(ids["inference"]) == len(set(ids["inference"])) == 21 and len(ids["feedback"]) == 11


def _inference_rows(*request_ids: str, start: int = 0) -> list[dict[str, Any]]:
    return [inference_row(complete_inference(inference(request_id)), "t.inference", 0, start + i)
            for i, request_id in enumerate(request_ids)]  # fmt: skip


def test_a_second_writer_of_a_segment_on_s3_loses_and_abandoned_writes_are_replaced_or_swept(
    s3_root: S3Storage,
) -> None:
    log = s3_root / "log"
    part = log / "partition=00000"
    first = SegmentName(0, 0, 2, 0, 0)
    kept = _inference_rows("a", "b")
    write_segment(log, first, {"inference": kept}, ResumeState(0, 2, 0))
    with pytest.raises(SegmentCommitError, match="already committed by another writer"):
        write_segment(log, first, {"inference": _inference_rows("x", "y")}, ResumeState(0, 2, 0))
    assert read_parquet(part / f"{first.dirname}/inference.parquet").column("request_id").to_pylist() == ["a", "b"]
    with pytest.raises(SegmentCommitError, match="another consumer owns it now"):  # not where the log ends
        write_segment(log, SegmentName(0, 1, 3, 0, 0), {"inference": _inference_rows("z", start=1)},
                      ResumeState(0, 3, 0))  # fmt: skip
    assert part.list_files().keys() == {f"{first.dirname}/inference.parquet", f"{first.dirname}/state.json"}

    # A writer crashed after putting a file of the next segment, before its marker.
    second = SegmentName(0, 2, 3, 0, 0)
    abandoned = part / second.dirname
    (abandoned / "orphans.parquet").write_bytes((part / f"{first.dirname}/inference.parquet").read_bytes())
    assert [name for name, _ in committed_segments(log)] == [first]  # readers ignore it
    assert read_resume_state(log, 0).inference_next == 2
    assert sweep_temporaries(log, 0, older_than_s=3600) == 0  # too young: its writer may still be at it
    later = _inference_rows("c", start=2)
    write_segment(log, second, {"inference": later}, ResumeState(0, 3, 0))  # the next owner writes it again
    assert sorted(abandoned.list_files()) == ["inference.parquet", "state.json"]  # the crashed writer's file is gone
    assert sorted(log_ids(log)["inference"]) == sorted(r["inference_event_id"] for r in kept + later)

    third = SegmentName(0, 3, 4, 0, 0)
    (part / f"{third.dirname}/inference.parquet").write_bytes(b"half a file")
    time.sleep(1.5)  # LastModified counts whole seconds
    assert sweep_temporaries(log, 0, older_than_s=1.0) == 1  # abandoned long enough: swept; committed ones stay
    assert sorted(part.list_files()) == [
        f"{first.dirname}/inference.parquet", f"{first.dirname}/state.json",
        f"{second.dirname}/inference.parquet", f"{second.dirname}/state.json",
    ]  # fmt: skip


def test_compact_on_an_s3_log_merges_then_deletes_the_parts(
    s3_root: S3Storage, s3_endpoint: S3Endpoint, run_cli: Any
) -> None:
    log = s3_root / "log"
    written: list[dict[str, Any]] = []
    for segment in range(4):
        rows = _inference_rows(*(f"r{segment}-{i}" for i in range(3)), start=3 * segment)
        write_segment(log, SegmentName(0, 3 * segment, 3 * segment + 3, 0, 0), {"inference": rows},
                      ResumeState(0, 3 * segment + 3, 0))  # fmt: skip
        written += rows
    env: dict[str, str | None] = {**s3_endpoint.environment()}
    done = run_cli("compact", "--log-dir", log.url, env=env)
    assert done.returncode == 0, done.stderr
    assert f"compacted {log.url}: 4 -> 2 segments" in done.stdout  # the newest is never merged
    merged = SegmentName(0, 0, 9, 0, 0)
    assert [name for name, _ in committed_segments(log)] == [merged, SegmentName(0, 9, 12, 0, 0)]
    assert len((log / "partition=00000").list_names()) == 5  # the parts stay for readers that listed them
    assert sorted(log_ids(log)["inference"]) == sorted(r["inference_event_id"] for r in written)
    assert read_resume_state(log, 0).inference_next == 12

    busy = log / ".compact.lock"
    busy.write_text("{}", exclusive=True)
    refused = run_cli("compact", "--log-dir", log.url, env=env)
    assert refused.returncode == 2 and "another `prefpair compact` is running" in refused.stderr
    busy.delete()
    assert s3_endpoint.secret_access_key not in refused.stdout + refused.stderr + done.stdout + done.stderr

    done = run_cli("compact", "--log-dir", log.url, "--delete-after", "0", env=env)
    assert done.returncode == 0 and "3 merged parts deleted" in done.stdout, done.stdout + done.stderr
    assert sorted({key.split("/")[0] for key in (log / "partition=00000").list_files()}) == [
        merged.dirname, SegmentName(0, 9, 12, 0, 0).dirname]  # fmt: skip
    assert sorted(log_ids(log)["inference"]) == sorted(r["inference_event_id"] for r in written)
