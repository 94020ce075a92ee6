"""Limit and sniper orders, cancellation and expiry, end to end: real `engine web` and
`engine worker` processes on Postgres and Redis, driven over HTTP and WebSocket."""
from __future__ import annotations

import asyncio
import os
import re
import signal
from datetime import datetime
from decimal import Decimal

import pytest

from storage.venues.sim.amm import MAX_LOG_DRIFT
from tests.e2e.cluster import FAST_FAILOVER, SLOW_TICK, TERMINAL, took_over, until
from tests.e2e.guarantees import confirmed_swaps, executed

pytestmark = pytest.mark.e2e

# The simulator's drift keeps each venue's price within e^±MAX_LOG_DRIFT of the reference, so
# drift alone moves the best price by at most e^(2·MAX_LOG_DRIFT) (~2.8%) between two moments.
# A limit 3% above the price is never crossed by drift alone, only by the push; the push
# (8%) crosses it by at least ~2% even when drift took the price to its lowest meanwhile
# (1.03 × e^0.028 ≈ 1.059), so the orders do not fire on a marginal price that drifts back.
DRIFT_SPAN = Decimal(2 * MAX_LOG_DRIFT).exp()
ABOVE_DRIFT = Decimal("1.03")
PUSH = Decimal("0.08")
assert ABOVE_DRIFT > DRIFT_SPAN and (1 + PUSH) > ABOVE_DRIFT * DRIFT_SPAN * Decimal("1.015")

# One cluster for the tests that kill, stop or slow nothing: each reads the price at its start,
# and every order it makes has ended when it ends; it asserts on its own orders only. Without
# the price collar (no test here is about it): a push leaves the pools away from the reference
# for minutes, and a later test's push or large order must not be refused for that.
SHARED = {"workers": 2, "VENUE_PROFILE": "instant", "PRICE_COLLAR_BPS": "0", **SLOW_TICK}


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


async def best_price(client, amount: str = "1") -> Decimal:
    """What 1 SOL sells for now, in USDC, on the better venue (after fees and impact)."""
    code, quote = await client.request("GET", f"/api/quote?tokenIn=SOL&tokenOut=USDC&amount={amount}")
    assert code == 200, quote
    return Decimal(quote["route"]["amountOut"]) / Decimal(amount)


async def status(client, order_id: str) -> str:
    return (await client.order(order_id))[1]["status"]


async def push_sol_up(client, by: Decimal = PUSH):
    """Buy SOL with USDC, in one order, enough to raise SOL's price by about `by` (8%) on both
    venues: what a SOL seller's limit `ABOVE_DRIFT` over the price waits for (see above).

    On x·y=k pools SOL's price goes with the square of the USDC reserve, so a pool needs
    R × (√(1 + by) − 1) USDC; the router splits the order between the two pools."""
    code, answer = await client.request("GET", "/api/sim/pools")
    assert code == 200, answer
    reserves = [Decimal(p["reserveB"] if p["tokenB"] == "USDC" else p["reserveA"])
                for p in answer["pools"] if {p["tokenA"], p["tokenB"]} == {"SOL", "USDC"}]
    usdc = (sum(reserves) * ((1 + by).sqrt() - 1)).quantize(Decimal("0.01"))
    code, body = await client.submit(tokenIn="USDC", tokenOut="SOL", amount=str(usdc), slippageBps=5000)
    assert code == 202, body
    await until(lambda: _terminal(client, body["orderId"]), 30, "the push to confirm")


async def _terminal(client, order_id):
    return await status(client, order_id) in TERMINAL


def test_a_limit_order_waits_then_executes_when_the_price_crosses_never_below_its_limit(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        limit = (await best_price(client)) * ABOVE_DRIFT
        limit = limit.quantize(Decimal("0.000001"))
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="limit",
                                             limitPrice=str(limit), slippageBps=5000)
        assert code == 202
        listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=90))
        await until(lambda: _is(client, accepted["orderId"], "waiting"), 20, "the order to wait")
        await push_sol_up(client)
        frames, close_code = await listener
        assert [f["status"] for f in frames] == ["pending", "waiting", "routing", "building", "submitted",
                                                 "confirmed"]
        confirmed = frames[-1]["meta"]
        assert Decimal(confirmed["amountOut"]) >= limit, "never below the limit"
        assert Decimal(frames[3]["meta"]["minAmountOut"]) >= limit, "the limit is the floor, not 50% slippage"
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}")
        assert executed(swaps) == confirmed_swaps(frames[-1])  # once: one swap per leg
        client.close()

    asyncio.run(scenario())


async def _is(client, order_id, wanted):
    return await status(client, order_id) == wanted


