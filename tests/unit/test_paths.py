"""Routes through an intermediate token: which pairs are quoted, the best route over the direct
pool and each hub (within 0.1% of the brute-force best), the API shape. No database."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from hypothesis import assume, given, settings, strategies as st

from config import find_token
from storage.venues.base import Quote
from storage.venues.curve import ConstantProductCurve
from storage.venues.paths import best_route, quote_requests

SOL, USDC, BONK, JUP = (find_token(s) for s in ("SOL", "USDC", "BONK", "JUP"))
VENUES = ("raydium", "meteora")


def quote(dex, token_in, token_out, curve, amount_in) -> Quote:
    return Quote(dex, token_in, token_out, amount_in, curve.out(amount_in), Decimal(curve.fee_bps) / 10_000, 0, 0,
                 datetime(2026, 1, 1), curve)


def quotes_for(curves: dict, amount_in: int, token_in=BONK, token_out=JUP) -> list[Quote]:
    """The quotes an order actor gets: for each requested pair that has pools, both venues'."""
    quotes = []
    for pair_in, pair_out, amount in quote_requests(token_in, token_out, amount_in):
        for dex, curve in zip(VENUES, curves.get((pair_in.symbol, pair_out.symbol), ())):
            quotes.append(quote(dex, pair_in, pair_out, curve, amount))
    return quotes


def pool(price: float, depth: int, fee: int = 25) -> ConstantProductCurve:
    """A pool selling a token at `price` output units per input unit, `depth` input units deep."""
    return ConstantProductCurve(depth, max(1, int(depth * price)), fee)


def test_a_pair_of_two_hubs_is_quoted_alone_and_other_pairs_with_each_hub():
    assert [(a.symbol, b.symbol) for a, b, _ in quote_requests(SOL, USDC, 10)] == [("SOL", "USDC")]
    assert [(a.symbol, b.symbol) for a, b, _ in quote_requests(SOL, BONK, 10)] == [
        ("SOL", "BONK"), ("SOL", "USDC"), ("USDC", "BONK")]
    requests = quote_requests(BONK, JUP, 5 * 10**9)  # 50,000 BONK: 1 USD
    assert [(a.symbol, b.symbol) for a, b, _ in requests] == [
        ("BONK", "JUP"), ("BONK", "SOL"), ("SOL", "JUP"), ("BONK", "USDC"), ("USDC", "JUP")]
    assert requests[2][2] == SOL.base // 150 and requests[4][2] == USDC.base  # at reference prices


def test_a_pair_without_a_pool_routes_through_the_hub_that_gives_more():
    curves = {("BONK", "SOL"): (pool(1.3e-3, 10**14), pool(1.2e-3, 10**14)),  # 1 BONK unit: 1.3e-3 lamports
              ("SOL", "JUP"): (pool(1.9e-1, 10**14), pool(1.8e-1, 10**14)),
              ("BONK", "USDC"): (pool(2e-5, 10**14), pool(2e-5, 10**14)),
              ("USDC", "JUP"): (pool(1.26, 10**12), pool(1.26, 10**12))}
    route = best_route(quotes_for(curves, 10**10), BONK, JUP, 10**10, 50)
    assert route.via == SOL and route.best_dex == "raydium" and not route.legs
    middle = curves[("BONK", "SOL")][0].out(10**10)
    assert route.hops[0].amount_out == middle and route.hops[1].amount_in == middle
    assert route.amount_out == curves[("SOL", "JUP")][0].out(middle)
    assert route.min_amount_out == route.amount_out * 9950 // 10_000
    api = route.to_api()
    assert set(api) == {"hops", "amountOut", "minAmountOut"}
    assert [(h["tokenIn"], h["tokenOut"], [leg["dex"] for leg in h["legs"]]) for h in api["hops"]] == [
        ("BONK", "SOL", ["raydium"]), ("SOL", "JUP", ["raydium"])]


def test_the_direct_pool_wins_a_tie_and_keeps_its_shape():
    curves = {("SOL", "BONK"): (pool(7.5e3, 10**13), pool(7.5e3, 10**13)),
              ("SOL", "USDC"): (pool(0.15, 10**13), pool(0.15, 10**13)),
              ("USDC", "BONK"): (pool(5e4, 10**13), pool(5e4, 10**13))}
    route = best_route(quotes_for(curves, 10**9, SOL, BONK), SOL, BONK, 10**9, 50)
    assert route.via is None and set(route.to_api()) == {"legs", "amountOut", "minAmountOut"}


