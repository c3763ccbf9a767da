"""Benchmarks of prefpair against raw baselines measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--bootstrap-servers HOST:PORT]

Each section measures the raw building block first (bare fastavro + raw librdkafka produce,
raw consume + fastavro decode, a bare DuckDB COPY ... TO) and then prefpair doing the same
work, on the same machine in the same run, and reports the ratio. Results go to
bench/results/latest.json and bench/results/latest.md (the table the README shows). With no
cluster configured, the local broker is started in a temporary folder and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, Producer
from fastavro import schemaless_writer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import compile_log, inferences, traffic

from prefpair.config import Settings
from prefpair.schemas import InferenceEvent
from prefpair.schemas.registry import INFERENCE, default_schema_set
from prefpair.schemas.wire import SingleObjectCodec
from prefpair.simulate import Traffic, inference_kwargs, send_to_kafka
from prefpair.topics import create_topics

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One line of the results table: prefpair's figure beside its baseline."""

    section: str
    metric: str
    prefpair: float
    baseline: float | None
    unit: str
    target: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.prefpair / self.baseline  # type: ignore[operator]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = f"  ratio {row.ratio:.2f}" if row.ratio is not None else ""
        base = f"  baseline {row.baseline:,.1f}" if row.baseline is not None else ""
        print(f"  {row.section:9} {row.metric:44} {row.prefpair:>12,.1f} {row.unit}{base}{ratio}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def unique_settings(bootstrap: str, home: Path, partitions: int = 4) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=bootstrap,
        home=home / suffix,
        inference_topic=f"bench.{suffix}.inference",
        feedback_topic=f"bench.{suffix}.feedback",
        dead_letter_topic=f"bench.{suffix}.dead-letters",
        partitions=partitions,
    )
    create_topics(settings)
    return settings


def raw_producer(bootstrap: str) -> Producer:
    """The floor: librdkafka with the same delivery guarantees prefpair asks for."""
    return Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 2_000_000,
    })