def test_a_limit_order_not_reached_expires_and_a_waiting_one_is_cancelled(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        far = str(((await best_price(client)) * 2).quantize(Decimal("0.01")))
        code, expiring = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="limit",
                                             limitPrice=far, expiresInSeconds=2)
        assert code == 202
        code, cancelling = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="limit",
                                               limitPrice=far)
        assert code == 202
        await until(lambda: _is(client, cancelling["orderId"], "waiting"), 20, "the order to wait")
        code, cancelled = await client.request("POST", f"/api/orders/{cancelling['orderId']}/cancel")
        assert code == 200 and cancelled["status"] == "cancelled"
        frames, _ = await client.listen(cancelling["links"]["ws"], timeout=30)
        assert [f["status"] for f in frames] == ["pending", "waiting", "cancelled"]
        frames, close_code = await client.listen(expiring["links"]["ws"], timeout=30)
        assert [f["status"] for f in frames] == ["pending", "waiting", "expired"] and close_code == 1000
        assert ts(frames[-1]["timestamp"]) >= ts(frames[1]["meta"]["expiresAt"]), "not before its expiry"
        client.close()

    asyncio.run(scenario())


def test_an_order_that_reached_building_cannot_be_cancelled_and_goes_on(make_cluster):
    # Realistic venues at half their latency: the swap is still in flight (1-1.5 s) when the cancel comes.
    cluster = make_cluster(workers=1, VENUE_PROFILE="realistic", VENUE_LATENCY_SCALE="0.5")

    async def scenario():
        client = cluster.client()
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1")
        assert code == 202
        await until(lambda: _is(client, accepted["orderId"], "submitted"), 20, "the swap to be sent")
        code, answer = await client.request("POST", f"/api/orders/{accepted['orderId']}/cancel")
        assert (code, answer["error"]["code"]) == (409, "conflict")
        frames, _ = await client.listen(accepted["links"]["ws"], timeout=30)
        assert frames[-1]["status"] == "confirmed"
        client.close()

    asyncio.run(scenario())


def test_a_sniper_order_fires_on_its_launch_timer_not_a_poll_later(shared_cluster):
    """The book reads the launch schedule every LAUNCH_POLL_S and, knowing the launch ahead,
    sets a timer for it: the order routes at the launch, not at a poll after it. Armed ahead
    (its worker logged a timer for the launch, with time to spare, before the launch came),
    and never early. How soon after the launch it routes is a figure of the triggers bench
    (bench/triggers.py: sniperDelayP50Ms, sniperDelayMaxMs), not a bound here: under a loaded
    machine's scheduling a clock bound fails a test that proves the right thing."""
    cluster = shared_cluster(**SHARED)  # no other test launches POPCAT: the timers logged are this one's

    async def scenario():
        client = cluster.client()
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="POPCAT", amount="1", type="sniper",
                                             slippageBps=500)
        assert code == 202
        await until(lambda: _is(client, accepted["orderId"], "waiting"), 20, "the order to wait")
        code, launch = await client.request("POST", "/api/sim/launch", {"token": "POPCAT", "inSeconds": 2})
        assert code == 202
        frames, _ = await client.listen(accepted["links"]["ws"], timeout=30)
        assert [f["status"] for f in frames] == ["pending", "waiting", "routing", "building", "submitted",
                                                 "confirmed"]
        client.close()
        return ts(frames[2]["timestamp"]) - ts(launch["launchAt"])

    fired_ms = asyncio.run(scenario()).total_seconds() * 1000
    timers = [float(delay) for worker in cluster.workers
              for delay in re.findall(r"sniper orders wait for the launch of POPCAT in ([0-9.]+)s", worker.log_text())]
    assert timers and all(delay > 0 for delay in timers), f"no launch timer set ahead of the launch: {timers}"
    assert fired_ms >= 0, f"its routing event came {-fired_ms:.1f} ms before the launch"


async def arm_limit_orders(client, workers, count: int = 8):
    """`count` SOL sellers' limit orders above what drift can reach, all `waiting`; (the accepted
    answers, one worker holding some of them, the others, the ids of the orders it holds)."""
    limit = str(((await best_price(client)) * ABOVE_DRIFT).quantize(Decimal("0.000001")))
    accepted = []
    for _ in range(count):
        code, body = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="0.5", type="limit",
                                         limitPrice=limit, slippageBps=5000)
        assert code == 202
        accepted.append(body)
    ids = [a["orderId"] for a in accepted]

    async def all_waiting():
        return all([await _is(client, i, "waiting") for i in ids])

    await until(all_waiting, 30, "every order to wait")
    holders = {i: (await client.order(i))[1]["events"][1]["meta"]["worker"] for i in ids}
    holder = next(w for w in workers if any(f"-{w.pid}-" in h for h in holders.values()))
    others = [w for w in workers if w is not holder]
    return accepted, holder, others, [i for i, h in holders.items() if f"-{holder.pid}-" in h]


