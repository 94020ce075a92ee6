"""End to end on the production topology: real `engine web` and `engine worker` processes on
Postgres and Redis, driven over HTTP and WebSocket like a client would."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

import pytest

from tests.e2e.cluster import FAST_FAILOVER, TERMINAL, assert_complete_lifecycle, took_over, until
from tests.e2e.guarantees import confirmed_swaps, executed

pytestmark = pytest.mark.e2e

SOL_USDC = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.5"}
# One cluster for the two tests that only follow their own order's events (they stop nothing).
SHARED = {"webs": 2, "workers": 2, "VENUE_PROFILE": "instant"}


def ts(event) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")


async def submit_and_listen(client, body):
    code, accepted = await client.submit(**body)
    assert code == 202, accepted
    frames, close_code = await client.listen(accepted["links"]["ws"])
    return accepted["orderId"], frames, close_code


def test_twenty_orders_at_once_all_confirm_with_complete_ordered_lifecycles(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=5)

    async def scenario():
        client = cluster.client()
        results = await asyncio.gather(*(submit_and_listen(client, SOL_USDC) for _ in range(20)))
        stored = {}
        for order_id, frames, close_code in results:
            assert close_code == 1000
            assert_complete_lifecycle(frames)
            code, order = await client.order(order_id)
            assert code == 200 and order["status"] == "confirmed"
            assert order["events"] == frames  # the stored history is exactly what was streamed
            stored[order_id] = order
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={results[0][0]}")
        assert code == 200 and executed(swaps) == sorted(f["txHash"] for f in stored[results[0][0]]["fills"])
        client.close()
        return stored

    orders = asyncio.run(scenario())
    workers_used = {o["events"][1]["meta"]["worker"] for o in orders.values()}
    assert len(workers_used) == 2, "both workers took orders"
    # In flight (routing .. terminal) per worker never exceeds WORKER_CONCURRENCY,
    # read from the stored event times.
    for worker in workers_used:
        points = []
        for o in orders.values():
            if o["events"][1]["meta"]["worker"] == worker:
                points += [(ts(o["events"][1]), 1), (ts(o["events"][-1]), -1)]
        level = peak = 0
        for _, delta in sorted(points):
            level += delta
            peak = max(peak, level)
        assert 1 < peak <= 5
    # Each worker quoted orders at once, not one after another: several quotes (routing ..
    # building) in the air together. That the first ten all overlap, and by how much, is a
    # figure of the drain bench (bench/scenarios.py: quotesInFlightPeak, firstQuotesOverlapMs);
    # the proof by order, on held venues, is in tests/unit/test_order_actors.py.
    for worker in workers_used:
        points = []
        for o in orders.values():
            if o["events"][1]["meta"]["worker"] == worker:
                points += [(ts(o["events"][1]), 1), (ts(o["events"][2]), -1)]
        level = peak = 0
        for _, delta in sorted(points):  # at equal times an end (-1) comes before a start
            level += delta
            peak = max(peak, level)
        assert 1 < peak <= 5, f"{worker}: at most {peak} quotes in the air at once"


def test_late_and_multiple_listeners_on_any_web_process_get_every_event(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client, other = cluster.client(0), cluster.client(1)
        code, accepted = await client.submit(**SOL_USDC)
        assert code == 202 and accepted["status"] == "pending"
        ws = accepted["links"]["ws"]
        first, second = await asyncio.gather(client.listen(ws), other.listen(ws))
        assert first == second and first[1] == 1000  # the other web process saw every event too
        assert_complete_lifecycle(first[0])
        late, close_code = await other.listen(ws)  # after it finished
        assert late == first[0] and close_code == 1000
        resumed, _ = await client.listen(ws + "&after=3")
        assert [e["seq"] for e in resumed] == [4, 5]
        client.close()
        other.close()

    asyncio.run(scenario())


def test_submit_over_websocket_streams_the_order_on_the_same_connection(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        import json

        from tornado.websocket import websocket_connect

        conn = await websocket_connect(cluster.client().ws_base + "/api/orders/execute")
        await conn.write_message(json.dumps({**SOL_USDC, "tokenOut": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"}))
        frames = []
        while (msg := await asyncio.wait_for(conn.read_message(), 30)) is not None:
            frames.append(json.loads(msg))
        assert frames[0]["type"] == "accepted"
        assert_complete_lifecycle(frames[1:])
        assert all(f["orderId"] == frames[0]["orderId"] for f in frames)

    asyncio.run(scenario())


def test_with_every_swap_failing_retries_are_events_and_orders_fail_after_three_attempts(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant", VENUE_FAILURE_RATE="1", RETRY_ATTEMPTS="3")

    async def scenario():
        client = cluster.client()
        results = await asyncio.gather(*(submit_and_listen(client, SOL_USDC) for _ in range(4)))
        for order_id, frames, close_code in results:
            assert_complete_lifecycle(frames, final="failed")
            routings = [f for f in frames if f["status"] == "routing"]
            assert [r["attempt"] for r in routings] == [1, 2, 3]
            assert all("retryReason" in r["meta"] for r in routings[1:])
            assert frames[-1]["meta"]["attempts"] == 3
            code, order = await client.order(order_id)
            assert order["status"] == "failed" and order["attempts"] == 3
            assert order["error"]["code"] and order["error"]["message"]
            code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
            assert swaps["swaps"] == []  # nothing executed
        client.close()

    asyncio.run(scenario())


def test_a_killed_worker_loses_no_order_and_executes_none_twice(make_cluster):
    # Realistic venues at half their latency (swaps of 1-1.5 s), a 3 s heartbeat.
    cluster = make_cluster(workers=2, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=10, VENUE_LATENCY_SCALE="0.5",
                           **FAST_FAILOVER)
    victim, survivor = cluster.workers

    async def scenario():
        client = cluster.client()
        accepted = []
        for _ in range(12):
            code, body = await client.submit(**SOL_USDC)
            assert code == 202
            accepted.append(body)
        ids = [a["orderId"] for a in accepted]

        async def held_by_victim():
            """The victim's unfinished orders, once one of them has its swap in flight."""
            held, mid_swap = [], False
            for order_id in ids:
                _, order = await client.order(order_id)
                routed = [e["meta"]["worker"] for e in order["events"] if e["status"] == "routing"]
                if order["status"] not in TERMINAL and routed and f"-{victim.pid}-" in routed[-1]:
                    held.append(order_id)
                    mid_swap = mid_swap or order["status"] == "submitted"
            return held if mid_swap else None

        await until(held_by_victim, 30, "the first worker to have a swap in flight")
        victim.kill()
        orphans = await held_by_victim()  # read after the kill: what it held when it died
        assert orphans, "the killed worker held orders mid-swap"
        results = await asyncio.gather(*(client.listen(a["links"]["ws"], timeout=90) for a in accepted))
        log = survivor.log_text()
        assert all(took_over(log, i) for i in orphans), f"the other worker took over {orphans}:\n{log[-3000:]}"
        for body, (frames, _) in zip(accepted, results):
            assert frames[-1]["status"] in TERMINAL
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
            code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={body['orderId']}")
            confirmed = [f for f in frames if f["status"] == "confirmed"]
            assert len(confirmed) <= 1, frames
            # Once, one swap per leg (a split order has two), exactly those its confirmation names.
            assert executed(swaps) == (confirmed_swaps(confirmed[0]) if confirmed else []), (frames, swaps)
        client.close()
        return results

    results = asyncio.run(scenario())
    assert all(frames[-1]["status"] == "confirmed" for frames, _ in results)


