"""The daemon's garbage-collection policy: automatic collection off while daemons run, restored after."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from prefpair.consumers.collector import PeriodicCollection, manual_collection


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector_enabled")
def test_overlapping_daemons_restore_automatic_collection_only_when_the_last_one_stops() -> None:
    first, second = manual_collection(), manual_collection()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # the first daemon stops while the second still runs
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_a_process_that_had_automatic_collection_off_keeps_it_off() -> None:
    gc.disable()
    with manual_collection():
        assert not gc.isenabled()
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_periodic_collection_frees_reference_cycles_once_the_interval_has_passed() -> None:
    class Node:
        partner: object = None

    collection = PeriodicCollection(interval_s=60.0)
    with manual_collection():
        a, b = Node(), Node()
        a.partner, b.partner = b, a  # a cycle: reference counting alone never frees it
        alive = weakref.ref(a)
        del a, b
        start = collection._last
        collection.tick(start + 1.0)
        assert collection.collections == 0
        assert alive() is not None
        collection.tick(start + 60.0)
        assert collection.collections == 1
        assert alive() is None
