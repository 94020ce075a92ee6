"""The halts table and a process's view of it, on SQLite and Postgres (and both buses)."""
from __future__ import annotations

import threading

import pytest

from storage.database import open_database
from storage.halt_watch import HaltWatch
from storage.halts import Halt, HaltSet, HaltStore, pair_target
from storage.records import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def halts(database_settings):
    db, _ = open_database(database_settings, migrate=True)
    yield HaltStore(db)
    db.disconnect()


def test_halting_twice_keeps_one_active_halt_and_resuming_ends_it(halts):
    first, created = halts.halt("pair", pair_target("USDC", "SOL"), None, "depeg", "op_1")
    assert created and first.target == "SOL/USDC"
    again, created = halts.halt("pair", "SOL/USDC", None, "another reason", "op_2")
    assert not created and again == first, "halting twice answers the existing halt"
    halts.halt("all", "", None, "incident", "op_1")
    assert [h.scope for h in halts.active()] == ["pair", "all"]
    ended = halts.resume("pair", "SOL/USDC", "op_2")
    assert ended.id == first.id and ended.resumed_by == "op_2" and ended.resumed_at is not None
    assert halts.resume("pair", "SOL/USDC", "op_2") is None, "nothing active to resume"
    assert [h.scope for h in halts.active()] == ["all"]
    renewed, created = halts.halt("pair", "SOL/USDC", None, "again", "op_1")
    assert created and renewed.id != first.id, "a resumed halt stays as history; a new one can start"


def test_racing_halts_of_one_target_make_one_halt(halts):
    results, barrier = [], threading.Barrier(6)

    def halt():
        barrier.wait()
        results.append(halts.halt("key", "owner-1", "owner-1", "race", "op"))

    threads = [threading.Thread(target=halt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(created for _, created in results) == 1
    assert len({halt.id for halt, _ in results}) == 1
    assert len(halts.active()) == 1


def test_a_halt_set_covers_its_scope_a_pair_in_both_directions_and_nothing_else():
    nothing = HaltSet.of([])
    assert not nothing and nothing.covering("o", "SOL", "USDC") is None
    key = Halt("1", "key", "owner-a", "key-a", "r", utcnow(), "op")
    pair = Halt("2", "pair", "SOL/USDC", None, "r", utcnow(), "op")
    halts = HaltSet.of([key, pair])
    assert halts.covering("owner-a", "BONK", "JUP") is key
    assert halts.covering("owner-b", "SOL", "USDC") is pair
    assert halts.covering("owner-b", "USDC", "SOL") is pair
    assert halts.covering("owner-b", "SOL", "USDT") is None
    everything = Halt("3", "all", "", None, "r", utcnow(), "op")
    assert HaltSet.of([key, everything]).covering("owner-b", "SOL", "USDT") is everything


def test_a_halt_announced_by_one_process_reaches_another_on_the_bus_not_by_its_periodic_reload(
        halts, open_bus):
    here = HaltWatch(halts, open_bus(), refresh_s=3600).start()  # the periodic reload never runs here
    there = HaltWatch(halts, open_bus(), refresh_s=3600).start()
    changed = threading.Event()
    there.listen(lambda current: changed.set())
    try:
        halts.halt("all", "", None, "incident", "op")
        here.announce()
        assert here.current.everything is not None, "the announcing process sees it before it answers"
        assert changed.wait(5), "the other process heard of it on the bus"
        assert there.current.everything.reason == "incident"
        changed.clear()
        halts.resume("all", "", "op")
        here.announce()
        assert changed.wait(5) and not there.current
    finally:
        here.stop()
        there.stop()


def test_a_process_that_missed_the_broadcast_sees_the_halt_at_its_periodic_reload(halts, open_bus):
    watch = HaltWatch(halts, open_bus(), refresh_s=0.1).start()
    changed = threading.Event()
    watch.listen(lambda current: changed.set())
    try:
        halts.halt("key", "owner-1", "owner-1", "abuse", "op")  # no announcement at all
        assert changed.wait(5)
        assert watch.current.covering("owner-1", "SOL", "USDC").reason == "abuse"
    finally:
        watch.stop()
