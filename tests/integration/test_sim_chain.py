"""The simulated chain on SQLite and Postgres: one shared world, swaps, signatures, arbitrage, launches."""
from __future__ import annotations

import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from config import TOKENS, find_token
from storage.database import open_database
from storage.venues.base import SwapRequest, VenueError
from storage.venues.sim import amm, new_signature, open_chain
from storage.venues.sim.world import to_datetime

pytestmark = pytest.mark.integration

SOL, USDC, POPCAT = find_token("SOL"), find_token("USDC"), find_token("POPCAT")
LISTED_POOLS = 2 * 11  # two venues; SOL/USDC, and each other listed token with SOL and with USDC


class Clock:
    """A wall clock the test moves by hand (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_chain(database_settings):
    """Open a chain on the test's database (each call binds its own Database, like another process)."""
    open_database(database_settings, migrate=True)

    def make(clock=None, seed=1, **changes):
        settings = database_settings.with_(**{"venue_failure_rate": 0.0, "venue_timeout_rate": 0.0, **changes})
        db, _ = open_database(settings)
        return open_chain(db, settings, rng=random.Random(seed), clock=clock or Clock())

    return make


def sell_sol(chain, dex="raydium", sol=1, order_id="order-1", min_out=0, signature=None):
    request = SwapRequest(signature or new_signature(), order_id, dex, SOL, USDC, sol * 10**9, min_out)
    return request, chain.venue(dex).execute_swap(request)


def pool(chain, dex, a="SOL", b="USDC"):
    return next(p for p in chain.pools() if (p.dex, p.token_a.symbol, p.token_b.symbol) == (dex, a, b))


def test_the_world_is_created_once_and_every_chain_on_the_database_sees_it(make_chain):
    first, second = make_chain(), make_chain()
    assert first.seed == second.seed == "7"  # SIM_SEED of the fixture
    assert len(first.pools()) == LISTED_POOLS
    assert [p.to_api() for p in first.pools()] == [p.to_api() for p in second.pools()]


def test_processes_racing_to_create_the_world_agree_on_one(database_settings):
    open_database(database_settings, migrate=True)
    settings = database_settings.with_(sim_seed=None)  # each racer would pick its own random seed
    barrier = threading.Barrier(4)

    def racer(_):
        db, _ = open_database(settings)
        barrier.wait(timeout=30)
        chain = open_chain(db, settings, clock=Clock())
        return chain.seed, [p.to_api() for p in chain.pools()]

    with ThreadPoolExecutor(4) as pool_:
        results = list(pool_.map(racer, range(4)))
    assert len({seed for seed, _ in results}) == 1
    assert all(pools == results[0][1] and len(pools) == LISTED_POOLS for _, pools in results)


def test_a_swap_moves_the_reserves_and_is_recorded(make_chain):
    chain = make_chain()
    before, other_venue = pool(chain, "raydium"), pool(chain, "meteora")
    quoted = chain.venue("raydium").quote(SOL, USDC, 10**9)
    request, result = sell_sol(chain, min_out=quoted.amount_out)
    assert result.status == "confirmed" and result.amount_out == quoted.amount_out
    after = pool(chain, "raydium")
    assert abs(after.reserve_a - (before.reserve_a + 10**9)) <= 1  # de-drifting may round one unit
    assert abs(after.reserve_b - (before.reserve_b - quoted.amount_out)) <= 1
    assert after.price < before.price
    assert pool(chain, "meteora") == other_venue
    [swap] = make_chain().swaps_for_order("order-1")
    assert (swap.tx_hash, swap.dex, swap.amount_in, swap.amount_out) == (
        request.signature, "raydium", 10**9, quoted.amount_out)


def test_concurrent_swaps_from_many_processes_lose_no_reserve_update(make_chain):
    chains = [make_chain() for _ in range(4)]
    before = pool(chains[0], "raydium")

    def send(chain):
        return [sell_sol(chain, order_id="many")[1].status for _ in range(5)]

    with ThreadPoolExecutor(4) as senders:
        statuses = [s for batch in senders.map(send, chains) for s in batch]
    assert statuses == ["confirmed"] * 20
    after = pool(chains[0], "raydium")
    assert abs(after.reserve_a - (before.reserve_a + 20 * 10**9)) <= 20  # one unit of rounding per swap
    paid = sum(s.amount_out for s in chains[0].swaps_for_order("many"))
    assert abs(after.reserve_b - (before.reserve_b - paid)) <= 20


