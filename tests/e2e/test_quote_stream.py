"""Streamed quotes end to end: a real `engine worker` lands an order's swap, announces the moved
pools on Redis, and the real `engine web` pushes the new quote to a subscriber."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest

from bench.cluster import REPO
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

    # The command line watches the same stream: a JSON frame a line, until interrupted.
    env = {**os.environ, "ENGINE_URL": cluster.client().base}
    env.pop("ENGINE_API_KEY", None)
    watch = subprocess.Popen([sys.executable, "-m", "engine", "quote", "SOL", "USDC", "1.5", "--watch", "--json"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = json.loads(watch.stdout.readline())
        assert (line["type"], line["tokenIn"], line["amountIn"]) == ("quote", "SOL", "1.5"), line
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 130
    bad = subprocess.run([sys.executable, "-m", "engine", "quote", "SOL", "SOL", "1", "--watch"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "same_token" in bad.stderr, bad


async def _confirmed(client, order_id: str):
    code, order = await client.order(order_id)
    return order if code == 200 and order["status"] == "confirmed" else None
