"""The traffic simulation: one model, events that keep the contract, and two sinks that agree.

The central check: the same traffic sent through the producer SDK to a real broker and consumed
by the daemon gives the same log rows, partitions and offsets as the same traffic written by the
log sink; and a daemon resumes from a log the sink wrote as if it had written it itself.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import MakeSettings

from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon
from prefpair.consumers.segments import read_resume_state
from prefpair.kafka import client_config, create_producer
from prefpair.producers import PreferenceLogger
from prefpair.schemas import ContractError, FeedbackEvent, InferenceEvent
from prefpair.schemas.log import committed_segments, table_files
from prefpair.schemas.models import check_feedback_record, check_inference_record
from prefpair.schemas.wire import SingleObjectCodec
from prefpair.simulate import (
    SOURCE_TYPES,
    LogBuilder,
    LogInputError,
    SimEvent,
    Traffic,
    TrafficSpec,
    TrafficSpecError,
    complete_feedback,
    complete_inference,
    murmur2,
    send_to_kafka,
    write_log,
)

EVERYTHING = TrafficSpec(requests=400, seed=3, chat_share=0.3, early_feedback_share=0.2, orphans=4, malformed=4,
                         annotator_copy_share=0.5, update_share=0.2, delete_share=0.1)  # fmt: skip


# --------------------------------------------------------------------------- the model
def test_every_event_keeps_the_contract_and_the_order_is_production_order() -> None:
    events = list(Traffic(EVERYTHING))
    kinds = {kind: [e for e in events if e.kind == kind] for kind in ("inference", "feedback", "poison")}
    for event in kinds["inference"]:
        InferenceEvent.parse(event.record)  # what the SDK checks
        check_inference_record(complete_inference(event.record or {}))  # what the consumer checks
    for event in kinds["feedback"]:
        FeedbackEvent.parse(event.record)
        check_feedback_record(complete_feedback(event.record or {}))
    codec = SingleObjectCodec()
    for event in kinds["poison"]:
        with pytest.raises(ContractError):  # undecodable, or decoded and refused: a dead letter either way
            _, record = codec.decode(event.value)
            FeedbackEvent.parse(record)
    assert [e.produced_ms for e in events] == sorted(e.produced_ms for e in events)
    # what the spec asks for is there
    records = [e.record or {} for e in kinds["feedback"]]
    assert {r["source"]["type"] for r in records if r["op"] == "CREATE"} == set(SOURCE_TYPES)
    assert {r["op"] for r in records} == {"CREATE", "UPDATE", "DELETE"}
    assert {r.get("outcome") for r in records} >= {"PREFERRED", "TIE", "BOTH_BAD"}
    assert any(r.get("correction") for r in records) and any(r.get("kind") == "RANKING" for r in records)
    assert sum(e.orphan for e in kinds["feedback"]) == 4 and len(kinds["poison"]) == 4
    assert any(e.early for e in kinds["feedback"])
    chat = [e for e in kinds["inference"] if (e.record or {}).get("messages")]
    assert chat and all("prompt" not in (e.record or {}) for e in chat)
    requests = {e.key for e in kinds["inference"]}
    assert len(requests) == EVERYTHING.requests - EVERYTHING.orphans
    logged: set[str] = set()
    for event in events:  # early feedback comes before its inference, the rest after it
        if event.kind == "inference":
            logged.add(event.key)
        elif event.kind == "feedback":
            assert (event.key in logged) != (event.early or event.orphan), event


def test_same_seed_same_events_other_seed_other_events() -> None:
    def fingerprint(spec: TrafficSpec) -> list[Any]:
        return [(e.kind, e.produced_ms, e.key, e.record, e.value) for e in Traffic(spec)]

    first = fingerprint(TrafficSpec(requests=200, seed=1))
    assert fingerprint(TrafficSpec(requests=200, seed=1)) == first
    assert fingerprint(TrafficSpec(requests=200, seed=2)) != first


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"requests": 0}, "requests"),
        ({"source_shares": {"CROWD": 0.5}}, "source_shares"),
        ({"source_shares": {"APP_USER": 0.8, "MODEL_JUDGE": 0.5}, "disjoint_sources": True}, "source_shares"),
        ({"orphans": 11, "requests": 10}, "orphans"),
        ({"min_candidates": 3, "max_candidates": 2}, "max_candidates"),
        ({"annotators": 2, "annotators_per_item": 3}, "annotators_per_item"),
        ({"position_bias_by_source": {"REWARD_MODEL": 1.0}}, "position_bias_by_source"),
        ({"models": {}}, "models"),
        ({"tie_share": 1.5}, "tie_share"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_spec_names_its_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(TrafficSpecError) as caught:
        TrafficSpec(**spec)
    assert caught.value.field == field and caught.value.reason


def test_murmur2_is_kafkas() -> None:
    """Values of Kafka's own UtilsTest.testMurmur2 (Java ints, signed)."""
    cases = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
             "a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             "abc": 479470107}  # fmt: skip
    for key, java in cases.items():
        assert murmur2(key.encode()) == java & 0xFFFFFFFF, key


