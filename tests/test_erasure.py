"""Erasure end to end: traffic of several users through Kafka and the consumer, one user erased while
the consumer runs; no row of theirs anywhere after, everyone else's rows intact, resume still exact."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MakeSettings, RunCli
from consumer_support import feedback_rows, log_ids
from events import RawProducer, inference, pairwise
from pydantic import SecretStr
from service_support import refused, serve

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.consumers import ConsumerConfig, ConsumerDaemon
from prefpair.consumers.erasure import erase_from_log, read_statuses, write_status
from prefpair.consumers.retention import apply_retention
from prefpair.consumers.segments import PENDING, segments_with_files
from prefpair.erasures import (
    ErasureError,
    ErasureReader,
    ensure_erasure_topic,
    erasure_request,
    publish_erasure,
    read_erasures,
)
from prefpair.kafka import client_config, create_admin
from prefpair.producers import request_erasure
from prefpair.schemas.log import SegmentName, committed_files, table_files
from prefpair.service.reads import LogReader
from prefpair.simulate import LogBuilder
from prefpair.storage import S3Storage

USERS = ("u0", "u1", "u2", "u3")
ERASED = "u1"
ADMIN = "admin-key-" + "a" * 24
ERASE_BOUND_S = 60.0
"""The stated bound: an erasure on a small log beside a running consumer completes within a minute."""


def _send(producer: RawProducer, user: str, n: int, tag: str) -> tuple[set[str], set[str]]:
    requests: set[str] = set()
    feedback: set[str] = set()
    for i in range(n):
        request_id = f"{tag}-{user}-{i}"
        event = inference(request_id)
        event["user_id"] = user
        event["prompt"] = f"prompt of {user} number {i} {tag}"
        producer.inference(event)
        fb = pairwise(request_id)
        producer.feedback(fb)
        producer.signal(request_id, "copy", candidate_id="c0")  # signals of an erased user go too
        requests.add(request_id)
        feedback.add(fb["event_id"])
    return requests, feedback


_STATS = ("consumed", "inference_events", "feedback_events", "signal_events", "joined", "joined_hot", "joined_waited",
          "joined_landed", "orphans", "pending",
          "dead_letters", "duplicates", "segments", "rows_written", "rebalances", "queued", "assigned_partitions",
          "lag")  # fmt: skip


class _Running:
    """A daemon running on a thread of its own, and the error that stopped it if it stopped by itself."""

    def __init__(self, daemon: ConsumerDaemon) -> None:
        self.daemon = daemon
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-consumer-daemon")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # kept for the test to report, not lost in a thread's stderr
            self.error = exc

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join()

    def describe(self) -> str:
        state = "running" if self.thread.is_alive() else f"stopped (error: {self.error!r})"
        stats = self.daemon.stats.to_json()
        return f"daemon {state}: " + ", ".join(f"{key}={stats[key]}" for key in _STATS)


def _wait(what: str, condition: Callable[[], bool], seen: Callable[[], str], running: _Running | None = None,
          timeout: float = 60.0) -> None:  # fmt: skip
    """Wait until ``condition`` holds; fail saying ``what`` was awaited and what was ``seen`` last when it
    does not within ``timeout``, or at once when the ``running`` daemon it waits on stopped by itself."""
    deadline = time.monotonic() + timeout
    while not condition():
        stopped = running is not None and not running.thread.is_alive()
        if stopped or time.monotonic() >= deadline:
            try:
                state = seen()
            except Exception as exc:  # the log rewritten under the reader: say so rather than hide the timeout
                state = f"(could not read the state: {exc!r})"
            why = "the daemon stopped" if stopped else f"timed out after {timeout:.0f} s"
            pytest.fail(f"{why} waiting for {what}\n{state}", pytrace=False)
        time.sleep(0.2)


def _seen(log_dir: Path, running: _Running | None = None, expected: dict[str, set[str]] | None = None) -> str:
    """What the log (and the daemon) hold now, for a timed-out wait: counts per table, the request ids
    of ``expected`` (table -> request ids) missing from it, the newest segments, erasure statuses and acks."""
    lines = []
    counts = {table: len(ids) for table, ids in log_ids(log_dir).items()}
    lines.append(f"log rows: {counts}")
    orphaned = _request_ids(log_dir, "orphans")
    for table, wanted in (expected or {}).items():
        missing = wanted - _request_ids(log_dir, table)
        lines.append(f"{table}: {len(missing)} of {len(wanted)} expected request ids missing "
                     f"({len(missing & orphaned)} of them orphaned): {sorted(missing)[:20]}")  # fmt: skip
    if running is not None:
        lines.append(running.describe())
    for partition in sorted(log_dir.glob("partition=*")):
        names = sorted(p.name for p in partition.iterdir())
        lines.append(f"{partition.name}: {len(names)} entries, last {names[-4:]}")
    for status in read_statuses(log_dir):
        lines.append(f"erasure status: {status['status']} {status['kind']}={status['value']} "
                     f"rows_removed={status['rows_removed']} request_ids={len(status['request_ids'])}")  # fmt: skip
    acks = sorted((log_dir / "erasures" / "consumers").glob("*.json"))
    lines += [f"erasure ack {a.stem[:8]}: {a.read_text(encoding='utf-8')}" for a in acks]
    return "\n".join(lines)


def _request_ids(log_dir: Path, table: str) -> set[str]:
    """The request ids of one log table's committed rows."""
    files = table_files(log_dir, table)
    return {r for f in files for r in pq.read_table(f, columns=["request_id"]).column(0).to_pylist()}


