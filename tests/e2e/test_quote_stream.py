"""Streamed quotes end to end: a real `engine worker` lands an order's swap, announces the moved
pools on Redis, and the real `engine web` pushes the new quote to a subscriber."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.e2e.cluster import until

pytestmark = pytest.mark.e2e


def test_a_swap_by_an_order_moves_the_pool_and_a_quote_subscriber_receives_the_new_quote(make_cluster):
    # No refresh within the test: after the first quote, a frame comes only from a pools notice.
    cluster = make_cluster(webs=1, workers=1, VENUE_PROFILE="instant", QUOTE_STREAM_INTERVAL_MS=30,
                           QUOTE_STREAM_REFRESH_MS=600000)

    async def scenario():
        client = cluster.client()
        quotes = client.watch_quote("SOL", "USDC", "1.5").__aiter__()
        first = await asyncio.wait_for(quotes.__anext__(), 30)
        before = Decimal(first["route"]["amountOut"])
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="300", slippageBps=5000)
        assert code == 202, accepted
        moved = await asyncio.wait_for(quotes.__anext__(), 30)
        order = await until(lambda: _confirmed(client, accepted["orderId"]), 30, "the order to confirm")
        assert moved["type"] == "quote" and Decimal(moved["route"]["amountOut"]) < before  # SOL was sold
        assert order["status"] == "confirmed"
        await quotes.aclose()
        client.close()

    asyncio.run(scenario())


async def _confirmed(client, order_id: str):
    code, order = await client.order(order_id)
    return order if code == 200 and order["status"] == "confirmed" else None
