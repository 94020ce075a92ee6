"""The Reconciler's pass, fed doubles of the store and the bus (no database, no timers)."""
from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from actors.reconciler import Reconciler
from storage.records import utcnow

ARMED = 10_001  # more armed orders than the pass used to read in one query (10,000)


class Orders:
    """Unfinished orders oldest first, paged as the store pages them (by (created_at, id))."""

    def __init__(self, rows):
        self.rows = sorted(rows, key=lambda r: (r[3], r[0]))
        self.released: list[UUID] = []

    def unfinished_orders(self, created_before=None, limit=10_000, after=None):
        rows = [r for r in self.rows if created_before is None or r[3] < created_before]
        if after is not None:
            rows = [r for r in rows if (r[3], r[0]) > after]
        return rows[:limit]

    def release_job(self, order_id, job_id):
        self.released.append(order_id)
        return True


class Bus:
    def __init__(self, queued: set[str], live: set[str], waiting: set[str] | None = None):
        self.queued, self.live, self.enqueued = queued, live, []
        self.waiting = queued if waiting is None else waiting

    def try_lock(self, name, owner, ttl_s):
        return True

    def unlock(self, name, owner):
        pass

    def live_consumers(self):
        return self.live

    def queued_order_ids(self):
        return self.queued

    def waiting_order_ids(self):
        return self.waiting

    def enqueue(self, order_id):
        self.enqueued.append(order_id)
        return "job"


def test_a_lost_order_behind_ten_thousand_armed_ones_is_queued_again():
    start = utcnow() - timedelta(hours=1)
    armed = [(UUID(int=n + 1), f"job-{n}", "worker-live", start + timedelta(microseconds=n)) for n in range(ARMED)]
    lost = (UUID(int=ARMED + 1), "job-lost", "worker-dead", start + timedelta(minutes=30))
    bus = Bus(queued={str(row[0]) for row in armed}, live={"worker-live"})  # their jobs pend with the live worker
    orders = Orders(armed + [lost])
    reconciler = Reconciler(orders, bus, timers=None)  # not started: its pass is called directly
    assert reconciler._reconcile(utcnow() - timedelta(seconds=10)) == 1
    assert bus.enqueued == [str(lost[0])] and orders.released == [lost[0]]


def test_an_order_whose_job_was_fetched_but_never_claimed_is_queued_again():
    # A fetch whose reply was lost (a connection cut, a Redis Cluster failover) leaves the job
    # with a live consumer that never saw it: held, not waiting, and the order never claimed.
    old = utcnow() - timedelta(minutes=1)
    stranded = (UUID(int=1), None, None, old)
    waiting = (UUID(int=2), None, None, old)
    running = (UUID(int=3), "job-3", "worker-live", old)
    ids = {str(row[0]) for row in (stranded, waiting, running)}
    bus = Bus(queued=ids, live={"worker-live"}, waiting={str(waiting[0])})
    reconciler = Reconciler(Orders([stranded, waiting, running]), bus, timers=None)
    assert reconciler._reconcile(utcnow() - timedelta(seconds=10)) == 1
    assert bus.enqueued == [str(stranded[0])]