def _waiting_ids(log_dir: Path) -> set[str]:
    """Request ids of the feedback waiting in the committed segments' ``pending.parquet`` (consumer state)."""
    files = [s.file(f"{PENDING}.parquet") for s in segments_with_files(log_dir) if s.has(f"{PENDING}.parquet")]
    return {r for f in files for r in pq.read_table(f, columns=["request_id"]).column(0).to_pylist()}


def _all_parquet_request_ids(log_dir: Path) -> set[str]:
    """Request ids and ``user:<id>`` of every row of every Parquet file under the log, consumer state included."""
    found: set[str] = set()
    for file in log_dir.rglob("*.parquet"):
        found |= _all_parquet_request_ids_of(file)
    return found


def _all_parquet_request_ids_of(file: Path) -> set[str]:
    table = pq.read_table(file)
    found: set[str] = set()
    if "request_id" in table.column_names:
        found.update(table.column("request_id").to_pylist())
    if "user_id" in table.column_names:
        found.update(f"user:{u}" for u in table.column("user_id").to_pylist())
    return found


def test_erasing_a_user_while_the_consumer_runs(make_settings: MakeSettings, run_cli: RunCli, tmp_path: Path) -> None:
    erasure_topic = f"test.{uuid.uuid4().hex[:12]}.erasures"
    settings = make_settings(partitions=2, erasure_topic=erasure_topic)
    producer = RawProducer(settings)
    sent = {user: _send(producer, user, 15, "a") for user in USERS}
    producer.flush()
    config = ConsumerConfig(group_id="erase", grace_ms=1500, flush_interval_ms=100)
    running = _Running(ConsumerDaemon(settings, config))
    log_dir = Path(settings.log_dir)
    try:
        first = set().union(*(sent[user][0] for user in USERS))
        _wait("the first feedback of every user in the log", lambda: len(log_ids(log_dir)["feedback"]) == len(first),
              lambda: _seen(log_dir, running, {"feedback": first}), running)  # fmt: skip
        datasets = tmp_path / "datasets"
        compile_dataset(log_dir, datasets, CompileConfig.parse({"formats": ["trl"], "incremental": True}))
        env = {"PREFPAIR_ERASURE_TOPIC": erasure_topic}
        started = time.monotonic()
        done = run_cli("erase", "--user", ERASED, "--reader-grace", "0.2", "--requested-by", "test",
                       "--datasets", str(datasets), settings=settings, env=env)  # fmt: skip
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        print(f"erasure complete in {elapsed:.2f} s (bound {ERASE_BOUND_S:.0f} s): {result}")
        assert elapsed < ERASE_BOUND_S
        assert result["status"] == "complete" and result["rows_removed"]["inference"] == 15
        assert result["affected_versions"] == ["v00001"]
        assert result["rebuild"] == f"prefpair compile --incremental --out {datasets}.rebuilt"
        status = json.loads(Path(result["status_file"]).read_text(encoding="utf-8"))
        assert status["kind"] == "user" and status["value"] == ERASED and status["requested_by"] == "test"

        # late events: a new request of the erased user, feedback on an old one, and others' traffic
        late = {user: _send(producer, user, 3, "late") for user in USERS}
        producer.feedback(pairwise(sorted(sent[ERASED][0])[0]))
        producer.flush()
        # Every message consumed (the erased user's late feedback too: joined or orphaned, then left
        # out), and the others' rows committed: a partition still behind cuts segments only every 5 s.
        sent_messages = 3 * 18 * len(USERS) + 1  # an inference, a feedback and a signal per request
        others = set().union(*(sent[user][0] | late[user][0] for user in USERS if user != ERASED))
        expected = {"inference": others, "feedback": others}
        _wait(f"the daemon to consume all {sent_messages} messages sent",
              lambda: running.daemon.stats.consumed >= sent_messages, lambda: _seen(log_dir, running, expected),
              running)  # fmt: skip
        _wait("the other users' inference rows in the log", lambda: len(log_ids(log_dir)["inference"]) == len(others),
              lambda: _seen(log_dir, running, expected), running)  # fmt: skip
        _wait("the other users' feedback rows in the log", lambda: len(log_ids(log_dir)["feedback"]) == len(others),
              lambda: _seen(log_dir, running, expected), running)  # fmt: skip
    finally:
        running.stop()
    assert running.error is None, f"the daemon failed: {running.error!r}"

    erased_ids = sent[ERASED][0] | late[ERASED][0]
    everywhere = _all_parquet_request_ids(log_dir)
    theirs = erased_ids | {f"user:{ERASED}"}
    assert [(str(f), pq.read_table(f).to_pylist()) for f in log_dir.rglob("*.parquet")
            if _all_parquet_request_ids_of(f) & theirs] == []
    assert not (everywhere & erased_ids) and f"user:{ERASED}" not in everywhere
    kept = {user: sent[user][0] | late[user][0] for user in USERS if user != ERASED}
    ids = log_ids(log_dir)
    assert len(ids["inference"]) == len(set(ids["inference"])) == 18 * 3
    assert len(ids["feedback"]) == len(set(ids["feedback"])) == 18 * 3
    assert {f"user:{u}" for u in kept} <= everywhere
    signals = [r for f in table_files(log_dir, "signals") for r in pq.read_table(f).column("request_id").to_pylist()]
    assert sorted(signals) == sorted(set().union(*kept.values()))  # one each, the erased user's gone

    reader = LogReader(log_dir)
    assert all(reader.get_request(r) is None for r in sorted(erased_ids)[:5])
    assert all(reader.get_request(r) is not None for r in sorted(kept["u0"])[:5])

    result = compile_dataset(log_dir, tmp_path / "out", CompileConfig.parse({"splits": {"train": 1.0},
                                                                             "formats": ["trl"]}))
    text = (result.out_dir / "trl" / "train.jsonl").read_text(encoding="utf-8")
    assert f"prompt of {ERASED} " not in text and "prompt of u0 number 0 a" in text
    assert result.pairs_total == 18 * 3

    # resume is exact on the rewritten log: more traffic, a second run, every event once
    more = _send(producer, "u2", 5, "more")
    producer.flush()
    ConsumerDaemon(settings, config).run(until_caught_up=True)
    ids = log_ids(log_dir)
    assert len(ids["inference"]) == len(set(ids["inference"])) == 18 * 3 + 5
    assert len(ids["feedback"]) == len(set(ids["feedback"])) == 18 * 3 + 5
    assert more[1] <= set(ids["feedback"])


