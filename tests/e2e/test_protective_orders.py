"""Protective orders end to end: real `engine web` and `engine worker` processes on Postgres
and Redis. A stop_loss waits in the trigger book and fires once the price falls to its stop."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.e2e.cluster import TERMINAL, until
from tests.e2e.guarantees import confirmed_swaps, executed
from tests.e2e.test_order_types import ABOVE_DRIFT, PUSH, best_price, push_sol_up, status

pytestmark = pytest.mark.e2e


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


def test_a_stop_loss_waits_above_its_stop_and_sells_once_when_the_price_falls_to_it(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant")

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


def test_a_take_profit_waits_below_its_target_and_sells_once_when_the_price_rises_to_it(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant")

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
