"""Routes through an intermediate token on the simulated chain (SQLite and Postgres): the pool
graph, one transaction for every hop (both land or neither), one signature, never twice."""
from __future__ import annotations

import pytest

from config import find_token
from storage.venues.base import HopSwap, SwapRequest, VenueError
from storage.venues.paths import best_route, quote_all
from storage.venues.sim import new_signature
from storage.venues.sim.world import TOKEN_ORDER
from tests.integration.test_sim_chain import make_chain  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

BONK, JUP, SOL = find_token("BONK"), find_token("JUP"), find_token("SOL")


def route_request(chain, token_in, token_out, amount, min_out=None, order_id="route-1"):
    answers = quote_all(chain.venue, token_in, token_out, amount)
    route = best_route([q for _, _, q in answers if not isinstance(q, VenueError)], token_in, token_out, amount, 50)
    hops = tuple(HopSwap(h.token_in, h.token_out, tuple((leg.dex, leg.amount_in, leg.amount_out) for leg in h.legs))
                 for h in route.hops)
    minimum = route.min_amount_out if min_out is None else min_out
    return route, SwapRequest(new_signature(), order_id, route.best_dex, token_in, token_out, amount, minimum, hops)


def reserves(chain) -> dict:
    return {(p.dex, p.token_a.symbol, p.token_b.symbol): (p.reserve_a, p.reserve_b) for p in chain.pools()}


def test_tokens_pool_with_sol_and_usdc_and_not_with_each_other(make_chain):  # noqa: F811
    chain = make_chain()
    with pytest.raises(VenueError) as refused:
        chain.venue("raydium").quote(BONK, JUP, 10**10)
    assert refused.value.code == "no_pool"
    assert {(p.token_a.symbol, p.token_b.symbol) for p in chain.pools()} >= {("SOL", "BONK"), ("USDC", "JUP")}
    assert all({"SOL", "USDC"} & {p.token_a.symbol, p.token_b.symbol} for p in chain.pools())


def test_a_two_hop_route_lands_both_hops_in_one_transaction_once(make_chain):  # noqa: F811
    chain = make_chain()
    route, request = route_request(chain, BONK, JUP, 10**6 * BONK.base)  # ~20 USD of BONK
    assert route.via is not None and [(h.token_in.symbol, h.token_out.symbol) for h in route.hops] == [
        ("BONK", route.via.symbol), (route.via.symbol, "JUP")]
    before = reserves(chain)
    result = chain.venue(request.dex).execute_swap(request)
    assert result.status == "confirmed" and result.amount_out >= request.min_amount_out
    assert [h.token_out.symbol for h in result.hops] == [route.via.symbol, "JUP"]
    assert result.hops[1].legs[-1][2] and sum(out for _, _, out in result.hops[1].legs) == result.amount_out
    assert sum(i for _, i, _ in result.hops[1].legs) == sum(out for _, _, out in result.hops[0].legs)
    moved = {key for key, value in reserves(chain).items() if value != before[key]}
    assert {key[1:] for key in moved} == {tuple(sorted(("BONK", route.via.symbol), key=TOKEN_ORDER.get)),
                                          tuple(sorted((route.via.symbol, "JUP"), key=TOKEN_ORDER.get))}
    # The explorer shows each hop's swaps under the one signature; the chain tells the hops.
    swaps = chain.swaps_for_order("route-1")
    assert {s.tx_hash for s in swaps} == {request.signature} and len(swaps) >= 2
    status = chain.venue("meteora").signature_status(request.signature)
    assert (status.status, status.amount_out, status.hops) == ("confirmed", result.amount_out, result.hops)
    # Sent again (a resumed order, a lost reply): answered from the record, nothing moves.
    after = reserves(chain)
    assert chain.venue(request.dex).execute_swap(request) == result
    assert reserves(chain) == after


def test_a_route_below_its_minimum_or_failing_on_a_hop_moves_no_pool(make_chain):  # noqa: F811
    chain = make_chain()
    route, request = route_request(chain, BONK, JUP, 10**6 * BONK.base, min_out=10**15)
    before = reserves(chain)
    result = chain.venue(request.dex).execute_swap(request)
    assert (result.status, result.error_code, result.retriable) == ("failed", "slippage_exceeded", True)
    assert reserves(chain) == before, "the first hop did not land alone"
    huge = 10**9 * 10**9 * BONK.base  # more than a hop's pool can take
    _, request = route_request(chain, BONK, JUP, 10**6 * BONK.base)
    request = SwapRequest(new_signature(), "route-2", request.dex, BONK, JUP, huge, 0, request.hops)
    result = chain.venue(request.dex).execute_swap(request)
    assert result.status == "failed" and reserves(chain) == before