# --------------------------------------------------------------------------- the log sink
def test_log_sink_writes_a_log_the_consumer_resumes_from(tmp_path: Path) -> None:
    spec = TrafficSpec(requests=300, seed=4, early_feedback_share=0.5)
    # many segments, so early feedback waits across their ends; a grace longer than the traffic
    config = ConsumerConfig(flush_rows=40, grace_ms=30 * 86_400_000)
    written = write_log(Traffic(spec), tmp_path / "log", partitions=3, config=config, expire_waiting=False)
    assert written.traffic.inferences == spec.requests - spec.orphans
    assert written.join_paths["waited"] > 0 and written.segments > 10
    assert written.orphan_rows == 0  # the lost inferences' feedback still waits: the grace has not passed
    pending_files = list((tmp_path / "log").glob("partition=*/seg-*/pending.parquet"))
    assert pending_files
    waiting = 0
    for partition in range(3):
        state = read_resume_state(tmp_path / "log", partition)  # checks pending files against state.json
        newest = max(name for name, _ in committed_segments(tmp_path / "log", partition))
        assert (state.inference_next, state.feedback_next) == (newest.inference_end, newest.feedback_end)
        waiting += len(state.pending)
    assert waiting == spec.orphans

    # more traffic continues the same log where it ended; at its end the grace passes
    more = write_log(Traffic(TrafficSpec(requests=50, seed=5, orphans=0, start_ms=spec.start_ms + 20 * 86_400_000)),
                     tmp_path / "log", partitions=3, config=config)  # fmt: skip
    assert more.orphan_rows == spec.orphans
    files = [str(f) for f in table_files(tmp_path / "log", "inference")]
    offsets = duckdb.sql(f"SELECT inference_partition, list(inference_offset ORDER BY inference_offset) "
                         f"FROM read_parquet({files}) GROUP BY ALL").fetchall()  # fmt: skip
    for _, listed in offsets:
        assert listed == list(range(len(listed)))  # no gap, no repeat


def test_same_traffic_same_log(tmp_path: Path) -> None:
    spec = TrafficSpec(requests=150, seed=6)
    write_log(Traffic(spec), tmp_path / "a")
    write_log(Traffic(spec), tmp_path / "b")
    for table in ("inference", "feedback", "orphans"):
        a, b = (sorted(map(str, table_files(tmp_path / x, table))) for x in ("a", "b"))
        rows_a = duckdb.sql(f"SELECT * FROM read_parquet({a}) ORDER BY ALL").fetchall()
        assert rows_a and rows_a == duckdb.sql(f"SELECT * FROM read_parquet({b}) ORDER BY ALL").fetchall()


# --------------------------------------------------------------------------- both sinks agree
COMPARED = {
    "inference": "request_id, inference_partition, inference_offset, inference_timestamp_ms, prompt, messages, "
                 "system_prompt, candidates, presentation_order, user_id, tags",
    "feedback": "feedback_id, op, request_id, feedback_partition, feedback_offset, feedback_timestamp_ms, key, kind, "
                "outcome, chosen_id, rejected_id, ranking, candidate_id, score, comment, correction, config, source, "
                "inference_partition, inference_offset, prompt, candidates",
    "orphans": "feedback_id, request_id, feedback_partition, feedback_offset, chosen_id, source",
}  # fmt: skip


def _rows(log_dir: Path, table: str) -> list[tuple[Any, ...]]:
    files = [str(f) for f in table_files(log_dir, table)]
    return duckdb.sql(f"SELECT {COMPARED[table]} FROM read_parquet({files}) ORDER BY ALL").fetchall()