# --------------------------------------------------------------------------- producer
def bench_producer(results: Results, bootstrap: str, home: Path, events: int) -> None:
    from prefpair.producers import PreferenceLogger

    simulated = list(inferences(events, seed=1).inference_records())
    kwargs = [inference_kwargs(record) for record in simulated]
    schema = default_schema_set().readers[INFERENCE]
    header = SingleObjectCodec()._headers[INFERENCE]
    # What a bare Avro producer would send: the full record dict, already built.
    records = [InferenceEvent.parse(record).to_avro() for record in simulated]

    settings = unique_settings(bootstrap, home)
    producer = raw_producer(bootstrap)
    warm_up = records[: min(500, len(records))]  # connections, metadata, idempotence id: not measured
    for record in warm_up:
        producer.produce(settings.inference_topic, b"x" * 3000, record["request_id"].encode())
    producer.flush(60)
    per_call: list[float] = []
    start = time.perf_counter()
    for record in records:
        t0 = time.perf_counter_ns()
        buffer = io.BytesIO()
        buffer.write(header)
        schemaless_writer(buffer, schema, record)
        producer.produce(settings.inference_topic, buffer.getvalue(), record["request_id"].encode())
        producer.poll(0)
        per_call.append((time.perf_counter_ns() - t0) / 1000)
    producer.flush(60)
    raw_rate = events / (time.perf_counter() - start)
    raw_p50, raw_p99 = percentile(per_call, 0.5), percentile(per_call, 0.99)

    settings = unique_settings(bootstrap, home)
    per_call = []
    with PreferenceLogger(settings) as logger:
        for k in kwargs[:500]:
            logger.log_inference(**{**k, "request_id": k["request_id"] + "-warm"})
        logger.flush(60)
        start = time.perf_counter()
        for k in kwargs:
            t0 = time.perf_counter_ns()
            logger.log_inference(**k)
            per_call.append((time.perf_counter_ns() - t0) / 1000)
        logger.flush(60)
        rate = events / (time.perf_counter() - start)
        p50, p99 = percentile(per_call, 0.5), percentile(per_call, 0.99)

        pref_calls: list[float] = []
        for k in kwargs[: events // 2]:
            t0 = time.perf_counter_ns()
            logger.log_preference(k["request_id"], chosen="c0", rejected="c1", source="APP_USER")
            pref_calls.append((time.perf_counter_ns() - t0) / 1000)
        logger.flush(60)

    results.add(Row("producer", "log_inference p50 per call", p50, raw_p50, "µs", "≤ 1.5x floor", False))
    results.add(Row("producer", "log_inference p99 per call", p99, raw_p99, "µs", "< 250 µs", False))
    results.add(Row("producer", "log_preference p50 per call", percentile(pref_calls, 0.5), None, "µs", "", False))
    results.add(Row("producer", "log_preference p99 per call", percentile(pref_calls, 0.99), None, "µs",
                    "< 250 µs", False))
    results.add(Row("producer", "sustained inference events/s (to acked)", rate, raw_rate, "ev/s", "≥ 0.67x floor"))


# --------------------------------------------------------------------------- consumer
def load_topics(settings: Settings, events: Traffic) -> int:
    """Send simulated traffic through the producer SDK, as serving code would; how many events."""
    from prefpair.producers import PreferenceLogger

    logger = PreferenceLogger(settings, producer_config={"queue.buffering.max.messages": 1_000_000,
                                                         "queue.buffering.max.kbytes": 2_000_000})  # fmt: skip
    try:
        sent = send_to_kafka(events, logger).events
    finally:
        report = logger.close(120)
    if not report.ok:
        raise RuntimeError(f"loading the topics: {report.failed} events failed, {report.pending} unresolved")
    return sent


def consume_all(
    settings: Settings, expected: int, handle: Callable[[Message], None], finish: Callable[[], None] = lambda: None
) -> float:
    """Read both topics from the start with one plain librdkafka consumer, calling ``handle`` on
    every message and ``finish`` after the last; events/s from the first message to the end of ``finish``."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([settings.inference_topic, settings.feedback_topic])
    seen = 0
    start: float | None = None
    while seen < expected:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            if start is None:
                start = time.perf_counter()
            handle(msg)
            seen += 1
    finish()
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    return expected / elapsed


def raw_consume_decode(settings: Settings, expected: int) -> float:
    """The floor: one librdkafka consumer reading both topics and fastavro-decoding every message."""
    codec = SingleObjectCodec()
    return consume_all(settings, expected, lambda msg: codec.decode(msg.value() or b""))


def run_daemons(
    settings: Settings, processes: int, group: str, extra: Sequence[str] = (), environ: Mapping[str, str] = {}
) -> tuple[float, list[dict[str, Any]]]:
    """Run ``processes`` consumer daemons until caught up; events/s over the busy span, and their stats."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
    env.update({
        "PREFPAIR_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "", "PREFPAIR_HOME": str(settings.home),
        "PREFPAIR_INFERENCE_TOPIC": settings.inference_topic, "PREFPAIR_FEEDBACK_TOPIC": settings.feedback_topic,
        "PREFPAIR_DEAD_LETTER_TOPIC": settings.dead_letter_topic, "PREFPAIR_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    env.update(environ)
    command = [sys.executable, "-m", "prefpair.cli", "consume", "--until-caught-up", "--group-id", group, *extra]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    stats = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"consumer exited with {proc.returncode}")
        stats.append(json.loads(out.strip().splitlines()[-1]))
    consumed = sum(s["consumed"] for s in stats)
    busy = max(s["busy_seconds"] for s in stats)
    return consumed / busy, stats


ROUNDS = 2
"""Timed runs of each consumer and of each of its baselines; the best of each counts (see settled)."""


def settled() -> None:
    """Before a timed run: every dirty page written out, so that the daemon's fsyncs do not wait
    for the files the run before left (the broker's log of the topics just loaded), and a moment
    for the broker's background work."""
    os.sync()
    time.sleep(1.0)


Measured = TypeVar("Measured")


def best_of(run: Callable[[int], Measured], rate: Callable[[Measured], float]) -> Measured:
    """The run with the highest ``rate`` of ROUNDS runs (``run`` gets the round's number), each
    after :func:`settled`."""
    runs = []
    for round_ in range(ROUNDS):
        settled()
        runs.append(run(round_))
    return max(runs, key=rate)


def best_daemon_run(settings: Settings, group: str) -> tuple[float, list[dict[str, Any]]]:
    """The fastest of ROUNDS runs of one daemon over the same topics (a new group and log each time)."""
    return best_of(lambda round_: run_daemons(settings.model_copy(update={"home": settings.home / f"round-{round_}"}),
                                              1, f"{group}-{round_}"), lambda run: run[0])  # fmt: skip


def best_rate(measure: Callable[[], float]) -> float:
    """The best of ROUNDS runs of a baseline."""
    return best_of(lambda _: measure(), float)


def bench_consumer(results: Results, bootstrap: str, home: Path, requests: int) -> None:
    events = traffic(requests, seed=2)  # an inference and one feedback event per request
    settings = unique_settings(bootstrap, home)
    sent = load_topics(settings, events)
    raw_rate = best_rate(lambda: raw_consume_decode(settings, sent))
    rate, stats = best_daemon_run(settings, "bench-1")
    results.add(Row("consumer", "events/s, 1 process (decode, join, Parquet)", rate, raw_rate, "ev/s", "≥ 0.5x raw"))
    results.notes.append(
        f"consumer: {stats[0]['joined']:,} joined rows in {stats[0]['segments']} segments; "
        f"RSS {stats[0]['rss_bytes'] / 2**20:.0f} MB"
    )

    settings2 = unique_settings(bootstrap, home)
    load_topics(settings2, events)
    rate2, _ = run_daemons(settings2, 2, "bench-2")
    results.add(Row("scaling", "events/s, 2 processes over 4 partitions", rate2, rate, "ev/s", "near 2x of 1 process"))


def backlog_events(n: int, early: float = 0.1, seed: int = 4) -> Traffic:
    """n requests (~3.4 KB inference, ~300-byte feedback), one a second in event time: each end
    user's pick comes ~30 s (some minutes at most) after the answer, i.e. some 30 requests later in
    the topic; for ``early`` of them the inference is logged late, ~500 requests after its feedback."""
    return traffic(n, seed, early_feedback_share=early, early_lag_ms=500_000)


def plain_join_loop(settings: Settings, expected: int, out_dir: Path) -> float:
    """The baseline a team would write by hand: one confluent-kafka consumer on both topics,
    fastavro decode, a dict join (feedback waits in memory for its inference), pyarrow Parquet
    files every 50,000 rows; no validation, no dead letters, no exactly-once, no resume."""
    import pyarrow.parquet as pq

    from prefpair.consumers.join import feedback_row, inference_row
    from prefpair.consumers.segments import rows_to_table
    from prefpair.schemas.log import SCHEMAS

    codec = SingleObjectCodec()
    inferences: dict[str, dict[str, Any]] = {}
    waiting: dict[str, list[dict[str, Any]]] = {}
    tables: dict[str, list[dict[str, Any]]] = {"inference": [], "feedback": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = 0

    def write(table: str) -> None:
        nonlocal files
        pq.write_table(rows_to_table(tables[table], SCHEMAS[table]), out_dir / f"{table}-{files}.parquet")
        files += 1
        tables[table] = []

    def join(msg: Message) -> None:
        _, record = codec.decode(msg.value() or b"")
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        if topic == settings.inference_topic:
            row = inference_row(record, topic, partition, offset)
            inferences[row["request_id"]] = row
            tables["inference"].append(row)
            for feedback in waiting.pop(row["request_id"], []):
                tables["feedback"].append({**row, **feedback, "joined_at_ms": 0, "join_path": "waited"})
        else:
            feedback = feedback_row(record, topic, partition, offset)
            found = inferences.get(feedback["request_id"])
            if found is None:
                waiting.setdefault(feedback["request_id"], []).append(feedback)
            else:
                tables["feedback"].append({**found, **feedback, "joined_at_ms": 0, "join_path": "hot"})
        for table, rows in tables.items():
            if len(rows) >= 50_000:
                write(table)

    def write_rest() -> None:
        for table, rows in tables.items():
            if rows:
                write(table)

    return consume_all(settings, expected, join, write_rest)


def bench_backlog(results: Results, bootstrap: str, home: Path, requests: int) -> None:
    """A realistic backlog consumed from the start: more than the hot state holds, 10% of feedback
    produced before its inference; the daemon beside raw consume + decode and a plain join loop."""
    events = backlog_events(requests)
    settings = unique_settings(bootstrap, home)
    sent = load_topics(settings, events)
    raw_rate = best_rate(lambda: raw_consume_decode(settings, sent))
    plain_rate = best_rate(lambda: plain_join_loop(settings, sent, home / f"plain-loop-{uuid.uuid4().hex[:8]}"))
    rate, stats = best_daemon_run(settings, "bench-backlog")
    label = f"backlog of {requests:,} requests, events/s, 1 process"
    results.add(Row("consumer", f"{label} vs plain join loop", rate, plain_rate, "ev/s", "≥ 1x plain loop"))
    results.add(Row("consumer", f"{label} vs raw consume + decode", rate, raw_rate, "ev/s", "≥ 0.5x raw"))
    cpu_ms_per_k = stats[0]["busy_cpu_seconds"] / stats[0]["consumed"] * 1e6
    results.add(Row("consumer", "CPU per 1,000 events (backlog, all threads, first message to caught up)",
                    cpu_ms_per_k, None, "ms", "", False))  # fmt: skip
    results.notes.append(
        f"backlog: {stats[0]['joined']:,} joined ({stats[0]['joined_hot']:,} hot, {stats[0]['joined_waited']:,} "
        f"waited, {stats[0]['joined_landed']:,} landed), {stats[0]['orphans']} orphans, "
        f"{stats[0]['segments']} segments, {stats[0]['pauses']} pauses; RSS {stats[0]['rss_bytes'] / 2**20:.0f} MB"
    )


def bench_memory(results: Results, bootstrap: str, home: Path, sizes: list[int]) -> None:
    """RSS of the daemon holding n inference events that wait for feedback (the hot join state)."""
    for n in sizes:
        settings = unique_settings(bootstrap, home)
        if n:
            load_topics(settings, inferences(n, seed=5))
        _, stats = run_daemons(settings, 1, "bench-mem")
        budget = stats[0]["hot_budget_bytes"] // 2**20
        held = stats[0]["hot_entries"]
        label = f"RSS after {n:,} inference events awaiting feedback ({held:,} held, {budget} MB budget)"
        results.add(Row("memory", label, stats[0]["rss_bytes"] / 2**20, None, "MB", "", False))


# --------------------------------------------------------------------------- latency
def bench_latency(results: Results, bootstrap: str, home: Path, count: int, rate_per_s: float) -> None:
    """Feedback logged (SDK call returns) to its row in a committed Parquet file, default settings."""
    import pyarrow.parquet as pq

    from prefpair.producers import PreferenceLogger
    from prefpair.schemas.log import committed_segments

    settings = unique_settings(bootstrap, home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
    env.update({
        "PREFPAIR_BOOTSTRAP_SERVERS": bootstrap, "PREFPAIR_HOME": str(settings.home),
        "PREFPAIR_INFERENCE_TOPIC": settings.inference_topic, "PREFPAIR_FEEDBACK_TOPIC": settings.feedback_topic,
        "PREFPAIR_DEAD_LETTER_TOPIC": settings.dead_letter_topic, "PREFPAIR_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    daemon = subprocess.Popen([sys.executable, "-m", "prefpair.cli", "consume", "--group-id", "bench-latency"],
                              env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    logged: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        done: set[Path] = set()
        while not stop.is_set():
            for _, path in committed_segments(settings.log_dir):
                file = path / "feedback.parquet"
                if path in done or not file.exists():
                    continue
                done.add(path)
                now = time.perf_counter()
                for fid in pq.read_table(file, columns=["feedback_id"]).column(0).to_pylist():
                    seen.setdefault(fid, now)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        with PreferenceLogger(settings) as logger:
            request_ids = [logger.log_inference(**inference_kwargs(record))
                           for record in inferences(count, seed=3).inference_records()]  # fmt: skip
            logger.flush(30)
            time.sleep(8.0)  # the daemon joins the group and lands the inference events
            watcher.start()
            for request_id in request_ids:
                fid = logger.log_preference(request_id, chosen="c0", rejected="c1", source="APP_USER")
                logged[fid] = time.perf_counter()
                time.sleep(1.0 / rate_per_s)
            logger.flush(30)
        deadline = time.monotonic() + 60
        while len(seen) < len(logged) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        daemon.send_signal(2)
        daemon.wait(60)
    latencies = [seen[f] - t for f, t in logged.items() if f in seen]
    if len(latencies) < len(logged):
        results.notes.append(f"latency: {len(logged) - len(latencies)} of {len(logged)} rows not seen within 60 s")
    results.add(Row("latency", "feedback to committed Parquet row, p50", percentile(latencies, 0.5), None, "s",
                    "", False))  # fmt: skip
    results.add(Row("latency", "feedback to committed Parquet row, p99", percentile(latencies, 0.99), None, "s",
                    "< 2 s", False))  # fmt: skip


# --------------------------------------------------------------------------- compile
def compile_bench_log(log_dir: Path, requests: int) -> tuple[int, str]:
    """The compile's simulated log in ``log_dir``: its feedback rows, and a note on how it came.

    A log this function built before for the same number of requests (its ``bench-log.json``
    says so) is reused; anything else in ``log_dir`` is replaced by a new build.
    """
    from prefpair.simulate import write_log

    marker = log_dir / "bench-log.json"
    wanted = {"requests": requests, "seed": 1}
    if marker.is_file():
        built = json.loads(marker.read_text(encoding="utf-8"))
        if {k: built.get(k) for k in wanted} == wanted:
            return int(built["feedback_rows"]), (
                f"compile: simulated log of {built['feedback_rows']:,} feedback rows "
                f"({built['inference_rows']:,} requests), reused from {log_dir}"
            )
    shutil.rmtree(log_dir, ignore_errors=True)
    started = time.perf_counter()
    written = write_log(compile_log(requests, seed=1), log_dir)  # as the consumer would write it
    took = time.perf_counter() - started
    rows = written.feedback_rows
    marker.write_text(json.dumps({**wanted, "feedback_rows": rows, "inference_rows": written.inference_rows}),
                      encoding="utf-8")  # fmt: skip
    return rows, (f"compile: simulated log of {rows:,} feedback rows ({written.inference_rows:,} requests) "
                  f"written in {took:.0f} s")  # fmt: skip


def bench_compile(results: Results, home: Path, requests: int, log_dir: Path | None = None) -> None:
    import duckdb

    from prefpair.compile import CompileConfig, compile_dataset
    from prefpair.schemas.log import table_files

    log_dir = log_dir or home / "compile-log"
    rows, note = compile_bench_log(log_dir, requests)
    results.notes.append(note)
    files = [str(f) for f in table_files(log_dir, "feedback")]
    out = home / "bare.jsonl"

    def bare_copy() -> float:
        # The same rows, in the shape TRL reads: the prompt and two candidate texts, straight out.
        with duckdb.connect(config={"threads": os.cpu_count() or 2}) as db:
            started = time.perf_counter()
            db.execute(f"COPY (SELECT prompt, candidates[1].text AS chosen, candidates[2].text AS rejected "
                       f"FROM read_parquet({files})) TO '{out}' (FORMAT JSON)")  # fmt: skip
            rate = rows / (time.perf_counter() - started)
        out.unlink()
        return rate

    def compile_once() -> float:
        shutil.rmtree(home / "dataset", ignore_errors=True)
        started = time.perf_counter()
        result = compile_dataset(log_dir, home / "dataset", CompileConfig(formats=("trl",), seed=0))
        return result.pairs_total / (time.perf_counter() - started)

    bare = best_rate(bare_copy)
    rate = best_rate(compile_once)
    results.add(Row("compile", f"pairs/s, {rows:,} feedback rows to TRL JSONL", rate, bare,
                    "pairs/s", "≥ 0.5x bare COPY"))  # fmt: skip


# --------------------------------------------------------------------------- object storage
def bench_s3(results: Results, bootstrap: str, home: Path, requests: int) -> None:
    """The compile and the consumer with their log (and the dataset) on S3, beside the same on local disk."""
    from prefpair.compile import CompileConfig, compile_dataset
    from prefpair.s3server import seaweed_s3
    from prefpair.simulate import write_log

    with seaweed_s3(home / "s3") as endpoint:
        root = endpoint.root(f"bench-{uuid.uuid4().hex[:8]}")
        local_log = home / "s3-bench-log"
        written = write_log(compile_log(requests, seed=7), local_log)
        (root / "log").upload_tree(local_log)
        config = CompileConfig(formats=("trl",), seed=0)
        started = time.perf_counter()
        local = compile_dataset(local_log, home / "s3-bench-local", config)
        local_rate = local.pairs_total / (time.perf_counter() - started)
        started = time.perf_counter()
        stored = compile_dataset(root / "log", root / "dataset", config)
        s3_rate = stored.pairs_total / (time.perf_counter() - started)
        results.add(Row("s3", f"compile pairs/s, {written.feedback_rows:,} feedback rows, log and dataset on S3 "
                        "(local disk = baseline)", s3_rate, local_rate, "pairs/s", ""))  # fmt: skip

        events = backlog_events(requests // 4)
        rates = {}
        for kind in ("local", "s3"):
            settings = unique_settings(bootstrap, home)
            load_topics(settings, events)
            log_dir = str(settings.home / "log") if kind == "local" else f"{root.url}/consumer-log"
            rates[kind], _ = run_daemons(settings, 1, f"bench-s3-{kind}", ["--log-dir", log_dir],
                                         endpoint.environment())  # fmt: skip
        results.add(Row("s3", f"consumer events/s, backlog of {requests // 4:,} requests, log on S3 "
                        "(local disk = baseline)", rates["s3"], rates["local"], "ev/s", ""))  # fmt: skip


# --------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import confluent_kafka
    import duckdb
    import fastavro
    import pyarrow

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(),
        "confluent_kafka": confluent_kafka.version()[0], "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": fastavro.__version__, "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__,
    }  # fmt: skip


def markdown(results: Results, info: dict[str, Any], seconds: float) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {info['cpus']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"librdkafka {info['librdkafka']}, fastavro {info['fastavro']}, DuckDB {info['duckdb']}, "
        f"broker on the same machine; whole run {seconds:.0f} s.",
        "",
        "| area | measure | prefpair | baseline (same run) | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in results.rows:
        base = f"{row.baseline:,.1f} {row.unit}" if row.baseline is not None else "-"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        value = f"{row.prefpair:,.1f} {row.unit}"
        lines.append(f"| {row.section} | {row.metric} | {value} | {base} | {ratio} | {row.target} |")
    if results.notes:
        lines += ["", *[f"- {note}" for note in results.notes]]
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}{end}{tail}", encoding="utf-8")


@contextlib.contextmanager
def cluster(bootstrap: str | None, home: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from prefpair.broker import LocalBroker

    broker = LocalBroker(home / "broker")
    try:
        yield broker.start(timeout=120)
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("PREFPAIR_BOOTSTRAP_SERVERS"))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (not for the README)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table")
    parser.add_argument("--only", action="append", help="run only these sections (producer, consumer, backlog, "
                        "memory, latency, compile)")  # fmt: skip
    parser.add_argument("--backlog-requests", type=int, help="requests in the backlog section [100,000]")
    parser.add_argument("--compile-log", type=Path, help="keep the compile section's simulated log in this "
                        "directory; later runs of the same size reuse it (building it takes minutes)")  # fmt: skip
    args = parser.parse_args(argv)
    # compile: simulated requests, about one feedback row each
    sizes = {"producer": 2_000 if args.quick else 20_000, "consumer": 2_000 if args.quick else 15_000,
             "backlog": 5_000 if args.quick else 100_000, "s3": 4_000 if args.quick else 40_000,
             "memory": [0, 2_000] if args.quick else [0, 20_000, 60_000], "latency": 30 if args.quick else 200,
             "compile": 20_000 if args.quick else 1_000_000}  # fmt: skip
    if args.backlog_requests:
        sizes["backlog"] = args.backlog_requests
    wanted = set(args.only or ["producer", "consumer", "backlog", "memory", "latency", "compile", "s3"])
    results = Results()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prefpair-bench-") as tmp:
        home = Path(tmp)
        with cluster(args.bootstrap_servers, home) as bootstrap:
            print(f"bench: cluster {bootstrap}, work dir {home}", flush=True)
            if "producer" in wanted:
                bench_producer(results, bootstrap, home, sizes["producer"])
            if "consumer" in wanted:
                bench_consumer(results, bootstrap, home, sizes["consumer"] // 2)
            if "backlog" in wanted:
                bench_backlog(results, bootstrap, home, sizes["backlog"])
            if "memory" in wanted:
                bench_memory(results, bootstrap, home, sizes["memory"])
            if "latency" in wanted:
                bench_latency(results, bootstrap, home, sizes["latency"], rate_per_s=50)
            if "s3" in wanted:
                bench_s3(results, bootstrap, home, sizes["s3"])
        if "compile" in wanted:
            bench_compile(results, home, sizes["compile"], args.compile_log)
    seconds = time.perf_counter() - started
    info = machine()
    table = markdown(results, info, seconds)
    RESULTS.mkdir(exist_ok=True)
    name = "quick" if args.quick else "latest"
    (RESULTS / f"{name}.md").write_text(table, encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(json.dumps({
        "machine": info, "seconds": round(seconds, 1), "notes": results.notes,
        "rows": [{**row.__dict__, "ratio": row.ratio} for row in results.rows],
    }, indent=2), encoding="utf-8")  # fmt: skip
    if not args.quick and not args.no_readme and not args.only:
        update_readme(table)
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