def test_swaps_sent_together_land_in_one_block_as_if_one_after_the_other(make_chain):
    together = make_chain(seed=1)
    before = pool(together, "raydium")
    signatures = [new_signature() for _ in range(4)]
    requests = [SwapRequest(sig, f"o{i}", "raydium", SOL, USDC, 10**9, 0) for i, sig in enumerate(signatures)]
    requests.append(requests[1])  # the same transaction twice in one block: executed once
    results = together.venue("raydium").execute_swaps(requests)
    assert [r.status for r in results] == ["confirmed"] * 5
    assert results[4] == results[1]
    outputs = [r.amount_out for r in results[:4]]
    assert outputs[0] > outputs[1] > outputs[2] > outputs[3], "each swap moved the price for the next"
    assert len({r.executed_at for r in results}) == 1, "a block lands at one moment"
    after = pool(together, "raydium")
    # Every input went into the pool and every output came out of it (up to the rounding of
    # re-pricing along the curve); the duplicate counts once.
    assert abs(after.reserve_a - before.reserve_a - 4 * 10**9) <= 10
    assert abs(before.reserve_b - after.reserve_b - sum(outputs)) <= 10


def test_a_signature_asked_about_before_it_landed_can_never_land(make_chain):
    chain = make_chain()
    request = SwapRequest(new_signature(), "order-1", "raydium", SOL, USDC, 10**9, 0)
    assert chain.venue("raydium").signature_status(request.signature).status == "not_found"
    late = chain.venue("raydium").execute_swap(request)  # the copy still on its way arrives
    assert late.status == "failed" and late.error_code == "expired"
    assert chain.venue("raydium").signature_status(request.signature).status == "not_found"
    assert chain.swaps_for_order("order-1") == []


def test_a_repeated_signature_never_executes_twice(make_chain):
    chain = make_chain()
    request, first = sell_sol(chain)
    reserve = pool(chain, "raydium").reserve_a
    again = make_chain().venue("raydium").execute_swap(request)
    assert again == first
    assert pool(chain, "raydium").reserve_a == reserve
    assert len(chain.swaps_for_order("order-1")) == 1


def test_signature_status_tells_confirmed_failed_and_unknown(make_chain):
    chain = make_chain()
    venue = chain.venue("meteora")
    _, confirmed = sell_sol(chain, dex="meteora")
    quoted = venue.quote(SOL, USDC, 10**9).amount_out
    failed_request, failed = sell_sol(chain, dex="meteora", min_out=quoted + 1)
    assert failed.status == "failed" and failed.error_code == "slippage_exceeded" and failed.retriable
    status = venue.signature_status(confirmed.signature)
    assert (status.status, status.dex, status.amount_in, status.amount_out) == (
        "confirmed", "meteora", 10**9, confirmed.amount_out)
    failed_status = chain.venue("raydium").signature_status(failed_request.signature)
    assert (failed_status.status, failed_status.error_code) == ("failed", "slippage_exceeded")
    assert venue.signature_status(new_signature()).status == "not_found"


def test_a_slippage_failure_moves_nothing(make_chain):
    chain = make_chain()
    before = pool(chain, "raydium")
    quoted = chain.venue("raydium").quote(SOL, USDC, 10**9).amount_out
    _, result = sell_sol(chain, min_out=quoted + 1)
    assert result.error_code == "slippage_exceeded"
    assert pool(chain, "raydium") == before
    assert chain.swaps_for_order("order-1") == []


def test_a_failure_rate_of_one_fails_every_swap_transiently(make_chain):
    chain = make_chain(venue_failure_rate=1.0)
    before = pool(chain, "raydium")
    results = [sell_sol(chain)[1] for _ in range(10)]
    assert all(r.status == "failed" and r.error_code == "transient" and r.retriable and r.message for r in results)
    assert pool(chain, "raydium") == before
    assert chain.swaps_for_order("order-1") == []
    assert chain.venue("raydium").signature_status(results[0].signature).error_code == "transient"


