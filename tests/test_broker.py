"""The local broker is a real Kafka: messages go through it, survive a restart, and it stops cleanly.

These tests start their own brokers (own data dirs under tmp_path) next to the session's
one; they share its jar cache, so the jars are fetched at most once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from prefpair.broker import (
    KAFKA_VERSION,
    BrokerStartError,
    LocalBroker,
    PortInUseError,
    is_fetched,
    kafka_home,
    running_address,
)
from prefpair.broker.manager import pid_alive

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b"key", value=value)
    assert producer.flush(30) == 0, "message not delivered within 30 s"


def _consume_first(bootstrap: str, topic: str, timeout: float = 30.0) -> bytes | None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                value: bytes | None = message.value()
                return value
        return None
    finally:
        consumer.close()


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def _processes_using(data_dir: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``data_dir`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(data_dir) in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_start_produce_consume_stop_restart_keeps_data(tmp_path: Path, broker_cache_dir: Path) -> None:
    data_dir = tmp_path / "broker"
    broker = LocalBroker(data_dir, cache_dir=broker_cache_dir)
    try:
        started = time.monotonic()
        bootstrap = broker.start(timeout=60)
        assert time.monotonic() - started < 60
        assert bootstrap.startswith("127.0.0.1:")
        assert running_address(data_dir) == bootstrap == broker.bootstrap

        status = broker.status()
        assert status.running and status.version == KAFKA_VERSION and status.pid is not None
        state = json.loads((data_dir / "broker.json").read_text())
        assert state["pid"] == status.pid and state["bootstrap"] == bootstrap
        assert state["version"] == KAFKA_VERSION

        _create_topic(bootstrap, "kept", partitions=2)
        _produce(bootstrap, "kept", b"survives a restart")
        assert _consume_first(bootstrap, "kept") == b"survives a restart"

        # Stop: the JVM is gone (not a zombie), nothing else runs from this data dir.
        pid = status.pid
        assert broker.stop() is True
        assert not pid_alive(pid)
        assert _processes_using(data_dir) == []
        assert running_address(data_dir) is None
        assert not broker.status().running
        assert json.loads((data_dir / "broker.json").read_text())["pid"] is None
        assert broker.stop() is False  # stopping a stopped broker is fine

        # Start again on the same data dir, as a context manager: same address, same data.
        with LocalBroker(data_dir, cache_dir=broker_cache_dir) as again:
            assert again.bootstrap == bootstrap
            metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
            assert len(metadata.topics["kept"].partitions) == 2
            assert _consume_first(bootstrap, "kept") == b"survives a restart"
            second_pid = again.status().pid
        assert second_pid is not None and not pid_alive(second_pid)
        assert _processes_using(data_dir) == []
    finally:
        broker.stop()


def test_cli_start_status_stop(run_cli: RunCli, tmp_path: Path, broker_cache_dir: Path) -> None:
    """`prefpair broker` through its home dir; other commands find the broker without flags."""
    home = tmp_path / "home"
    env: dict[str, str | None] = {"PREFPAIR_BROKER_CACHE": str(broker_cache_dir)}

    stopped = run_cli("broker", "status", "--home", str(home), env=env)
    assert stopped.returncode == 3, stopped.stderr
    assert "stopped" in stopped.stdout

    try:
        started = run_cli("broker", "start", "--home", str(home), env=env, timeout=90)
        assert started.returncode == 0, started.stderr
        address = started.stdout.strip()
        assert address.startswith("127.0.0.1:") and "\n" not in address
        assert running_address(home / "broker") == address

        status = run_cli("broker", "status", "--home", str(home), env=env)
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout and address in status.stdout

        again = run_cli("broker", "start", "--home", str(home), env=env)  # already running: same address
        assert again.returncode == 0 and again.stdout.strip() == address

        # No bootstrap configured anywhere: commands use the running local broker of --home.
        topics = run_cli("topics", "create", "--home", str(home), *_unique_topic_flags(), env=env)
        assert topics.returncode == 0, topics.stderr
        assert "created" in topics.stdout

        pid = json.loads((home / "broker" / "broker.json").read_text())["pid"]
        stop = run_cli("broker", "stop", "--home", str(home), env=env)
        assert stop.returncode == 0, stop.stderr
        assert not pid_alive(pid)
        assert _processes_using(home / "broker") == []

        after = run_cli("broker", "status", "--home", str(home), env=env)
        assert after.returncode == 3 and "stopped" in after.stdout
    finally:
        LocalBroker(home / "broker").stop()


def _unique_topic_flags() -> list[str]:
    suffix = uuid.uuid4().hex[:12]
    return [
        "--inference-topic", f"cli.{suffix}.inference",
        "--feedback-topic", f"cli.{suffix}.feedback",
        "--dead-letter-topic", f"cli.{suffix}.dead-letters",
    ]  # fmt: skip


def test_port_in_use_is_one_line_and_fast(run_cli: RunCli, tmp_path: Path, broker_cache_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        started = time.monotonic()
        result = run_cli(
            "broker", "start", "--data-dir", str(tmp_path / "b"), "--port", str(port),
            env={"PREFPAIR_BROKER_CACHE": str(broker_cache_dir)}, timeout=60,
        )  # fmt: skip
        assert time.monotonic() - started < 30
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "error" in lines[0] and str(port) in lines[0] and "in use" in lines[0]
        assert result.stdout == ""

        # The controller port is checked the same way, through the API.
        with pytest.raises(PortInUseError, match=f"controller port {port}"):
            LocalBroker(tmp_path / "c", cache_dir=broker_cache_dir, controller_port=port).start(timeout=30)
    assert _processes_using(tmp_path / "b") == [] and _processes_using(tmp_path / "c") == []


def test_broker_dying_at_start_fails_fast_with_its_log(
    run_cli: RunCli, tmp_path: Path, broker_cache_dir: Path
) -> None:
    data_dir = tmp_path / "dies"
    started = time.monotonic()
    result = run_cli(
        "broker", "start", "--data-dir", str(data_dir), "--heap", "1k",  # the JVM refuses this heap
        env={"PREFPAIR_BROKER_CACHE": str(broker_cache_dir)}, timeout=90,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prefpair broker: error:") and "exited" in last and "broker.log" in last
    assert "last lines of" in result.stderr  # the log tail is shown above the error line
    assert "Traceback" not in result.stderr
    assert running_address(data_dir) is None

    with pytest.raises(BrokerStartError):
        LocalBroker(data_dir, cache_dir=broker_cache_dir, heap="1k").start(timeout=30)
    assert _processes_using(data_dir) == []


def test_missing_java_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(empty)
    result = subprocess.run(
        [sys.executable, "-m", "prefpair.cli", "broker", "start", "--data-dir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "java not found" in lines[0], result.stderr


def test_fetch_redoes_an_interrupted_download_and_then_skips(tmp_path: Path, run_cli: RunCli) -> None:
    cache = tmp_path / "cache"
    home = kafka_home(cache)
    (home / "libs.partial").mkdir(parents=True)
    (home / "libs.partial" / "half-written.jar").write_bytes(b"")
    (home / "libs").mkdir()
    (home / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").write_bytes(b"")  # no marker: incomplete
    assert not is_fetched(cache)

    first = run_cli("broker", "fetch", "--cache-dir", str(cache), timeout=900)
    assert first.returncode == 0, first.stderr
    assert is_fetched(cache)
    assert first.stdout.strip() == str(home / "libs")
    jars = {p.name for p in (home / "libs").glob("*.jar")}
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in jars and f"kafka-clients-{KAFKA_VERSION}.jar" in jars
    assert any(name.startswith("log4j-slf4j") for name in jars)  # the broker logs through log4j2
    assert (home / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").stat().st_size > 0
    assert not (home / "libs.partial").exists()

    # Once complete, fetch never runs Maven again: it works with no mvn (and no java) on PATH.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    started = time.monotonic()
    second = run_cli("broker", "fetch", "--cache-dir", str(cache), env={"PATH": str(empty)})
    assert second.returncode == 0, second.stderr
    assert "already cached" in second.stderr
    assert time.monotonic() - started < 10


def test_running_address_ignores_stale_and_foreign_pids(tmp_path: Path) -> None:
    assert running_address(tmp_path / "missing") is None
    state = tmp_path / "broker.json"
    state.write_text(json.dumps({"pid": os.getpid(), "bootstrap": "127.0.0.1:9"}))  # alive, not Kafka
    assert running_address(tmp_path) is None
    script = "import os; print(os.getpid())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    state.write_text(json.dumps({"pid": int(done.stdout), "bootstrap": "127.0.0.1:9"}))  # exited
    assert running_address(tmp_path) is None
    state.write_text("not json")
    assert running_address(tmp_path) is None
    assert not LocalBroker(tmp_path).status().running
