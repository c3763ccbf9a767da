"""The join's request-id tables keep each key's hash (CPython's general dict layout) and behave as before."""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any

import pytest

from prefpair.consumers import join as join_module
from prefpair.consumers.join import PYTHON_OVERHEAD, BoundedIds, HotState, PartitionJoin, keeping_hashes
from prefpair.consumers.segments import ResumeState


def test_a_table_keeping_hashes_has_the_same_contents_and_order_and_stores_the_hashes() -> None:
    ids = [f"req-{n:08d}" for n in range(5_000)]  # several resizes
    plain: dict[str, int] = {}
    kept: dict[str, int] = keeping_hashes({})
    ordered: OrderedDict[str, int] = keeping_hashes(OrderedDict())
    for n, request_id in enumerate(ids):
        plain[request_id] = kept[request_id] = ordered[request_id] = n
    assert list(kept.items()) == list(plain.items()) == list(ordered.items())
    assert ordered.popitem(last=False) == (ids[0], 0)  # the layout key left no entry behind
    # A str-only dict stores 16 bytes per entry, the general layout 24 (the hash as well): the
    # layout survived every resize. If a CPython changes this, the join's speed-up is gone.
    assert sys.getsizeof(kept) > sys.getsizeof(plain)


def test_hot_state_and_dedup_ids_still_forget_their_oldest_entries_first() -> None:
    hot = HotState(budget_bytes=300)
    for n in range(5):
        hot.put(n % 2, f"req-{n}", {"n": n}, 100)
    assert [hot.get(f"req-{n}") for n in range(5)] == [None, None, {"n": 2}, {"n": 3}, {"n": 4}]
    assert hot.evictions == 2 and hot.evicted_from == {0, 1}
    seen = BoundedIds(2, ["a", "b"])
    seen.add("c")
    assert "a" not in seen and "b" in seen and "c" in seen


def row(request_id: str, offset: int, side: str) -> dict[str, Any]:
    return {"request_id": request_id, f"{side}_event_id": f"{side}-{request_id}", f"{side}_offset": offset}


def test_only_feedback_whose_inference_left_memory_is_looked_up_in_the_landed_log() -> None:
    hot = HotState(budget_bytes=2 * PYTHON_OVERHEAD * 100)  # two inference events of 100 bytes
    join = PartitionJoin(ResumeState(0), hot, grace_ms=60_000, dedup_ids=100)
    join.add_inference(row("a", 0, "inference"), 100, 1_000)
    join.seal()
    join.committed()  # "a" is in the log now
    join.add_inference(row("b", 1, "inference"), 100, 1_001)
    join.add_inference(row("c", 2, "inference"), 100, 1_002)  # "a" leaves memory
    join.add_feedback(row("early", 0, "feedback"), 10, 1_010)  # its inference comes later: not landed
    join.add_feedback(row("a", 1, "feedback"), 10, 1_011)
    asked: list[list[str]] = []

    def lookup(partition: int, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        asked.append(request_ids)
        return {"a": row("a", 0, "inference")} if "a" in request_ids else {}

    assert hot.may_have_evicted(0, "a") and not hot.may_have_evicted(0, "early")
    assert join.resolve_landed(lookup) == 1
    assert asked == [["a"]]
    assert [(f["request_id"], f["join_path"]) for f, _ in join.out.feedback] == [("a", "landed")]
    assert join.pending_count == 1  # "early" still waits for its inference


def test_past_the_evicted_ids_kept_any_miss_of_the_partition_is_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(join_module, "EVICTED_IDS_KEPT", 1)
    hot = HotState(budget_bytes=100)
    for n in range(3):
        hot.put(0, f"req-{n}", {}, 100)
    assert hot.may_have_evicted(0, "never-seen") and not hot.may_have_evicted(1, "never-seen")
    hot.drop_partition(0)
    assert not hot.may_have_evicted(0, "never-seen")


def test_the_evicted_ids_kept_are_bounded_across_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many partitions a daemon holds, it remembers at most EVICTED_IDS_KEPT evicted ids."""
    monkeypatch.setattr(join_module, "EVICTED_IDS_KEPT", 2)
    hot = HotState(budget_bytes=100)
    for partition, request_id in [(0, "a"), (1, "b"), (2, "c"), (3, "d")]:  # each evicts the one before
        hot.put(partition, request_id, {}, 100)
    assert hot.may_have_evicted(0, "a") and hot.may_have_evicted(1, "b")  # kept, by id
    assert not hot.may_have_evicted(0, "x") and not hot.may_have_evicted(1, "x")
    assert hot.may_have_evicted(2, "x")  # overflowed: any miss of partition 2 is looked up
    hot.drop_partition(0)  # frees its id for another partition
    hot.put(4, "e", {}, 100)  # evicts "d" of partition 3
    assert hot.may_have_evicted(3, "d") and not hot.may_have_evicted(3, "x")