def test_the_service_endpoint_and_the_sdk_publish_and_reads_stop_at_once(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1, erasure_topic=f"test.{uuid.uuid4().hex[:12]}.erasures")
    log = LogBuilder(Path(settings.log_dir))
    for user in ("ana", "bo"):
        for i in range(3):
            log.inference(f"r-{user}-{i}", prompt=f"{user} asks {i}", user_id=user, session_id=f"s-{user}")
            log.pairwise(f"r-{user}-{i}", "a", "b")
    log.commit()
    with serve(settings, admin_keys=(SecretStr(ADMIN),)) as served:
        assert served.client.get("/v1/requests/r-ana-0").status_code == 200
        refused(served.client.post("/v1/erasures", json={"kind": "user", "value": "ana"}), 401, "X-Admin-Key")
        refused(served.client.post("/v1/erasures", json={"kind": "user", "value": "ana"},
                                   headers={"X-Admin-Key": "wrong"}), 401, "invalid")  # fmt: skip
        refused(served.client.post("/v1/erasures", json={"kind": "planet", "value": "ana"},
                                   headers={"X-Admin-Key": ADMIN}), 422)  # fmt: skip
        accepted = served.client.post("/v1/erasures", json={"kind": "user", "value": "ana"},
                                      headers={"X-Admin-Key": ADMIN})  # fmt: skip
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["kind"] == "user" and accepted.json()["value"] == "ana"
        # at once, before the log is rewritten: reads leave the user's requests and feedback out
        assert served.client.get("/v1/requests/r-ana-0").status_code == 404
        listed = served.client.get("/v1/feedback").json()["items"]
        assert {item["request_id"] for item in listed} == {f"r-bo-{i}" for i in range(3)}
        assert served.client.get("/v1/requests/r-bo-1").status_code == 200
        assert "/v1/erasures" in served.client.get("/openapi.json").json()["paths"]
    with serve(settings) as served:  # no admin key configured: erasure over HTTP is off
        refused(served.client.post("/v1/erasures", json={"kind": "user", "value": "x"},
                                   headers={"X-Admin-Key": ADMIN}), 403, "no admin key")  # fmt: skip

    by_sdk = request_erasure(session_id="s-bo", requested_by="support-ticket-7", settings=settings)
    with pytest.raises(ErasureError, match="exactly one"):
        request_erasure(user="a", request_id="b", settings=settings)
    requests, end = read_erasures(settings)
    assert end == 2 and [(r.kind, r.value) for r in requests] == [("user", "ana"), ("session", "s-bo")]
    assert requests[0].requested_by.startswith("service admin key ") and requests[1] == by_sdk

    report = erase_from_log(Path(settings.log_dir), requests, reader_grace_s=0)
    assert report.rows_removed == {"inference": 6, "feedback": 6}
    assert _all_parquet_request_ids(Path(settings.log_dir)) == set()