def test_a_killed_worker_s_armed_orders_each_fire_once_on_another_worker(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant", **SLOW_TICK, **FAST_FAILOVER)

    async def scenario():
        client = cluster.client()
        accepted, victim, (survivor,), orphans = await arm_limit_orders(client, cluster.workers)
        ids = [a["orderId"] for a in accepted]
        victim.kill()  # SIGKILL: its book is gone; its jobs stay pending in Redis

        async def survivor_took_them():
            log = survivor.log_text()
            return all(took_over(log, i) for i in orphans)

        # Its heartbeat lapses (HEARTBEAT_TTL_SECONDS), then the survivor claims each of its jobs.
        await until(survivor_took_them, 30, "the other worker to take over the killed worker's jobs")
        await push_sol_up(client)
        results = await asyncio.gather(*(client.listen(a["links"]["ws"], timeout=60) for a in accepted))
        for order_id, (frames, _) in zip(ids, results):
            assert frames[-1]["status"] == "confirmed", frames
            assert [f["status"] for f in frames].count("routing") == 1
            if order_id in orphans:  # armed on the killed worker, fired on the other one
                (routing,) = [f for f in frames if f["status"] == "routing"]
                assert f"-{survivor.pid}-" in routing["meta"]["worker"], routing
            code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
            assert executed(swaps) == confirmed_swaps(frames[-1]), "fired once: one swap per leg"
        client.close()

    asyncio.run(scenario())


def test_a_worker_that_stalled_does_not_take_back_the_armed_orders_taken_from_it(make_cluster):
    # Its book keeps the orders it armed (no refresh in the test's time), so when it wakes and
    # the price crosses, both books fire them: only the worker that took them over may run them.
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant", TRIGGER_REFRESH_SECONDS=600, **SLOW_TICK,
                           **FAST_FAILOVER)

    async def scenario():
        client = cluster.client()
        accepted, stalled, (survivor,), taken = await arm_limit_orders(client, cluster.workers)
        ids = [a["orderId"] for a in accepted]
        os.kill(stalled.pid, signal.SIGSTOP)  # a stall: its heartbeat lapses, its book keeps its orders
        try:
            async def survivor_took_them():
                return all(took_over(survivor.log_text(), i) for i in taken)

            await until(survivor_took_them, 30, "the other worker to take over the stalled worker's armed orders")
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        await push_sol_up(client)  # both books see the crossing
        results = await asyncio.gather(*(client.listen(a["links"]["ws"], timeout=60) for a in accepted))
        for order_id, (frames, _) in zip(ids, results):
            assert frames[-1]["status"] == "confirmed", frames
            routings = [f for f in frames if f["status"] == "routing"]
            assert len(routings) == 1, routings
            if order_id in taken:
                assert f"-{survivor.pid}-" in routings[0]["meta"]["worker"], routings
            code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
            assert executed(swaps) == confirmed_swaps(frames[-1]), "fired once: one swap per leg"

        async def stalled_dropped_them():  # its book fired them too, and its claims were refused
            log = stalled.log_text()
            return all(f"armed order {i} was taken over by another worker; dropped" in log for i in taken)

        await until(stalled_dropped_them, 10, "the stalled worker to drop the orders it fired")
        log = stalled.log_text()  # and it never ran one: no attempt of its own, nothing it was fenced out of
        acted = [i for i in taken if f"order {i} attempt" in log or f"order {i} was taken over by another worker; "
                 "this one stops acting" in log]
        assert not acted, log[-3000:]
        client.close()

    asyncio.run(scenario())


def test_a_large_order_is_split_and_confirms_with_a_fill_and_a_swap_per_leg(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        code, quote = await client.request("GET", "/api/quote?tokenIn=SOL&tokenOut=USDC&amount=3000")
        assert code == 200 and len(quote["route"]["legs"]) == 2, quote
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="3000", slippageBps=1000)
        assert code == 202
        frames, _ = await client.listen(accepted["links"]["ws"], timeout=30)
        assert [f["status"] for f in frames] == ["pending", "routing", "building", "submitted", "confirmed"]
        routing, submitted, confirmed = frames[1]["meta"], frames[3]["meta"], frames[4]["meta"]
        assert {leg["dex"] for leg in routing["route"]["legs"]} == {"raydium", "meteora"}
        assert [leg["txHash"] for leg in confirmed["legs"]] == [leg["txHash"] for leg in submitted["legs"]]
        assert sum(Decimal(leg["amountIn"]) for leg in confirmed["legs"]) == Decimal("3000")
        assert sum(Decimal(leg["amountOut"]) for leg in confirmed["legs"]) == Decimal(confirmed["amountOut"])
        code, order = await client.order(accepted["orderId"])
        assert len(order["fills"]) == 2
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}")
        assert sorted(s["txHash"] for s in swaps["swaps"]) == sorted(f["txHash"] for f in order["fills"])
        client.close()

    asyncio.run(scenario())
