"""Erasure end to end: traffic of several users through Kafka and the consumer, one user erased while
the consumer runs; no row of theirs anywhere after, everyone else's rows intact, resume still exact."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from conftest import MakeSettings, RunCli
from consumer_support import log_ids
from events import RawProducer, inference, pairwise

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.consumers import ConsumerConfig, ConsumerDaemon
from prefpair.service.reads import LogReader

USERS = ("u0", "u1", "u2", "u3")
ERASED = "u1"
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
        requests.add(request_id)
        feedback.add(fb["event_id"])
    return requests, feedback


def _wait(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def _all_parquet_request_ids(log_dir: Path) -> set[str]:
    found: set[str] = set()
    for file in log_dir.rglob("*.parquet"):
        table = pq.read_table(file)
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
    daemon = ConsumerDaemon(settings, config)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    log_dir = Path(settings.log_dir)
    try:
        _wait(lambda: len(log_ids(log_dir)["feedback"]) == 15 * len(USERS))
        env = {"PREFPAIR_ERASURE_TOPIC": erasure_topic}
        started = time.monotonic()
        done = run_cli("erase", "--user", ERASED, "--reader-grace", "0.2", "--requested-by", "test",
                       settings=settings, env=env)  # fmt: skip
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        print(f"erasure complete in {elapsed:.2f} s (bound {ERASE_BOUND_S:.0f} s): {result}")
        assert elapsed < ERASE_BOUND_S
        assert result["status"] == "complete" and result["rows_removed"]["inference"] == 15
        status = json.loads(Path(result["status_file"]).read_text(encoding="utf-8"))
        assert status["kind"] == "user" and status["value"] == ERASED and status["requested_by"] == "test"

        # late events: a new request of the erased user, feedback on an old one, and others' traffic
        late = {user: _send(producer, user, 3, "late") for user in USERS}
        producer.feedback(pairwise(sorted(sent[ERASED][0])[0]))
        producer.flush()
        _wait(lambda: len(log_ids(log_dir)["inference"]) == 18 * (len(USERS) - 1))
        time.sleep(2.0)  # the erased user's late feedback: joined or orphaned, then left out
    finally:
        daemon.stop()
        thread.join()

    erased_ids = sent[ERASED][0] | late[ERASED][0]
    everywhere = _all_parquet_request_ids(log_dir)
    assert not (everywhere & erased_ids) and f"user:{ERASED}" not in everywhere
    kept = {user: sent[user][0] | late[user][0] for user in USERS if user != ERASED}
    ids = log_ids(log_dir)
    assert len(ids["inference"]) == len(set(ids["inference"])) == 18 * 3
    assert len(ids["feedback"]) == len(set(ids["feedback"])) == 18 * 3
    assert {f"user:{u}" for u in kept} <= everywhere

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
