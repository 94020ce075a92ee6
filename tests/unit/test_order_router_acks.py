"""The OrderRouter's acknowledgements, fed messages in an order the test chooses (the Mopidy
way: the router is built, not started; what it tells itself waits in its inbox).

Jobs are acknowledged only once their order is off this worker, and the orders that finish
before a flush runs share one `bus.ack` (one pipeline) and one SlotFreed."""
from __future__ import annotations

from dataclasses import replace

from actors.messages import ClaimedOrder, ExecuteOrders, OrderFinished, SlotFreed
from actors.order_router import FlushAcks, OrderRouter
from storage.bus import Job
from storage.errors import BusError
from tests.unit.test_order_actor_steps import Inbox, ManualTimers, pending_order


class PooledActor(Inbox):
    """An idle order actor in the router's pool."""

    stopped = False

    def is_alive(self):
        return not self.stopped

    def stop(self, block=True):
        self.stopped = True


class AckingBus:
    """Records each `ack` call (one call is one pipeline on Redis); `failing` refuses them."""

    def __init__(self):
        self.acks: list[tuple[Job, ...]] = []
        self.failing = False

    def ack(self, *jobs):
        if self.failing:
            raise BusError("the bus is down")
        self.acks.append(jobs)


def make_router(orders: int):
    bus, consumer = AckingBus(), Inbox()
    router = OrderRouter(orders=None, bus=bus, directory=None, timers=ManualTimers(), policy=None,
                         new_signature=None, worker_id="w1")
    router.consumer = consumer
    router.idle = [PooledActor() for _ in range(orders)]
    claimed = []
    for n in range(orders):
        order = pending_order()
        claimed.append(ClaimedOrder(Job(f"job-{n}", str(order.id)), order))
    router.on_receive(ExecuteOrders(claimed))
    return router, bus, consumer, claimed


def finish(router, claimed: ClaimedOrder, **how) -> None:
    router.on_receive(OrderFinished(str(claimed.order.id), **how))


def told_itself(router) -> list:
    """The messages the router told itself, taken out of its inbox."""
    told = []
    while not router.actor_inbox.empty():
        told.append(router.actor_inbox.get_nowait().message)
    return told


def flush(router) -> None:
    """Deliver the FlushAcks the router told itself (exactly one, and nothing else)."""
    (message,) = told_itself(router)
    assert isinstance(message, FlushAcks)
    router.on_receive(message)


def test_no_job_is_acknowledged_before_its_order_is_done():
    router, bus, consumer, claimed = make_router(2)
    assert told_itself(router) == [] and bus.acks == []
    finish(router, claimed[0])
    flush(router)
    assert bus.acks == [(claimed[0].job,)]
    assert consumer.take(SlotFreed) == [SlotFreed(1)]
    assert str(claimed[1].order.id) in router.in_flight


def test_orders_finishing_before_the_flush_share_one_ack_and_one_slot_message():
    router, bus, consumer, claimed = make_router(3)
    for c in claimed:
        finish(router, c)
    flush(router)  # one FlushAcks for the three
    assert bus.acks == [tuple(c.job for c in claimed)]
    assert consumer.take(SlotFreed) == [SlotFreed(3)]
    assert told_itself(router) == []


def test_an_order_lost_or_handed_back_frees_its_slot_but_its_job_stays_pending():
    router, bus, consumer, claimed = make_router(3)
    finish(router, claimed[0], lost=True)
    finish(router, claimed[1])
    finish(router, claimed[2], handed_back=True)
    flush(router)
    assert bus.acks == [(claimed[1].job,)]
    assert consumer.take(SlotFreed) == [SlotFreed(3)]


def test_a_duplicate_job_of_an_order_in_flight_is_acknowledged_and_the_order_runs_once():
    router, bus, consumer, claimed = make_router(1)
    duplicate = replace(claimed[0], job=Job("job-dup", claimed[0].job.order_id))
    router.on_receive(ExecuteOrders([duplicate]))
    flush(router)
    assert bus.acks == [(duplicate.job,)]
    finish(router, claimed[0])
    flush(router)  # the next order to finish schedules the next flush
    assert bus.acks == [(duplicate.job,), (claimed[0].job,)]


def test_a_failed_ack_still_frees_the_slots_and_later_acks_go_on():
    router, bus, consumer, claimed = make_router(2)
    bus.failing = True
    finish(router, claimed[0])
    flush(router)
    assert bus.acks == [] and consumer.take(SlotFreed) == [SlotFreed(1)]
    bus.failing = False
    finish(router, claimed[1])
    flush(router)
    assert bus.acks == [(claimed[1].job,)]


def test_a_stopping_router_acknowledges_what_finished_and_not_what_still_runs():
    router, bus, consumer, claimed = make_router(2)
    finish(router, claimed[0])
    running = router.in_flight[str(claimed[1].order.id)]["ref"]
    router.on_stop()  # before its FlushAcks arrives
    assert bus.acks == [(claimed[0].job,)]
    assert consumer.take(SlotFreed) == [SlotFreed(1)]
    assert running.stopped