def test_retention_removes_old_segments_and_the_log_still_resumes_exactly(
    make_settings: MakeSettings, run_cli: RunCli, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1, erasure_topic=f"test.{uuid.uuid4().hex[:12]}.erasures")
    producer = RawProducer(settings)
    config = ConsumerConfig(group_id="retain", grace_ms=1500, flush_interval_ms=100)
    log_dir = Path(settings.log_dir)
    batches = []
    for tag in ("old", "older"):
        batches.append(_send(producer, "u0", 4, tag))
        producer.flush()
        ConsumerDaemon(settings, config).run(until_caught_up=True)
    before = log_ids(log_dir)
    assert len(before["inference"]) == 8
    assert apply_retention(log_dir, 30, reader_grace_s=0).segments_removed == 0  # nothing is 30 days old
    in_two_days = int(time.time() * 1000) + 2 * 86_400_000
    report = apply_retention(log_dir, 1, now_ms=in_two_days, reader_grace_s=0)
    assert report.segments_removed >= 1 and report.segments_kept == 1  # the newest is the resume point
    kept = log_ids(log_dir)
    assert 0 < len(kept["inference"]) < 8 and set(kept["inference"]) < set(before["inference"])
    assert not [p for p in (log_dir / "partition=00000").iterdir() if p.name.startswith(".tmp-")]

    fresh = _send(producer, "u0", 3, "fresh")
    producer.flush()
    ConsumerDaemon(settings, config).run(until_caught_up=True)
    after = log_ids(log_dir)
    assert len(after["inference"]) == len(set(after["inference"])) == len(kept["inference"]) + 3
    assert len(after["feedback"]) == len(set(after["feedback"])) == len(kept["feedback"]) + 3
    assert fresh[1] <= set(after["feedback"])

    shown = run_cli("compact", "--retain-days", "30", settings=settings)
    assert shown.returncode == 0, shown.stderr
    assert "0 segments older than 30 days removed" in shown.stdout