def test_timed_out_swaps_either_landed_or_never_will_and_signature_status_says_which(make_chain):
    chain = make_chain(venue_timeout_rate=1.0, seed=5)
    sent = [sell_sol(chain) for _ in range(16)]
    assert all(result.status == "timeout" for _, result in sent)
    statuses = {r.signature: chain.venue("raydium").signature_status(r.signature).status for _, r in sent}
    assert set(statuses.values()) == {"confirmed", "not_found"}
    landed = {s.tx_hash for s in chain.swaps_for_order("order-1")}
    assert landed == {sig for sig, status in statuses.items() if status == "confirmed"}
    dropped_request = next(req for req, r in sent if statuses[r.signature] == "not_found")
    resent = make_chain().venue("raydium").execute_swap(dropped_request)
    assert resent.status == "failed" and resent.error_code == "expired"
    assert chain.venue("raydium").signature_status(dropped_request.signature).status == "not_found"


def test_an_order_the_pool_cannot_fill_is_refused_for_good(make_chain):
    chain = make_chain()
    huge = 10**9 * 10**9  # a billion SOL
    with pytest.raises(VenueError) as refused:
        chain.venue("raydium").quote(SOL, USDC, huge)
    assert refused.value.code == "insufficient_liquidity"
    _, result = sell_sol(chain, sol=10**9)
    assert (result.status, result.error_code, result.retriable) == ("failed", "insufficient_liquidity", False)


def test_a_launch_makes_a_token_tradable_at_its_time(make_chain):
    clock = Clock()
    chain = make_chain(clock)
    assert not chain.is_tradable(POPCAT)
    with pytest.raises(VenueError) as early:
        chain.venue("raydium").quote(SOL, POPCAT, 10**9)
    assert early.value.code == "not_tradable"
    launch_at = chain.schedule_launch("POPCAT", 30)
    assert (launch_at - to_datetime(clock())).total_seconds() == pytest.approx(30)
    clock.now += 29
    assert not chain.is_tradable(POPCAT)
    clock.now += 2
    other = make_chain(clock)  # another process sees the launch too and both race to make pools
    assert other.is_tradable(POPCAT) and chain.is_tradable(POPCAT)
    quote = chain.venue("meteora").quote(SOL, POPCAT, 10**9)
    assert 250 < quote.amount_out / 10**9 < 350  # ~150 USD of a ~0.5 USD token
    assert len(chain.pools()) == LISTED_POOLS + 2 * 2  # with SOL and with USDC, on each venue
    for symbol, code in (("POPCAT", "already_tradable"), ("SOL", "already_tradable"), ("NOPE", "unknown_token")):
        with pytest.raises(VenueError) as refused:
            chain.schedule_launch(symbol, 5)
        assert refused.value.code == code


def test_latency_is_realistic_or_nothing(make_chain):
    realistic = make_chain(venue_profile="realistic").venue("raydium")
    assert all(0.15 <= realistic.quote_latency() <= 0.25 for _ in range(50))
    assert all(2.0 <= realistic.swap_latency() <= 3.0 for _ in range(50))
    instant = make_chain(venue_profile="instant").venue("meteora")
    assert instant.quote_latency() == instant.swap_latency() == 0.0


# ---- arbitrage: pools relax toward their reference price between swaps -----------------------

HALF_LIFE = amm.ARBITRAGE_HALF_LIFE_S
REFERENCE = 150.0  # USDC per SOL: the tokens' usd_price ratio


def undrifted_gap(chain, dex, t):
    """ln(pool price / reference) with the pool's seeded drift m(t) taken out: arbitrage's part."""
    drift = amm.drift_for(chain.seed, dex, "SOL", "USDC").log_multiplier(t)
    return math.log(float(pool(chain, dex).price) / REFERENCE) - drift


def test_after_a_large_one_way_sell_arbitrage_brings_the_price_most_of_the_way_back(make_chain):
    clock = Clock()
    chain = make_chain(clock)
    assert abs(undrifted_gap(chain, "raydium", clock.now)) < 1e-9  # created at the reference
    for _ in range(10):
        assert sell_sol(chain, sol=200)[1].status == "confirmed"
    gap = undrifted_gap(chain, "raydium", clock.now)
    assert gap < -0.02  # 2000 SOL pushed SOL at least 2% below the reference
    clock.now += HALF_LIFE
    assert undrifted_gap(chain, "raydium", clock.now) == pytest.approx(gap / 2, rel=1e-6)
    clock.now += 2 * HALF_LIFE
    assert undrifted_gap(chain, "raydium", clock.now) == pytest.approx(gap / 8, rel=1e-6)
    assert abs(undrifted_gap(chain, "meteora", clock.now)) < 1e-9  # the other venue was never moved


