"""One resolution rule for the feedback log: compile, the service's reads and the report agree.

The rule lives in :mod:`prefpair.schemas.resolution`; this runs one hand-built log, with every
case the rule distinguishes, through all three readers.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.report.load import load_log
from prefpair.schemas import resolution
from prefpair.service.reads import FeedbackFilter, LogReader
from prefpair.simulate import LogBuilder

LATER = 1_790_000_000_000 + 10_000_000  # event times past the builder's clock

# feedback id -> its chosen candidate once resolved, for the feedback in force
LIVE = {
    "f_create": "a",
    "f_updated": "b",  # an UPDATE replaces the fields it sets
    "f_recreated": "b",  # a CREATE after a DELETE starts a new life
    "f_update_before_in_log": "b",  # written before its CREATE, later in event time
    "f_delete_before_in_time": "a",  # written after its CREATE, earlier in event time
    "f_orphan_then_joined": "b",  # created as an orphan, updated once the inference landed
    "f_orphan_only": "a",  # its inference never came: live, but compile has no context for it
}
DELETED = {"f_deleted", "f_update_after_delete", "f_delete_only", "f_delete_same_time"}
UPDATE_ONLY = {"f_update_only"}


def _request(log: LogBuilder, request_id: str) -> LogBuilder:
    return log.inference(
        request_id,
        prompt=f"prompt {request_id}",
        candidates=[("a", f"A {request_id}", "m1", "v1"), ("b", f"B {request_id}", "m2", "v1")],
    )


def _flip(log: LogBuilder, feedback_id: str, **kw: int) -> LogBuilder:
    return log.update(feedback_id, chosen_id="b", rejected_id="a", **kw)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = LogBuilder(tmp_path_factory.mktemp("resolution") / "log")
    for fid in [*LIVE, *DELETED, *UPDATE_ONLY]:
        if fid != "f_orphan_then_joined" and fid != "f_orphan_only":
            _request(log, f"r_{fid}")
    log.pairwise("r_f_create", "a", "b", feedback_id="f_create")
    log.pairwise("r_f_updated", "a", "b", feedback_id="f_updated")
    _flip(log, "f_updated")
    log.pairwise("r_f_recreated", "a", "b", feedback_id="f_recreated").delete("f_recreated")
    log.pairwise("r_f_recreated", "b", "a", feedback_id="f_recreated")
    log.feedback("r_f_update_before_in_log", op="UPDATE", feedback_id="f_update_before_in_log", ts=LATER + 2,
                 source=None, chosen_id="b", rejected_id="a")  # fmt: skip
    log.pairwise("r_f_update_before_in_log", "a", "b", feedback_id="f_update_before_in_log", ts=LATER + 1)
    log.pairwise("r_f_delete_before_in_time", "a", "b", feedback_id="f_delete_before_in_time", ts=LATER + 5)
    log.delete("f_delete_before_in_time", ts=LATER + 4)
    log.orphan("r_orphan_then_joined", feedback_id="f_orphan_then_joined", key="preference", kind="PAIRWISE",
               outcome="PREFERRED", chosen_id="a", rejected_id="b")  # fmt: skip
    log.orphan("r_orphan_only", feedback_id="f_orphan_only", key="preference", kind="PAIRWISE",
               outcome="PREFERRED", chosen_id="a", rejected_id="b")  # fmt: skip
    log.pairwise("r_f_deleted", "a", "b", feedback_id="f_deleted").delete("f_deleted")
    log.pairwise("r_f_update_after_delete", "a", "b", feedback_id="f_update_after_delete")
    log.delete("f_update_after_delete")
    log.pairwise("r_f_delete_same_time", "a", "b", feedback_id="f_delete_same_time", ts=LATER + 7)
    log.delete("f_delete_same_time", ts=LATER + 7)  # same event time: the later offset wins
    log.commit()
    # a second segment: the inference that came late, and events that a reader must join across segments
    _request(log, "r_orphan_then_joined")
    _flip(log, "f_orphan_then_joined")
    _flip(log, "f_update_after_delete")  # after the delete: does not revive it
    # an UPDATE or a DELETE that no CREATE precedes is not feedback, however complete its fields
    log.pairwise("r_f_update_only", "b", "a", feedback_id="f_update_only", op="UPDATE")
    log.feedback("r_f_delete_only", op="DELETE", feedback_id="f_delete_only", source=None)
    log.commit()
    return log.log_dir


def test_compile_keeps_the_live_feedback_and_counts_the_rest(log_dir: Path, tmp_path: Path) -> None:
    config = CompileConfig.parse({"splits": {"train": 1.0}, "include_ids": True})
    result = compile_dataset(log_dir, tmp_path / "out", config)
    rows = [json.loads(line) for path in sorted((result.out_dir / "trl").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]  # fmt: skip
    chosen = {row["feedback_ids"][0]: row["chosen_id"] for row in rows}
    assert all(len(row["feedback_ids"]) == 1 for row in rows)
    assert chosen == {fid: c for fid, c in LIVE.items() if fid != "f_orphan_only"}
    assert result.stage_counts["judgments_live"] == len(LIVE)
    assert result.stage_counts["feedback_ids"] == len(LIVE) + len(DELETED) + len(UPDATE_ONLY)
    assert result.drop_counts == {"deleted": len(DELETED), "update_without_create": 1, "no_inference": 1}


def test_service_reads_the_same_live_feedback(log_dir: Path) -> None:
    reader = LogReader(log_dir)
    listed, cursor = reader.list_feedback(FeedbackFilter(), limit=100)
    assert cursor is None
    assert {f["id"]: f["chosen_id"] for f in listed} == LIVE
    for fid in DELETED | UPDATE_ONLY:
        assert reader.get_feedback(fid) is None, fid
    late = reader.get_feedback("f_orphan_then_joined")
    assert late is not None and late["joined"] is True and late["events"] == 2


def test_report_reads_the_same_live_feedback(log_dir: Path) -> None:
    data = load_log(log_dir)
    try:
        live = {r["feedback_id"]: r["chosen_id"] for r in data.rows("SELECT feedback_id, chosen_id FROM live")}
        status = {r["feedback_id"]: r["status"] for r in data.rows("SELECT feedback_id, status FROM feedback_status")}
        # the late inference reaches the orphan's judgment: it becomes a comparison like the others
        compared = set(
            data.rows("SELECT list(DISTINCT feedback_id ORDER BY feedback_id) AS ids FROM comparisons")[0]["ids"]
        )
    finally:
        data.con.close()
    assert live == LIVE
    assert status == {**dict.fromkeys(LIVE, resolution.LIVE), **dict.fromkeys(DELETED, resolution.DELETED),
                      **dict.fromkeys(UPDATE_ONLY, resolution.UPDATE_WITHOUT_CREATE)}  # fmt: skip
    assert compared == set(LIVE) - {"f_orphan_only"}


def test_all_three_agree_on_what_is_live(log_dir: Path, tmp_path: Path) -> None:
    """The check the rule exists for: one log, one answer, whoever reads it."""
    service = {f["id"] for f in LogReader(log_dir).list_feedback(FeedbackFilter(), limit=100)[0]}
    data = load_log(log_dir)
    try:
        report = {r["feedback_id"] for r in data.rows("SELECT feedback_id FROM live")}
    finally:
        data.con.close()
    config = CompileConfig.parse({"splits": {"train": 1.0}, "include_ids": True})
    result = compile_dataset(log_dir, tmp_path / "out", config)
    compiled = {
        json.loads(line)["feedback_ids"][0]
        for path in (result.out_dir / "trl").glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    assert service == report == set(LIVE)
    assert compiled == set(LIVE) - {"f_orphan_only"}  # live, but no inference to build a pair from
    assert result.stage_counts["judgments_live"] == len(service)


def test_merge_keeps_earlier_values_and_metadata_when_an_update_leaves_them_unset() -> None:
    events = """(VALUES
        ('e1', 'f', 'CREATE', 'r', 1, 0, 0, 'k', 'SCORE', 0.5, 'first', MAP {'ui': 'v1'}),
        ('e2', 'f', 'UPDATE', 'r', 2, 0, 1, NULL, NULL, 1.0, NULL, MAP {}),
        ('e3', 'g', 'CREATE', 'r', 1, 0, 2, 'k', 'SCORE', 0.0, NULL, MAP {}),
        ('e4', 'g', 'DELETE', 'r', 1, 0, 3, NULL, NULL, NULL, NULL, MAP {})
    ) AS t(feedback_event_id, feedback_id, op, request_id, feedback_timestamp_ms, feedback_partition,
           feedback_offset, key, kind, score, comment, feedback_metadata)"""
    sql = resolution.resolved_feedback_sql(events, ("key", "kind", "score", "comment", "feedback_metadata"))
    with duckdb.connect() as con:
        rows = con.execute(sql).fetchall()
    assert rows == [("f", "r", 1, 2, 2, "k", "SCORE", 1.0, "first", {"ui": "v1"})]
    with pytest.raises(ValueError, match="not fields of a feedback: nope"):
        resolution.merged_feedback_sql("o", "s", ("nope",))