def test_erasure_and_retention_on_an_s3_log(s3_root: S3Storage, tmp_path: Path) -> None:
    local = tmp_path / "log"
    log = LogBuilder(local)
    for user in ("ana", "bo"):
        for i in range(2):
            log.inference(f"r-{user}-{i}", prompt=f"{user} asks {i}", user_id=user)
            log.pairwise(f"r-{user}-{i}", "a", "b")
        log.commit()
    for file in sorted(p for p in local.rglob("*") if p.is_file()):  # the same log, on S3
        (s3_root / file.relative_to(local).as_posix()).upload(file)
    request = erasure_request("user", "ana", "test")
    report = erase_from_log(s3_root, [request], reader_grace_s=0)
    assert report.rows_removed == {"inference": 2, "feedback": 2} and report.segments_rewritten == 1
    write_status(s3_root, [request], report)
    segments, _ = committed_files(s3_root)
    assert [name.generation for name, _ in segments] == [1, 0]
    old = SegmentName(*segments[0][0].ranges).dirname  # generation 0: deleted, marker and files
    assert not [key for key in s3_root.list_files() if f"/{old}/" in f"/{key}"]
    requests = set()
    for table in ("inference", "feedback"):
        for folder in (folder for _, folder in segments):
            if (folder / f"{table}.parquet").exists():
                requests |= set(pq.read_table(pa.BufferReader((folder / f"{table}.parquet").read_bytes()))
                                .column("request_id").to_pylist())  # fmt: skip
    assert requests == {"r-bo-0", "r-bo-1"}
    assert read_statuses(s3_root)[0]["status"] == "complete"
    retained = apply_retention(s3_root, 1, now_ms=int(time.time() * 1000) + 2 * 86_400_000, reader_grace_s=0)
    assert (retained.segments_removed, retained.segments_kept) == (1, 1)
    assert len(committed_files(s3_root)[0]) == 1


def test_erased_feedback_still_waiting_is_tombstoned_and_resume_adds_up(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=1, erasure_topic=f"test.{uuid.uuid4().hex[:12]}.erasures")
    producer = RawProducer(settings)
    producer.inference(inference("r-seen"))
    producer.feedback(pairwise("r-erased"))  # their inference comes later: both wait, stored in pending.parquet
    producer.feedback(pairwise("r-kept"))
    producer.flush()
    config = ConsumerConfig(group_id="pending", grace_ms=600_000, flush_interval_ms=100)
    running = _Running(ConsumerDaemon(settings, config))
    log_dir = Path(settings.log_dir)
    try:
        # committed segments only: a glob of the log would also walk the writer's temporary folders,
        # and fails (FileNotFoundError) when one is renamed into place between listing and reading it
        _wait("r-seen's inference and both waiting feedback events (pending.parquet) committed",
              lambda: _waiting_ids(log_dir) == {"r-erased", "r-kept"} and len(log_ids(log_dir)["inference"]) == 1,
              lambda: _seen(log_dir, running) + f"\nwaiting in committed segments: {_waiting_ids(log_dir)}",
              running)  # fmt: skip
    finally:
        running.stop()
    assert running.error is None, f"the daemon failed: {running.error!r}"
    assert _all_parquet_request_ids(log_dir) >= {"r-erased", "r-kept"}

    request = erasure_request("request", "r-erased", "test")
    publish_erasure(settings, request)
    report = erase_from_log(log_dir, [request], reader_grace_s=0)
    assert report.rows_removed == {"pending": 1}
    write_status(log_dir, [request], report)
    assert "r-erased" not in _all_parquet_request_ids(log_dir)

    producer.inference(inference("r-erased"))
    producer.inference(inference("r-kept"))
    producer.flush()
    ConsumerDaemon(settings, config).run(until_caught_up=True)  # resumes: one waits (r-kept), one is erased
    rows = [(row["request_id"], row["join_path"]) for row in feedback_rows(log_dir)]
    assert rows == [("r-kept", "waited")]
    assert "r-erased" not in _all_parquet_request_ids(log_dir)
    assert sorted(log_ids(log_dir)["inference"]) == sorted(set(log_ids(log_dir)["inference"]))
    assert len(log_ids(log_dir)["inference"]) == 2  # r-seen and r-kept


def test_a_reader_waits_for_an_erasure_topic_its_client_does_not_know_yet(make_settings: MakeSettings) -> None:
    """A consumer's first start creates the erasure topic and reads it at once; the broker may not list it
    yet (CI: "Failed to get watermark offsets: Local: Unknown partition", the daemon did not start)."""
    settings = make_settings(partitions=1, erasure_topic=f"test.{uuid.uuid4().hex[:12]}.erasures")
    topic = settings.erasure_topic
    reader = ErasureReader(settings)  # creates the topic; its client has not asked about it yet
    admin = create_admin(client_config(settings))
    admin.delete_topics([topic])[topic].result()
    _wait(f"{topic} deleted", lambda: topic not in admin.list_topics(timeout=10).topics, lambda: "still listed")
    back = threading.Timer(1.0, ensure_erasure_topic, (settings,))  # it comes back while the reader asks
    back.start()
    try:
        assert reader.read(0) == ([], 0)  # asked while unknown, answered once the topic is there
    finally:
        back.join()
        reader.close()
        admin.delete_topics([topic])