def test_a_limit_minimum_is_the_routes_one_minimum():
    curves = {("BONK", "SOL"): (pool(1.3e-3, 10**14),) * 2, ("SOL", "JUP"): (pool(1.9e-1, 10**14),) * 2}
    plain = best_route(quotes_for(curves, 10**10), BONK, JUP, 10**10, 50)
    limited = best_route(quotes_for(curves, 10**10), BONK, JUP, 10**10, 50, min_total_out=plain.amount_out - 1)
    assert limited.min_amount_out == plain.amount_out - 1
    assert all(leg.min_amount_out == 0 for hop in limited.hops for leg in hop.legs)


# ---- the property: within 0.1% of the brute-force best over every route and every split ----------

def split_best(first: ConstantProductCurve, second: ConstantProductCurve, amount: int, steps: int) -> int:
    """The most any split of `amount` on two venues gives (each venue alone included), over a grid."""
    xs = range(amount + 1) if amount <= steps else {amount * i // steps for i in range(steps + 1)}
    best = 0
    for x in xs:
        a, b = first.out(x), second.out(amount - x)
        if (a or x == 0) and (b or x == amount):  # a leg that buys nothing is refused
            best = max(best, a + b)
    return best


def brute_force_best(curves: dict, amount: int) -> int:
    """Every route of at most two hops, every split of each hop (on a grid)."""
    best = split_best(*curves[("BONK", "JUP")], amount, 400) if ("BONK", "JUP") in curves else 0
    for hub in ("SOL", "USDC"):
        first, second = curves[("BONK", hub)], curves[(hub, "JUP")]
        xs = range(amount + 1) if amount <= 60 else {amount * i // 60 for i in range(61)}
        for x in xs:
            a, b = first[0].out(x), first[1].out(amount - x)
            if (a or x == 0) and (b or x == amount) and a + b:
                best = max(best, split_best(*second, a + b, 200))
    return best


@st.composite
def pool_graphs(draw):
    """BONK -> JUP with or without a pool of its own, each hop's two venues near one price (where
    splits pay) or anywhere, depths from shallow to deep; and an amount up to the shallowest."""
    fee = st.sampled_from([20, 25, 30])
    depth = st.integers(10**4, 10**15)

    def venues(price):
        if draw(st.booleans()):
            near = draw(st.floats(0.97, 1.03))
            return (pool(price, draw(depth), draw(fee)), pool(price * near, draw(depth), draw(fee)))
        return (pool(price * draw(st.floats(0.5, 2)), draw(depth), draw(fee)),
                pool(price * draw(st.floats(0.5, 2)), draw(depth), draw(fee)))

    def deeper(second, first):
        # A hub is deep: its pools take whatever the first hop can give (no pool takes more than
        # itself, so a route would otherwise be best served by a worse first hop).
        floor = sum(c.reserve_out for c in first)
        return tuple(c if c.reserve_in >= floor else
                     ConstantProductCurve(floor, c.reserve_out * floor // c.reserve_in, c.fee_bps) for c in second)

    price = st.floats(1e-3, 1e3)
    to_sol, to_usdc, sol_jup, usdc_jup = (draw(price) for _ in range(4))
    first_sol, first_usdc = venues(to_sol), venues(to_usdc)
    curves = {("BONK", "SOL"): first_sol, ("SOL", "JUP"): deeper(venues(sol_jup), first_sol),
              ("BONK", "USDC"): first_usdc, ("USDC", "JUP"): deeper(venues(usdc_jup), first_usdc)}
    if draw(st.booleans()):
        curves[("BONK", "JUP")] = venues(to_sol * sol_jup * draw(st.floats(0.97, 1.03)))
    shallowest = min(c.reserve_in for key, pair in curves.items() if key[0] == "BONK" for c in pair)
    amount = draw(st.integers(1, 3_000)) if draw(st.booleans()) else \
        max(1, int(shallowest * draw(st.floats(1e-6, 1.0))))
    return curves, min(amount, shallowest)


@settings(max_examples=40, deadline=None)
@given(pool_graphs())
def test_the_chosen_route_is_within_a_tenth_of_a_percent_of_the_best_route_and_split_by_brute_force(case):
    curves, amount = case
    best = brute_force_best(curves, amount)
    assume(best > 0)
    route = best_route(quotes_for(curves, amount), BONK, JUP, amount, 50)
    assert route.amount_in == amount
    for hop in route.hops or ():
        venue = dict(zip(VENUES, curves[(hop.token_in.symbol, hop.token_out.symbol)]))
        assert all(0 < leg.amount_out == venue[leg.dex].out(leg.amount_in) for leg in hop.legs)
    if route.hops:
        assert route.hops[1].amount_in == route.hops[0].amount_out
    assert route.amount_out * 1000 >= best * 999, repr((curves, amount))[-900:]
