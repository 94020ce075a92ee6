"""The web's EventHub alone: a real in-process bus, the database replaced by a fake store."""
from __future__ import annotations

import asyncio
from uuid import UUID

from storage.bus_memory import InProcessBus
from storage.errors import OrderNotFound
from storage.records import BusEvent
from web.hub import EventHub

ALICES = "00000000-0000-0000-0000-0000000000a1"


class AlicesOrderStore:
    """One order, Alice's; the database has nothing more to add to what the bus brings."""

    def events_after(self, order_id: UUID, after: int) -> list:
        return []  # what the test needs: the order's events come from the bus

    def get_order(self, order_id: UUID, owner: str | None, with_events: bool = False):
        raise OrderNotFound(str(order_id))  # not the caller's: as if it did not exist


class NoMetrics:
    def observe_event(self, event) -> None:
        pass

    def observe_dispatch_lag(self, seconds) -> None:
        pass

    def listener_gap(self) -> None:
        pass


class Recorder:
    def __init__(self):
        self.delivered: list[BusEvent] = []
        self.missing: list[str] = []

    def deliver(self, event: BusEvent) -> None:
        self.delivered.append(event)

    def order_found(self, order_id: str) -> None:
        pass

    def order_missing(self, order_id: str, reason: Exception | None = None) -> None:
        self.missing.append(order_id)

    def order_finished(self, order_id: str) -> None:
        pass


def test_a_subscription_dropped_before_its_ownership_check_cannot_show_another_key_s_order():
    """Bob subscribes to Alice's order while only the database can tell whose it is, and
    unsubscribes before it answers; Alice's order then goes on in this process. Subscribing
    again must still check the owner, not resume where the unchecked subscription stopped."""

    async def scenario():
        bus = InProcessBus()
        database_answers = asyncio.Event()

        async def run(fn, *args):  # the executor, held until the test lets the database answer
            await database_answers.wait()
            return fn(*args)

        hub = EventHub(AlicesOrderStore(), bus, run, NoMetrics())
        hub.start()
        bob = Recorder()
        hub.add_firehose(bob, owner="bob")
        hub.follow(bob, ALICES, 0, "bob")  # not remembered here: the database must tell
        hub.mute(bob, ALICES)  # unsubscribe before it answers
        bus.publish([BusEvent(ALICES, 1, "pending", "alice", b'{"status": "pending"}')])
        for _ in range(200):
            if hub.recent.owner_of(ALICES) == "alice":
                break
            await asyncio.sleep(0.01)
        assert hub.recent.owner_of(ALICES) == "alice"
        hub.follow(bob, ALICES, 0, "bob")  # subscribe again
        database_answers.set()
        await asyncio.sleep(0.1)
        hub.stop()
        bus.close()
        assert bob.delivered == [], "another key's events"
        assert ALICES in bob.missing

    asyncio.run(scenario())


class CountingMetrics(NoMetrics):
    def __init__(self):
        self.lags: list[float] = []
        self.gaps = 0

    def observe_dispatch_lag(self, seconds) -> None:
        self.lags.append(seconds)

    def listener_gap(self) -> None:
        self.gaps += 1


def test_the_hub_times_each_batch_it_fans_out_and_counts_a_listener_s_gap_once():
    async def scenario():
        bus, metrics = InProcessBus(), CountingMetrics()

        async def run(fn, *args):
            return fn(*args)

        hub = EventHub(AlicesOrderStore(), bus, run, metrics)
        hub.start()
        everyone = Recorder()
        hub.add_firehose(everyone)
        bus.publish([BusEvent(ALICES, 1, "pending", "alice", b"{}")])
        bus.publish([BusEvent(ALICES, 3, "building", "alice", b"{}")])  # 2 was lost on the way
        for _ in range(200):
            if len(metrics.lags) == 2:
                break
            await asyncio.sleep(0.01)
        hub.stop()
        bus.close()
        assert len(metrics.lags) == 2 and all(0 <= lag < 5 for lag in metrics.lags)
        assert metrics.gaps == 1
        assert [e.seq for e in everyone.delivered] == [1]

    asyncio.run(scenario())


def test_batches_from_the_bus_that_arrive_before_the_loop_took_the_last_share_its_one_hop():
    """Each hop wakes the IOLoop (a write to its self-pipe, a thread switch): batches that come
    while one is on its way ride with it, in order."""
    async def scenario():
        bus = InProcessBus()

        async def run(fn, *args):
            return fn(*args)

        hub = EventHub(AlicesOrderStore(), bus, run, NoMetrics())
        hub.start()
        everyone = Recorder()
        hub.add_firehose(everyone)
        hops = []
        loop = hub._loop

        class CountingLoop:
            def call_soon_threadsafe(self, callback, *args):
                hops.append(callback)
                return loop.call_soon_threadsafe(callback, *args)

        hub._loop = CountingLoop()
        for seq, status in ((1, "pending"), (2, "routing"), (3, "building")):  # the loop is busy here
            hub._on_batch([BusEvent(ALICES, seq, status, "alice", b"{}")])
        for _ in range(200):
            if len(everyone.delivered) == 3:
                break
            await asyncio.sleep(0.01)
        hub._on_batch([BusEvent(ALICES, 4, "submitted", "alice", b"{}")])  # the loop is free again
        for _ in range(200):
            if len(everyone.delivered) == 4:
                break
            await asyncio.sleep(0.01)
        hub.stop()
        bus.close()
        assert [e.seq for e in everyone.delivered] == [1, 2, 3, 4]
        assert len(hops) == 2

    asyncio.run(scenario())
