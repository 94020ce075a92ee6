"""Protective orders end to end: real `engine web` and `engine worker` processes on Postgres
and Redis. A stop_loss waits in the trigger book and fires once the price falls to its stop; a
stop-limit then waits for its floor; an oco executes one side only; a trailing stop follows a
rise and fires on the fall, and survives the SIGKILL of the worker that armed it."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.e2e.cluster import FAST_FAILOVER, SLOW_TICK, TERMINAL, took_over, until
from tests.e2e.guarantees import confirmed_swaps, executed
from tests.e2e.test_order_types import ABOVE_DRIFT, PUSH, best_price, push_sol_up, status

pytestmark = pytest.mark.e2e

# One cluster for the tests that kill nothing (each test reads the price at its start and sets
# its stops and targets from it; every order it makes has ended when it ends). Their pushes move
# the price 8-10% each and arbitrage takes minutes to undo them, so after a few tests the pools
# sit well away from the oracle's reference: without the price collar (which no test here is
# about) a push or a fired order is not refused for that.
SHARED = {"workers": 2, "VENUE_PROFILE": "instant", "PRICE_COLLAR_BPS": "0", **SLOW_TICK}


async def push_sol_down(client, by: Decimal = PUSH):
    """Sell SOL for USDC, in one order, enough to lower SOL's price by about `by` on both venues
    (the mirror of push_sol_up: on x·y=k pools the price goes with 1/SOL reserve squared)."""
    code, answer = await client.request("GET", "/api/sim/pools")
    assert code == 200, answer
    reserves = [Decimal(p["reserveA"] if p["tokenA"] == "SOL" else p["reserveB"])
                for p in answer["pools"] if {p["tokenA"], p["tokenB"]} == {"SOL", "USDC"}]
    sol = (sum(reserves) * (1 / (1 - by).sqrt() - 1)).quantize(Decimal("0.001"))
    code, body = await client.submit(tokenIn="SOL", tokenOut="USDC", amount=str(sol), slippageBps=5000)
    assert code == 202, body
    await until(lambda: _in(client, body["orderId"], TERMINAL), 30, "the push to confirm")


async def _in(client, order_id, wanted):
    return await status(client, order_id) in wanted


def test_a_stop_loss_waits_above_its_stop_and_sells_once_when_the_price_falls_to_it(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        stop = ((await best_price(client)) / ABOVE_DRIFT).quantize(Decimal("0.000001"))
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="stop_loss",
                                             stopPrice=str(stop), slippageBps=5000)
        assert code == 202, accepted
        listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=90))
        await until(lambda: _in(client, accepted["orderId"], ("waiting",)), 20, "the order to wait")
        await push_sol_down(client)
        frames, _ = await listener
        assert [f["status"] for f in frames] == ["pending", "waiting", "routing", "building", "submitted",
                                                 "confirmed"]
        waiting = frames[1]["meta"]
        assert waiting["trigger"] == "stop" and Decimal(waiting["price"]) > stop
        code, order = await client.order(accepted["orderId"])
        assert order["type"] == "stop_loss" and Decimal(order["stopPrice"]) == stop
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}")
        assert executed(swaps) == confirmed_swaps(frames[-1])  # once: one swap per leg
        code, bad = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="stop_loss")
        assert code == 400 and bad["error"]["field"] == "stopPrice", bad
        client.close()

    asyncio.run(scenario())


def test_a_take_profit_waits_below_its_target_and_sells_once_when_the_price_rises_to_it(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        target = ((await best_price(client)) * ABOVE_DRIFT).quantize(Decimal("0.000001"))
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="take_profit",
                                             targetPrice=str(target), slippageBps=5000)
        assert code == 202, accepted
        listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=90))
        await until(lambda: _in(client, accepted["orderId"], ("waiting",)), 20, "the order to wait")
        await push_sol_up(client)
        frames, _ = await listener
        assert [f["status"] for f in frames] == ["pending", "waiting", "routing", "building", "submitted",
                                                 "confirmed"]
        code, order = await client.order(accepted["orderId"])
        assert order["type"] == "take_profit" and Decimal(order["targetPrice"]) == target
        assert order["limitPrice"] is None
        assert Decimal(frames[-1]["meta"]["amountOut"]) >= target, "never below its target"
        assert Decimal(frames[3]["meta"]["minAmountOut"]) >= target, "the target is the floor, not 50% slippage"
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}")
        assert executed(swaps) == confirmed_swaps(frames[-1])  # once: one swap per leg
        client.close()

    asyncio.run(scenario())


def statuses(frames) -> list[str]:
    return [f["status"] for f in frames]


async def events(client, order_id) -> list[dict]:
    code, order = await client.order(order_id)
    assert code == 200, order
    return order["events"]


def test_an_oco_whose_two_sides_cross_at_once_executes_exactly_one_and_says_which(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        price = await best_price(client)
        # Its target below the price and its stop above it: both sides hold at its first look.
        take = {"targetPrice": str((price / ABOVE_DRIFT / ABOVE_DRIFT).quantize(Decimal("0.000001")))}
        stop = {"stopPrice": str((price * ABOVE_DRIFT * ABOVE_DRIFT).quantize(Decimal("0.000001")))}
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="oco",
                                             takeProfit=take, stopLoss=stop, slippageBps=5000)
        assert code == 202, accepted
        frames, _ = await client.listen(accepted["links"]["ws"], timeout=60)
        assert statuses(frames) == ["pending", "waiting", "routing", "building", "submitted", "confirmed"], frames
        fired = frames[1]["meta"]
        assert (fired["fired"], fired["cancelled"]) == ("stopLoss", "takeProfit"), fired
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}")
        assert len(executed(swaps)) == len(confirmed_swaps(frames[-1])) == 1, "one side, one swap"
        code, order = await client.order(accepted["orderId"])
        assert order["type"] == "oco" and order["limitPrice"] is None and "stopPrice" not in order
        assert Decimal(order["takeProfit"]["targetPrice"]) == Decimal(take["targetPrice"])
        assert Decimal(order["stopLoss"]["stopPrice"]) == Decimal(stop["stopPrice"])
        # An oco that waits fires the side the price reaches, and only it.
        take = {"targetPrice": str((price * ABOVE_DRIFT).quantize(Decimal("0.000001")))}
        stop = {"stopPrice": str((price / ABOVE_DRIFT / ABOVE_DRIFT).quantize(Decimal("0.000001")))}
        code, waiting = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="oco",
                                            takeProfit=take, stopLoss=stop, slippageBps=5000)
        listener = asyncio.ensure_future(client.listen(waiting["links"]["ws"], timeout=90))
        await until(lambda: _in(client, waiting["orderId"], ("waiting",)), 20, "the oco to wait")
        await push_sol_up(client)
        frames, _ = await listener
        assert statuses(frames) == ["pending", "waiting", "waiting", "routing", "building", "submitted",
                                    "confirmed"], frames
        assert frames[1]["meta"]["trigger"] == "oco" and "fired" not in frames[1]["meta"]
        assert (frames[2]["meta"]["fired"], frames[2]["meta"]["cancelled"]) == ("takeProfit", "stopLoss")
        assert Decimal(frames[-1]["meta"]["amountOut"]) >= Decimal(take["targetPrice"]), "never below its target"
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={waiting['orderId']}")
        assert executed(swaps) == confirmed_swaps(frames[-1])
        client.close()

    asyncio.run(scenario())


async def trail_up_then_down(client, start: Decimal, **trail) -> tuple[str, list, list]:
    """Submit a trailing stop selling 1 SOL, push SOL up until its events show the best price
    rising (a rise never fires it), then down; its id, its frames to the end, its waiting metas."""
    code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="trailing_stop",
                                         slippageBps=5000, **trail)
    assert code == 202, accepted
    order_id = accepted["orderId"]
    listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=120))
    await until(lambda: _in(client, order_id, ("waiting",)), 20, "the trailing stop to wait")
    await push_sol_up(client)

    async def trailed_up():
        return any(Decimal(e["meta"].get("highWater", 0)) > start * Decimal("1.04")
                   for e in await events(client, order_id))

    await until(trailed_up, 20, "its events to show the best price rising")
    assert await status(client, order_id) == "waiting", "a rise never fires it"
    await push_sol_down(client)
    frames, _ = await listener
    kinds = statuses(frames)
    assert kinds[0] == "pending" and kinds[-4:] == ["routing", "building", "submitted", "confirmed"], kinds
    return order_id, frames, [f["meta"] for f in frames if f["status"] == "waiting"]


def test_a_trailing_stop_trails_a_rise_and_fires_on_the_fall_with_the_trailed_price_in_its_events(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        start = await best_price(client)
        order_id, frames, waits = await trail_up_then_down(client, start, trailPercent="5")
        assert all(w["trigger"] == "trail" for w in waits), waits
        fired = waits[-1]
        assert fired["fired"] == "trailingStop" and Decimal(fired["highWater"]) > start * Decimal("1.04"), fired
        stop = Decimal(fired["stopPrice"])
        assert Decimal(fired["price"]) <= stop and abs(stop / Decimal(fired["highWater"]) - Decimal("0.95")) < Decimal(
            "1e-9"), fired
        assert len(waits) <= 2 + 1 + 30, "trail events are coalesced (one a second at most)"
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == confirmed_swaps(frames[-1])
        code, order = await client.order(order_id)
        assert order["trailPercent"] == "5" and order["type"] == "trailing_stop"
        client.close()

    asyncio.run(scenario())


def test_a_trailing_stop_by_amount_trails_a_rise_and_fires_once_on_the_fall_at_its_mark_less_the_amount(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        start = await best_price(client)
        amount = (start * Decimal("0.05")).quantize(Decimal("0.01"))  # about 5%: beyond the drift, within the pushes
        order_id, frames, waits = await trail_up_then_down(client, start, trailAmount=str(amount))
        assert all(w["trigger"] == "trail" and Decimal(w["trailAmount"]) == amount and "trailPercent" not in w
                   for w in waits), waits
        assert all(abs(Decimal(w["highWater"]) - amount - Decimal(w["stopPrice"])) < Decimal("1e-9") * start
                   for w in waits), "every stop is its mark less the amount"
        fired = waits[-1]
        assert [w.get("fired") for w in waits].count("trailingStop") == 1, waits
        assert fired["fired"] == "trailingStop" and Decimal(fired["highWater"]) > start * Decimal("1.04"), fired
        assert Decimal(fired["price"]) <= Decimal(fired["stopPrice"]), fired
        # Not before: every earlier event's price was above the stop its mark made.
        assert all(Decimal(w["price"]) > Decimal(w["stopPrice"]) for w in waits[:-1] if "price" in w), waits
        assert len(waits) <= 2 + 1 + 30, "trail events are coalesced (one a second at most)"
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == confirmed_swaps(frames[-1]) and len(executed(swaps)) >= 1, "it sold once"
        code, order = await client.order(order_id)
        assert Decimal(order["trailAmount"]) == amount and "trailPercent" not in order
        assert order["type"] == "trailing_stop" and order["status"] == "confirmed"
        client.close()

    asyncio.run(scenario())


def test_a_stop_limit_fires_at_its_stop_then_waits_for_its_floor_and_never_sells_below_it(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = cluster.client()
        price = await best_price(client)
        stop = (price / ABOVE_DRIFT).quantize(Decimal("0.000001"))
        floor = (stop * Decimal("0.995")).quantize(Decimal("0.000001"))
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="stop_loss",
                                             stopPrice=str(stop), limitPrice=str(floor), slippageBps=5000)
        assert code == 202, accepted
        order_id = accepted["orderId"]
        listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=120))
        await until(lambda: _in(client, order_id, ("waiting",)), 20, "the stop-limit to wait")
        await push_sol_down(client)  # through its stop and below its floor

        async def fired():
            return any(e["meta"].get("fired") for e in await events(client, order_id))

        await until(fired, 20, "its stop to fire")
        await push_sol_up(client, Decimal("0.1"))  # back above its floor
        frames, _ = await listener
        assert statuses(frames) == ["pending", "waiting", "waiting", "routing", "building", "submitted",
                                    "confirmed"], frames
        firing = frames[2]["meta"]
        assert firing["fired"] == "stopLoss" and Decimal(firing["price"]) < floor, "fired below its floor: it waited"
        assert Decimal(frames[-1]["meta"]["amountOut"]) >= floor, "never below its floor"
        code, order = await client.order(order_id)
        assert Decimal(order["limitPrice"]) == floor and Decimal(order["stopPrice"]) == stop
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == confirmed_swaps(frames[-1])
        code, bad = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="stop_loss",
                                        stopPrice=str(stop), limitPrice=str(stop * 2))
        assert code == 400 and bad["error"]["field"] == "limitPrice", bad
        client.close()

    asyncio.run(scenario())


def test_a_trailing_stop_survives_the_sigkill_of_its_worker_resumes_from_its_mark_and_fires_once(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant", **SLOW_TICK, **FAST_FAILOVER)

    async def scenario():
        client = cluster.client()
        start = await best_price(client)
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="trailing_stop",
                                             trailPercent="10", slippageBps=5000)
        assert code == 202, accepted
        order_id = accepted["orderId"]
        await until(lambda: _in(client, order_id, ("waiting",)), 20, "the trailing stop to wait")
        await push_sol_up(client)

        async def marked():
            marks = [Decimal(e["meta"]["highWater"]) for e in await events(client, order_id)
                     if "highWater" in e["meta"]]
            return max(marks) if marks and max(marks) > start * Decimal("1.04") else None

        await until(marked, 20, "its best price to be stored")
        # The price falls back a little (not to its stop): a worker starting from the price of the
        # moment would trail from there; from the stored mark, its stop stays where it was.
        await push_sol_down(client, Decimal("0.04"))
        mark = await marked()
        holder_name = (await events(client, order_id))[1]["meta"]["worker"]
        (victim,) = [w for w in cluster.workers if f"-{w.pid}-" in holder_name]
        (survivor,) = [w for w in cluster.workers if w is not victim]
        victim.kill()  # SIGKILL: its book and the mark it had not stored yet are gone
        await until(lambda: _async(took_over(survivor.log_text(), order_id)), 30, "the survivor to take it over")

        async def rearmed():
            return next((e["meta"] for e in await events(client, order_id) if e["status"] == "waiting"
                         and f"-{survivor.pid}-" in e["meta"].get("worker", "")), None)

        again = await until(rearmed, 30, "the survivor to arm it again")
        assert Decimal(again["highWater"]) == mark, f"not resumed from its stored mark {mark}: {again}"
        assert Decimal(again["price"]) < mark * Decimal("0.99"), again
        assert "fired" not in again
        listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=90))
        await push_sol_down(client, Decimal("0.12"))
        frames, _ = await listener
        assert frames[-1]["status"] == "confirmed" and statuses(frames).count("routing") == 1, frames
        (routing,) = [f for f in frames if f["status"] == "routing"]
        assert f"-{survivor.pid}-" in routing["meta"]["worker"]
        assert [f["meta"]["fired"] for f in frames if f["meta"].get("fired")] == ["trailingStop"], "fired once"
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == confirmed_swaps(frames[-1]), "fired once: one swap per leg"
        client.close()

    asyncio.run(scenario())


async def _async(value):
    return value
