"""A venue failing most of its swaps is skipped: a whole worker (real actors, a SQLite store,
the in-process bus) on scripted venues."""
from __future__ import annotations

from actors.circuit_breaker import MIN_SWAPS
from tests.unit.test_order_actors import make_harness  # noqa: F401  (the fixture)
from tests.unit.venue_double import ScriptedVenue


def test_orders_route_to_the_other_venue_while_one_fails_most_of_its_swaps(make_harness):
    raydium = ScriptedVenue("raydium", "0.15", outcomes=["transient"] * 50)  # the better price, failing
    meteora = ScriptedVenue("meteora", "0.149")
    h = make_harness(raydium=raydium, meteora=meteora, WORKER_CONCURRENCY=MIN_SWAPS, RETRY_ATTEMPTS=3)
    h.start()
    orders = h.wait_terminal([h.submit() for _ in range(MIN_SWAPS)])
    assert [o.status for o in orders] == ["confirmed"] * MIN_SWAPS
    assert {o.events[-1].meta["dex"] for o in orders} == {"meteora"}
    # Each order's first swap went to raydium (the better price) and failed; once its breaker
    # opened, only a retry quoted just before could still go there (without it: 3 swaps each).
    assert MIN_SWAPS <= len(raydium.swaps) < 2 * MIN_SWAPS, len(raydium.swaps)
    skipped = [e.meta for o in orders for e in o.events
               if e.status == "routing" and e.meta["quotes"]["raydium"].get("error", {}).get("code") == "circuit_open"]
    assert skipped, "the retries' routing events show raydium skipped"