def test_arbitrage_moves_a_pool_along_its_curve(make_chain):
    clock = Clock()
    chain = make_chain(clock)
    sell_sol(chain, sol=2_000)
    moved = pool(chain, "raydium")
    clock.now += 2 * HALF_LIFE
    relaxed = pool(chain, "raydium")
    assert relaxed.price > moved.price and relaxed.reserve_a < moved.reserve_a
    product = moved.reserve_a * moved.reserve_b
    assert relaxed.reserve_a * relaxed.reserve_b == pytest.approx(product, rel=1e-9)


def test_quotes_and_swaps_land_on_the_same_relaxed_pool(make_chain):
    clock = Clock()
    chain = make_chain(clock)
    sell_sol(chain, sol=2_000)
    clock.now += 37.5  # half-way through a relaxation, and the drift moved too
    venue = chain.venue("raydium")
    quoted = venue.quote(SOL, USDC, 10**9)
    _, landed = sell_sol(chain, sol=1, min_out=quoted.amount_out)
    assert (landed.status, landed.amount_out) == ("confirmed", quoted.amount_out)
    clock.now += 12.25
    # Another process (this one's quotes may read the pool up to 50 ms stale) quotes 1 SOL:
    # its curve prices any other amount exactly as the pool will land it.
    quoted = make_chain(clock).venue("raydium").quote(SOL, USDC, 10**9)
    expected = quoted.curve.out(25 * 10**9)
    _, landed = sell_sol(chain, sol=25, min_out=expected)
    assert (landed.status, landed.amount_out) == ("confirmed", expected)


def test_every_chain_on_the_database_computes_the_same_relaxed_pools(make_chain):
    clock = Clock()
    first = make_chain(clock)
    sell_sol(first, sol=3_000)
    sell_sol(first, dex="meteora", sol=500)
    for step in (0.000_001, 1.5, 60, 600):
        clock.now += step
        second = make_chain(clock)  # another process, its own caches, at the same moment
        assert [p.to_api() for p in second.pools()] == [p.to_api() for p in first.pools()]
        assert second.venue("raydium").quote(SOL, USDC, 7 * 10**9) == first.venue("raydium").quote(
            SOL, USDC, 7 * 10**9)


def test_a_quote_carries_the_curve_of_the_pool_it_was_priced_on(make_chain):
    chain = make_chain()
    quote = chain.venue("meteora").quote(USDC, SOL, 1_000 * 10**6)
    assert quote.curve.out(quote.amount_in) == quote.amount_out
    assert quote.curve.fee_bps == int(quote.fee_rate * 10_000)
    sol_pool = pool(chain, "meteora")
    assert (quote.curve.reserve_in, quote.curve.reserve_out) == (sol_pool.reserve_b, sol_pool.reserve_a)
    expected = quote.curve.out(40_000 * 10**6)  # any other amount lands as the curve says
    request = SwapRequest(new_signature(), "order-1", "meteora", USDC, SOL, 40_000 * 10**6, expected)
    landed = chain.venue("meteora").execute_swap(request)
    assert (landed.status, landed.amount_out) == ("confirmed", expected)


# ---- launches: several tokens wait for theirs ----------------------------------------------------

UNLAUNCHED = [t for t in TOKENS if not t.tradable]


def test_several_tokens_wait_for_a_launch_and_each_launches_once(make_chain):
    clock = Clock()
    chain = make_chain(clock)
    assert len(UNLAUNCHED) >= 5 and not any(chain.is_tradable(t) for t in UNLAUNCHED)
    for token in UNLAUNCHED:
        chain.schedule_launch(token.symbol.lower(), 10)
    clock.now += 11
    for token in UNLAUNCHED:
        assert chain.is_tradable(token)
        with pytest.raises(VenueError) as again:
            chain.schedule_launch(token.symbol, 10)
        assert again.value.code == "already_tradable"
        quote = chain.venue("raydium").quote(USDC, token, 100 * 10**6)  # 100 USD of it, at its price
        assert token.to_whole(quote.amount_out) * token.usd_price == pytest.approx(100, rel=0.02)
    assert len(chain.pools()) == LISTED_POOLS + 2 * 2 * len(UNLAUNCHED)
