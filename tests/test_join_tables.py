"""The join's request-id tables keep each key's hash (CPython's general dict layout) and behave as before."""

from __future__ import annotations

import sys
from collections import OrderedDict

from prefpair.consumers.join import BoundedIds, HotState, keeping_hashes


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