def _send(settings: Settings, events: list[SimEvent]) -> None:
    raw = create_producer(client_config(settings))

    def send_raw(key: bytes, value: bytes) -> None:
        raw.produce(settings.feedback_topic, key=key, value=value)

    with PreferenceLogger(settings) as logger:
        send_to_kafka(events, logger, send_raw=send_raw)
        assert logger.flush(60) == 0
    assert raw.flush(30) == 0


def test_kafka_and_the_log_sink_write_the_same_log_and_the_daemon_resumes_a_sink_log(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(partitions=3)
    spec = TrafficSpec(requests=160, seed=8, days=1.0, early_feedback_share=0.2, update_share=0.15, orphans=3)
    events = list(Traffic(spec))
    _send(settings, events)
    config = ConsumerConfig(grace_ms=5_000, flush_interval_ms=100)  # no stall between two sends takes longer

    # A: the daemon consumes everything from the topics
    ConsumerDaemon(settings, config.model_copy(update={"group_id": "sim-a"})).run(until_caught_up=True)

    # B: the log sink writes the first part (cut where no feedback waits for a later inference),
    # then a daemon resumes from that log and consumes the rest from the same topics
    cut = next(
        i for i in itertools.count(len(events) // 2)
        if not any(e.early and e.key in {x.key for x in events[i:] if x.kind == "inference"} for e in events[:i])
    )  # fmt: skip
    resumed = settings.model_copy(update={"home": settings.home.parent / "resumed"})
    # The sink's record times are event times (a day of traffic), Kafka's are the wall clock (a second
    # of sending): a grace of a day in the sink makes the same joins as seconds do in Kafka.
    sink = config.model_copy(update={"grace_ms": 86_400_000})
    write_log(events[:cut], resumed.log_dir, partitions=3, config=sink, inference_topic=settings.inference_topic,
              feedback_topic=settings.feedback_topic, expire_waiting=False)  # fmt: skip
    stats = ConsumerDaemon(resumed, config.model_copy(update={"group_id": "sim-b"})).run(until_caught_up=True)
    assert stats.consumed == len(events) - cut  # nothing consumed twice, nothing skipped

    for table in ("inference", "feedback", "orphans"):
        expected = _rows(settings.log_dir, table)
        assert expected, table
        got = _rows(resumed.log_dir, table)
        assert got == expected, (table, [(a, b) for a, b in zip(got, expected, strict=False) if a != b][:2])
    orphans = {row[0] for row in _rows(settings.log_dir, "orphans")}
    assert orphans == {(e.record or {})["feedback_id"] for e in events if e.orphan}


# --------------------------------------------------------------------------- the builder
def test_builder_refuses_feedback_it_cannot_join(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    with pytest.raises(LogInputError) as caught:
        log.pairwise("never-logged", "a", "b")
    assert caught.value.field == "request_id" and "never-logged" in caught.value.reason
    with pytest.raises(LogInputError) as unknown:
        log.update("no-such-feedback", comment="x")
    assert unknown.value.field == "feedback_id"


def test_builder_continues_a_log_where_it_ends(tmp_path: Path) -> None:
    first = LogBuilder(tmp_path / "log", partition=1)
    first.inference("r1").pairwise("r1", "a", "b").orphan("gone", chosen_id="a").commit()
    second = LogBuilder(tmp_path / "log", partition=1)
    second.inference("r2").pairwise("r2", "b", "a").commit()
    names = [name for name, _ in committed_segments(tmp_path / "log", 1)]
    assert [(n.inference_start, n.inference_end, n.feedback_start, n.feedback_end) for n in names] == [
        (0, 1, 0, 2),
        (1, 2, 2, 3),
    ]
    state = read_resume_state(tmp_path / "log", 1)
    assert (state.inference_next, state.feedback_next) == (2, 3)


# --------------------------------------------------------------------------- layering
REPO = Path(__file__).resolve().parent.parent
BELOW = ("schemas", "producers", "consumers", "compile", "service", "report", "prefpair")
ABOVE = {"cli.py", "demo.py"}  # the command line sits above the simulation (prefpair/ holds it for now)


def test_no_area_below_the_simulation_imports_it() -> None:
    offenders = []
    for area in BELOW:
        for path in sorted((REPO / area).rglob("*.py")):
            if path.parent == REPO / "prefpair" and path.name in ABOVE:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                if any(n == "prefpair.simulate" or n.startswith("prefpair.simulate.") for n in names):
                    offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert (REPO / "simulate" / "__init__.py").exists()  # the check looks where the package lives
