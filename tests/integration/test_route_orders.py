"""Orders on a pair without a pool of its own, through the worker's real actors on the simulated
chain (SQLite, in-process bus): one transaction and one minimum for the whole route, each hop
in its events and fill; a route resumed after a crash asks the chain about its one signature
and never lands twice; a limit order's trigger follows the route's price."""
from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import pytest

from config import find_token
from storage.records import EventDraft, OrderDraft
from storage.venues.base import HopSwap, SwapRequest
from storage.venues.sim import new_signature, open_chain
from tests.integration.test_sim_routes import route_request
from tests.unit.test_order_actors import make_harness  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

BONK, JUP, SOL, USDC = (find_token(s) for s in ("BONK", "JUP", "SOL", "USDC"))


@pytest.fixture
def sim_harness(make_harness):  # noqa: F811
    """The order actors' harness on the real simulated chain: no failures, the default collar."""
    h = make_harness(VENUE_FAILURE_RATE="0", VENUE_TIMEOUT_RATE="0", SIM_SEED="5", PRICE_COLLAR_BPS="1000")
    h.chain = h.storage.chain = open_chain(h.storage.db, h.settings)
    yield h
    h.chain.close()


def test_a_two_hop_market_order_is_one_transaction_with_one_minimum_and_shows_each_hop(sim_harness):
    h = sim_harness.start()
    (order,) = h.wait_terminal([h.submit("1000000", "BONK", "JUP")])
    assert order.status == "confirmed", order.error
    routing, building, submitted, confirmed = order.events[1:]
    via = routing.meta["hops"][0]["tokenOut"]
    assert [(hop["tokenIn"], hop["tokenOut"]) for hop in routing.meta["route"]["hops"]] == [("BONK", via), (via, "JUP")]
    assert building.meta["hops"] and "legs" not in building.meta and building.meta["minAmountOut"]
    assert set(submitted.meta) >= {"txHash", "dex"} and "legs" not in submitted.meta
    (fill,) = order.fills
    assert fill["txHash"] == submitted.meta["txHash"] == confirmed.meta["txHash"]
    assert fill["hops"] == confirmed.meta["hops"] and len(fill["hops"]) == 2
    assert Decimal(fill["amountOut"]) >= Decimal(building.meta["minAmountOut"])
    swaps = h.chain.swaps_for_order(str(order.id))
    assert {s.tx_hash for s in swaps} == {fill["txHash"]} and {s.token_out.symbol for s in swaps} == {via, "JUP"}


def crashed_after_submitting(h, signature: str, dex: str = "raydium"):
    """An order whose worker died with its route's transaction sent (stored in `submitted`)."""
    order = h.orders.create_order(OrderDraft("BONK", "JUP", Decimal("1000000"))).order
    h.orders.append_events([
        EventDraft(order.id, "routing", 1, {"bestDex": dex, "route": {"minAmountOut": "0"}}),
        EventDraft(order.id, "building", 1, {"dex": dex}),
        EventDraft(order.id, "submitted", 1, {"txHash": signature, "dex": dex, "via": "SOL"}),
    ])
    return str(order.id)


def test_a_route_resumed_after_a_crash_is_found_on_the_chain_with_its_hops_and_never_sent_again(sim_harness):
    h = sim_harness
    _, request = route_request(h.chain, BONK, JUP, 10**6 * BONK.base)
    order_id = crashed_after_submitting(h, request.signature, request.dex)
    landed = h.chain.venue(request.dex).execute_swap(SwapRequest(
        request.signature, order_id, request.dex, BONK, JUP, request.amount_in, request.min_amount_out, request.hops))
    assert landed.status == "confirmed"  # it landed before the worker died
    h.bus.enqueue(order_id)
    h.start()
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed" and order.attempts == 1
    (fill,) = order.fills
    assert fill["txHash"] == request.signature and fill["hops"] == [hop.to_api() for hop in landed.hops]
    assert {s.tx_hash for s in h.chain.swaps_for_order(order_id)} == {request.signature}


def test_a_route_that_never_landed_before_the_crash_can_never_land_and_the_retry_lands_once(sim_harness):
    h = sim_harness
    _, request = route_request(h.chain, BONK, JUP, 10**6 * BONK.base)
    order_id = crashed_after_submitting(h, request.signature, request.dex)
    h.bus.enqueue(order_id)
    h.start()
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed" and order.attempts == 2
    (fill,) = order.fills
    assert fill["txHash"] != request.signature
    late = h.chain.venue(request.dex).execute_swap(SwapRequest(
        request.signature, order_id, request.dex, BONK, JUP, request.amount_in, 0, request.hops))
    assert late.status == "failed" and late.error_code == "expired", "the old transaction can never land now"
    assert {s.tx_hash for s in h.chain.swaps_for_order(order_id)} == {fill["txHash"]}


def test_a_limit_order_on_a_two_hop_pair_waits_for_the_routes_price_and_fires_once(sim_harness):
    h = sim_harness.start()
    route, _ = route_request(h.chain, BONK, JUP, 10**6 * BONK.base)
    price = JUP.to_whole(route.amount_out) / 10**6
    limit = (price * Decimal("1.04")).quantize(Decimal("0.0000000001"))  # above drift alone (~2.8%)
    order_id = h.submit("1000000", "BONK", "JUP", type="limit", limit_price=limit)
    h.wait_status(order_id, "waiting")
    waiting = h.orders.get_order(UUID(order_id)).events[-1].meta
    assert Decimal(waiting["bestAmountOut"]) < Decimal(waiting["minAmountOut"])
    # JUP gets ~20% cheaper in every JUP pool: the route through either hub now meets the limit.
    for hub in (SOL, USDC):
        for dex in ("raydium", "meteora"):
            pool = next(p for p in h.chain.pools() if p.dex == dex and {p.token_a, p.token_b} == {hub, JUP})
            depth = pool.reserve_a if pool.token_a == JUP else pool.reserve_b
            push = SwapRequest(new_signature(), "push", dex, JUP, hub, depth // 10, 0)
            assert h.chain.venue(dex).execute_swap(push).status == "confirmed"
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed", order.error
    assert [e.status for e in order.events] == ["pending", "waiting", "routing", "building", "submitted", "confirmed"]
    assert Decimal(order.fills[0]["amountOut"]) >= limit * 10**6, "never below its limit"
    assert order.events[2].meta["hops"] and len({s.tx_hash for s in h.chain.swaps_for_order(order_id)}) == 1


def test_hops_survive_the_round_trip_through_an_events_meta():
    from actors.execution import hop_from_api

    hop = HopSwap(BONK, SOL, (("raydium", 10**11, 6_600_000), ("meteora", 5, 1)))
    assert hop_from_api(hop.to_api()) == hop


def test_a_sniper_order_on_a_pair_that_will_have_no_pool_fires_at_the_launch_through_a_hub(sim_harness):
    h = sim_harness.start()
    order_id = h.submit("1000000", "BONK", "POPCAT", type="sniper")
    h.wait_status(order_id, "waiting")  # POPCAT has not launched: armed for its launch
    h.chain.schedule_launch("POPCAT", 0.2)
    (order,) = h.wait_terminal([order_id])
    assert order.status == "confirmed", order.error
    (fill,) = order.fills
    assert [hop["tokenIn"] for hop in fill["hops"]] == ["BONK", fill["hops"][1]["tokenIn"]]
    assert fill["hops"][1]["tokenIn"] in ("SOL", "USDC") and fill["hops"][1]["tokenOut"] == "POPCAT"
