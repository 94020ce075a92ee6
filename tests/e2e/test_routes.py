"""Routes through an intermediate token, end to end: real `engine web` and `engine worker`
processes on Postgres and Redis. A pair without a pool of its own (BONK/JUP) routes through a
hub; the route is one transaction: a failed one lands no hop, a retried one lands every hop
once, and one whose reply was lost is found on the chain with its hops."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.e2e.cluster import TERMINAL
from tests.e2e.guarantees import transactions

pytestmark = pytest.mark.e2e

ROUTE = {"tokenIn": "BONK", "tokenOut": "JUP", "amount": "1000000"}  # ~20 USD of BONK
MOST_ORDERS = 20  # each has a transient failure on a send with probability ~1/2 (below)


def hop_pairs(hops: list[dict]) -> list[tuple[str, str]]:
    return [(hop["tokenIn"], hop["tokenOut"]) for hop in hops]


def test_a_two_hop_route_lands_both_hops_or_neither_and_its_retry_lands_them_once(make_cluster):
    # Half of all sends fail transiently and a quarter time out (half of those land anyway):
    # orders run one at a time until one has had its route's transaction fail and retried.
    cluster = make_cluster(workers=1, VENUE_PROFILE="instant", VENUE_FAILURE_RATE="0.5", VENUE_TIMEOUT_RATE="0.25",
                           RETRY_ATTEMPTS="8", RETRY_MAX_DELAY_SECONDS="0.1")

    async def scenario():
        client = cluster.client()
        code, quote = await client.request("GET", "/api/quote?tokenIn=BONK&tokenOut=JUP&amount=1000000")
        assert code == 200, quote
        route = quote["route"]
        via = route["hops"][0]["tokenOut"]
        assert via in ("SOL", "USDC") and "legs" not in route
        assert hop_pairs(route["hops"]) == [("BONK", via), (via, "JUP")]
        assert route["hops"][1]["legs"][0]["amountIn"] and Decimal(route["minAmountOut"]) < Decimal(route["amountOut"])
        assert all(q["error"]["code"] == "no_pool" for q in quote["quotes"].values())  # no BONK/JUP pool

        retried = 0
        for _ in range(MOST_ORDERS):
            code, body = await client.submit(**ROUTE)
            assert code == 202, body
            frames, close_code = await client.listen(body["links"]["ws"])
            assert close_code == 1000 and frames[-1]["status"] in TERMINAL
            _, order = await client.order(body["orderId"])
            _, swaps = await client.request("GET", f"/api/sim/swaps?orderId={body['orderId']}")
            failed = [s["txHash"] for e in frames if e["status"] == "routing" for s in e["meta"].get("failedSwaps", ())]
            # A failed route transaction landed no hop.
            assert not set(failed) & set(transactions(swaps)), (failed, swaps)
            if order["status"] != "confirmed":
                assert swaps["swaps"] == [], order  # failed every attempt (rare): nothing landed
                continue
            (fill,) = order["fills"]  # one transaction for the whole route, landed once
            assert transactions(swaps) == [fill["txHash"]]
            assert {(s["tokenIn"], s["tokenOut"]) for s in swaps["swaps"]} == set(hop_pairs(fill["hops"]))
            assert len(hop_pairs(fill["hops"])) == 2 and fill["hops"][-1]["tokenOut"] == "JUP"
            last = sum(Decimal(leg["amountOut"]) for leg in fill["hops"][-1]["legs"])
            assert Decimal(fill["amountOut"]) == last == Decimal(frames[-1]["meta"]["amountOut"])
            assert frames[-1]["meta"]["hops"] == fill["hops"]
            routing = next(e for e in frames if e["status"] == "routing")
            assert routing["meta"]["hops"] == routing["meta"]["route"]["hops"] and routing["meta"]["bestDex"]
            retried += any(e["attempt"] > 1 for e in frames) and bool(failed)
            if retried:
                break
        assert retried, f"no route's transaction failed and was retried in {MOST_ORDERS} orders"
        client.close()

    asyncio.run(scenario())
