"""Implicit signals through the real path: the SDK and ``POST /v1/signals`` on the real broker, the
consumer daemon, and each signal landed exactly once in the ``signals`` table of the log.

Signals share the feedback topic (keyed by request id) and need no join: a signal sent before its
inference lands at once; a producer retry (same signal id) lands once; a second consumer run that
resumes from the segments lands only what is new.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from service_support import serve

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon
from prefpair.consumers.landed import LandedLog
from prefpair.producers import PreferenceLogger
from prefpair.schemas import ValidationError
from prefpair.schemas.log import table_files
from prefpair.simulate import LogBuilder

CANDIDATES = [
    {"candidate_id": "a", "text": "first answer", "model_name": "m1"},
    {"candidate_id": "b", "text": "second answer", "model_name": "m2"},
]


def signal_rows(settings: Settings) -> list[tuple[str, str, str, str | None, str | None]]:
    files = [str(f) for f in table_files(settings.log_dir, "signals")]
    if not files:
        return []
    return duckdb.sql(
        f"SELECT signal_id, request_id, kind, candidate_id, text FROM read_parquet({files}) ORDER BY signal_id"
    ).fetchall()


def test_signals_from_the_sdk_and_the_service_land_exactly_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(partitions=2)
    with PreferenceLogger(settings) as log:
        # a signal before its inference: it needs no join, so nothing waits for it
        log.log_signal("req-1", "dwell", dwell_ms=4200, signal_id="s-early", timestamp_ms=1_000)
        log.log_inference(prompt="Q?", candidates=CANDIDATES, request_id="req-1", timestamp_ms=2_000)
        log.log_signal("req-1", "copy", candidate="b", signal_id="s-copy")
        log.log_signal("req-1", "copy", candidate="b", signal_id="s-copy")  # a retry: same signal id
        log.log_inference(prompt="Q?", candidates=CANDIDATES, request_id="req-2", parent_request_id="req-1")
        log.log_signal("req-2", "edit", candidate="a", text="my better answer", signal_id="s-edit")
        with pytest.raises(ValidationError) as unknown:
            log.log_signal("req-2", "copy", candidate="zz")
        assert unknown.value.field == "candidate_id"
        with pytest.raises(ValidationError) as no_text:
            log.log_signal("req-2", "edit", candidate="a")
        assert no_text.value.field == "text"
        with pytest.raises(ValidationError) as bad_kind:
            log.log_signal("req-2", "smile")
        assert bad_kind.value.field == "kind"
    config = ConsumerConfig(group_id="signals", grace_ms=60_000, flush_interval_ms=100)
    stats = ConsumerDaemon(settings, config).run(until_caught_up=True)
    assert (stats.signal_events, stats.duplicates, stats.dead_letters, stats.joined) == (4, 1, 0, 0)
    assert signal_rows(settings) == [
        ("s-copy", "req-1", "copy", "b", None),
        ("s-early", "req-1", "dwell", None, None),
        ("s-edit", "req-2", "edit", "a", "my better answer"),
    ]

    with serve(settings) as served:
        accepted = served.client.post(
            "/v1/signals", json={"id": "s-http", "request_id": "req-2", "kind": "select", "candidate_id": "b"}
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["id"] == "s-http" and accepted.json()["topic"] == settings.feedback_topic
        again = served.client.post(
            "/v1/signals", json={"id": "s-http", "request_id": "req-2", "kind": "select", "candidate_id": "b"}
        )
        assert again.status_code == 202 and again.json()["offset"] == accepted.json()["offset"]  # not sent twice
        refused = served.client.post("/v1/signals", json={"request_id": "req-2", "kind": "copy"})
        assert refused.status_code == 422 and "candidate_id" in refused.text
        assert "/v1/signals" in served.client.get("/openapi.json").json()["paths"]

    # A second run resumes from the segments: only the new signal lands.
    stats = ConsumerDaemon(settings, config).run(until_caught_up=True)
    assert stats.signal_events == 1
    rows = signal_rows(settings)
    assert [r[0] for r in rows] == ["s-copy", "s-early", "s-edit", "s-http"]
    inference = duckdb.sql(
        f"SELECT request_id, parent_request_id FROM read_parquet({[str(f) for f in table_files(settings.log_dir, 'inference')]}) "  # noqa: E501
        "ORDER BY request_id"
    ).fetchall()
    assert inference == [("req-1", None), ("req-2", "req-1")]

    # compile joins them: the copied "b" beats "a" on req-1; the edit on req-2 beats its "a"
    out = tmp_path / "dataset"
    result = compile_dataset(settings.log_dir, out, CompileConfig(splits={"train": 1.0}, formats=("trl",)))
    lines = [json.loads(line) for line in (out / "trl" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((r["chosen"], r["rejected"]) for r in lines) == [
        ("my better answer", "first answer"), ("second answer", "first answer")]  # fmt: skip
    assert result.pairs_total == 2


@pytest.mark.parametrize("newest_first", [False, True])
def test_landed_lookups_read_segments_from_before_parent_request_id(tmp_path: Path, newest_first: bool) -> None:
    """A log upgraded in place: segments written before inference v2 have no parent_request_id column;
    the consumer's landed lookups read them beside new ones (the column as null), in any file order."""
    log = LogBuilder(tmp_path / "log")
    old = log.inference("old", prompt="Q?").commit()
    table = pq.read_table(old / "inference.parquet")
    pq.write_table(table.drop(["parent_request_id"]), old / "inference.parquet")  # as v1 wrote it
    log.inference("new", prompt="Q?", parent_request_id="old").commit()
    landed = LandedLog(tmp_path / "log")
    try:
        ids = ["new", "old"] if newest_first else ["old", "new"]
        rows = landed.inference_rows(0, ids)
    finally:
        landed.close()
    assert {rid: row.get("parent_request_id") for rid, row in rows.items()} == {"old": None, "new": "old"}