def test_redis_losing_its_data_loses_no_order(make_cluster, redis_url):
    """FLUSHDB is what a Redis restart without persistence does to the queue: jobs gone."""
    import redis

    # The epoch is checked every fifth of RECONCILE_EVERY_SECONDS (0.4 s) and the lost jobs queued
    # again three heartbeats (0.9 s) after a new one; MIN_AGE stays 10 s so that the periodic
    # reconciliation leaves these young orders to the epoch's. Swaps take 1-1.5 s.
    cluster = make_cluster(workers=1, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=2, VENUE_LATENCY_SCALE="0.5",
                           RECONCILE_EVERY_SECONDS=2, HEARTBEAT_TTL_SECONDS=3)
    admin = redis.Redis.from_url(redis_url)
    # The web can be ready before the worker has made the bus's first epoch (it binds its port
    # first); orders older than that epoch would be re-queued by the first reconciliation,
    # and the count below would be split over two log lines.
    deadline = time.monotonic() + 30
    while not admin.exists("engine:epoch") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert admin.exists("engine:epoch"), "the worker made no epoch within 30 s"

    async def scenario():
        client = cluster.client()
        accepted = []
        for _ in range(8):
            code, body = await client.submit(**SOL_USDC)
            assert code == 202
            accepted.append(body)
        admin.flushdb()  # two orders are in flight, six were waiting in the stream
        admin.set("engine-test-lease", "flushed-by-the-test", ex=900)
        results = await asyncio.gather(*(client.listen(a["links"]["ws"], timeout=90) for a in accepted))
        for body, (frames, _) in zip(accepted, results):
            assert_complete_lifecycle(frames)
            code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={body['orderId']}")
            assert executed(swaps) == confirmed_swaps(frames[-1])  # once: one swap per leg
        client.close()

    asyncio.run(scenario())
    # Six were waiting; orders fetched but not yet claimed at the flush are queued again too
    # (their duplicate jobs are dropped by the claim), so the count may be a little higher.
    requeued = re.search(r"queued again (\d+) unfinished orders", cluster.workers[0].log_text())
    assert requeued and 6 <= int(requeued.group(1)) <= 8
