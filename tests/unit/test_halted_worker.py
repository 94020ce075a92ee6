"""The worker under a halt: real actors on a SQLite store and the in-process bus, scripted
venues (the harness of test_order_actors). Nothing covered by a halt starts or fires; every
held order goes on, once, after the resume. Waits are on stored state, never on sleeps."""
from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import actors.order_actor as order_actor_module
from actors.reconciler import Reconciler
from actors.supervisor import start_worker
from actors.timers import Timers
from storage.records import utcnow
from storage.venues import new_signature
from tests.unit.test_order_actors import make_harness  # noqa: F401 - the fixture
from tests.unit.venue_double import ScriptedVenue


def halt(h, scope="all", target="", reason="incident"):
    h.storage.halts.halt(scope, target, None, reason, "op_test")
    h.worker.halts.announce()


def resume(h, scope="all", target=""):
    assert h.storage.halts.resume(scope, target, "op_test") is not None
    h.worker.halts.announce()


def eventually(probe, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, what
        time.sleep(0.01)
    return value


def held(h) -> set[str]:
    return h.worker.directory.get("trigger_book").ask("held", timeout=5)


def test_a_market_order_queued_during_a_halt_waits_without_a_slot_and_executes_once_on_resume(make_harness):
    ray = ScriptedVenue("raydium", "0.15")
    h = make_harness(raydium=ray, WORKER_CONCURRENCY=1).start()
    halt(h, "pair", "SOL/USDC", "depeg")
    order_id = h.submit()
    h.wait_status(order_id, "waiting")
    waiting = h.orders.get_order(UUID(order_id)).events[-1]
    assert waiting.meta["trigger"] == "halt" and waiting.meta["reason"] == "depeg"
    assert eventually(lambda: order_id in held(h), "the held order waits in the trigger book")
    (other,) = h.wait_terminal([h.submit(token_out="USDT")])  # the only slot is free; another pair trades
    assert other.status == "confirmed"
    # SOL -> USDT quotes its own pair and the two hops through USDC: the held order nothing.
    assert ray.quote_calls == 3 and len(ray.swaps) == 1, "the held order was neither quoted nor sent"
    resume(h, "pair", "SOL/USDC")
    (order,) = h.wait_terminal([order_id])
    assert [e.status for e in order.events] == ["pending", "waiting", "routing", "building", "submitted",
                                                "confirmed"]
    assert len(ray.swaps) == 2, "one swap each"


def test_a_limit_order_that_crosses_during_a_halt_does_not_fire_and_fires_once_after_resume(make_harness):
    ray = ScriptedVenue("raydium", "0.15")
    h = make_harness(raydium=ray).start()
    limit = h.submit("1", type="limit", limit_price=Decimal("160"))
    h.wait_status(limit, "waiting")
    halt(h)
    ray.rate = Decimal("0.161")  # the price crosses the limit while trading is halted
    assert eventually(lambda: limit in held(h), "the crossed order is held in the book")
    assert h.status(limit) == "waiting" and not ray.swaps
    resume(h)
    (order,) = h.wait_terminal([limit])
    assert order.status == "confirmed" and order.events[-1].meta["amountOut"] == "161"
    assert len(ray.swaps) == 1, "fired once"


def test_a_sniper_whose_token_launched_during_the_halt_fires_on_resume(make_harness):
    ray = ScriptedVenue("raydium", "0.15")
    h = make_harness(raydium=ray).start()
    order_id = h.submit("1", token_in="SOL", token_out="POPCAT", type="sniper")
    h.wait_status(order_id, "waiting")
    halt(h, "pair", "POPCAT/SOL", "launch under review")
    h.chain.launches["POPCAT"] = utcnow() + timedelta(seconds=0.1)
    assert eventually(lambda: order_id in held(h), "the launch fired during the halt: held")
    assert h.status(order_id) == "waiting" and not ray.swaps
    resume(h, "pair", "POPCAT/SOL")
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed" and len(ray.swaps) == 1


class HaltingVenue(ScriptedVenue):
    """Its first swap fails transiently, and trading is halted as it does (an operator's timing)."""

    def __init__(self, *args, on_first_swap, **kwargs):
        super().__init__(*args, outcomes=["transient"], **kwargs)
        self.on_first_swap = on_first_swap

    def execute_swap(self, request):
        if self.on_first_swap is not None:
            act, self.on_first_swap = self.on_first_swap, None
            act()
        return super().execute_swap(request)


def test_a_retry_of_an_order_already_sent_waits_in_place_during_a_halt_then_goes_on(make_harness, monkeypatch):
    checks = []
    real_covering = order_actor_module.covering
    monkeypatch.setattr(order_actor_module, "HALT_RECHECK_S", 0.02)
    monkeypatch.setattr(order_actor_module, "covering", lambda *a: checks.append(1) or real_covering(*a))
    box = {}
    ray = HaltingVenue("raydium", "0.15", on_first_swap=lambda: halt(box["h"]))
    h = box["h"] = make_harness(raydium=ray, RETRY_MAX_DELAY_SECONDS=0.1).start()
    order_id = h.submit()
    eventually(lambda: len(checks) >= 5, "the held retry looks again and again")
    assert h.status(order_id) == "submitted" and ray.quote_calls == 1, "no new attempt started while halted"
    assert order_id not in held(h), "a partly sent order waits in place, not in the book"
    resume(h)
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed"
    routings = [e for e in order.events if e.status == "routing"]
    assert [e.attempt for e in routings] == [1, 2] and routings[1].meta["retryReason"].startswith("transient")


def test_held_orders_are_not_queued_again_and_a_stopped_worker_s_held_orders_are_taken_over(make_harness):
    ray = ScriptedVenue("raydium", "0.15")
    h = make_harness(raydium=ray, CLAIM_INTERVAL_SECONDS=0.1, HEARTBEAT_TTL_SECONDS=1).start()
    halt(h)
    order_id = h.submit()
    h.wait_status(order_id, "waiting")
    timers = Timers().start()
    reconciler = Reconciler.start(h.orders, h.bus, timers, "another-worker")
    try:
        assert reconciler.proxy().reconcile(utcnow()).get(timeout=10) == 0, "a held order's job is not lost"
    finally:
        reconciler.stop()
        timers.stop()
    h.worker.stop()  # its consumer is retired: its jobs, the held order's too, are anyone's now
    h.worker = start_worker(h.storage, h.settings, new_signature)
    assert eventually(lambda: order_id in held(h), "the new worker took the held order over, still held")
    assert not ray.swaps
    resume(h)
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed" and len(ray.swaps) == 1
    assert [e.status for e in order.events].count("waiting") == 1, "taken over without a second waiting event"
