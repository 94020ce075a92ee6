"""Orders that change hands: a worker frozen past its heartbeat while its swaps are in
flight (fencing), and a job deleted from the queue (the periodic reconciler). Real `engine
web` and `engine worker` processes on Postgres and Redis, driven over HTTP and WebSocket."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.e2e.cluster import TERMINAL, assert_complete_lifecycle, until
from tests.e2e.guarantees import executed
from tests.e2e.load import SOL_USDC

pytestmark = pytest.mark.e2e

async def one_swap_each(client, order_ids):
    """Every order terminal; a confirmed one by exactly one swap per leg on the chain (a split
    order has two), those its fills name."""
    for order_id in order_ids:
        code, order = await client.order(order_id)
        assert code == 200 and order["status"] in TERMINAL, order
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == sorted(f["txHash"] for f in order["fills"]), (order, swaps)
        assert order["status"] != "confirmed" or len(swaps["swaps"]) == len(order["fills"]) >= 1


def test_a_worker_frozen_past_its_heartbeat_cannot_act_for_the_orders_taken_from_it(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=4)

    async def scenario():
        client = cluster.client()
        accepted = [(await client.submit(**SOL_USDC))[1] for _ in range(6)]
        ids = [a["orderId"] for a in accepted]
        listeners = [asyncio.ensure_future(client.listen(a["links"]["ws"], timeout=120)) for a in accepted]

        async def a_swap_in_flight():
            for order_id in ids:
                _, order = await client.order(order_id)
                if order["status"] == "submitted":
                    return order["events"][1]["meta"]["worker"]
            return None

        worker_id = await until(a_swap_in_flight, 30, "a swap in flight")
        frozen = next(w for w in cluster.workers if f"-{w.pid}-" in worker_id)
        os.kill(frozen.pid, signal.SIGSTOP)  # a stall: its heartbeat lapses, its swaps wait in its timers
        try:
            async def all_terminal():
                statuses = [(await client.order(i))[1]["status"] for i in ids]
                return all(status in TERMINAL for status in statuses)

            await until(all_terminal, 90, "the other worker to finish every order")
        finally:
            os.kill(frozen.pid, signal.SIGCONT)  # it wakes up and tries to go on where it was
        await asyncio.sleep(5)  # time for its swaps to reach the chain and its events to be refused
        await one_swap_each(client, ids)
        for frames, close_code in await asyncio.gather(*listeners):
            assert close_code == 1000
            assert_complete_lifecycle(frames, final=frames[-1]["status"])
        client.close()
        return frozen

    frozen = asyncio.run(scenario())
    # Its events were refused (fenced out): it stopped acting for the orders it had lost.
    assert "taken over by another worker" in frozen.log_text(), frozen.log_text()[-3000:]


def test_a_job_deleted_from_the_queue_is_queued_again_and_runs_once(make_cluster, redis_url):
    import redis

    cluster = make_cluster(workers=1, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=1)

    async def scenario():
        client = cluster.client()
        accepted = [(await client.submit(**SOL_USDC))[1] for _ in range(4)]
        ids = [a["orderId"] for a in accepted]
        admin = redis.Redis.from_url(redis_url, decode_responses=True)
        entries = admin.xrange("engine:jobs")
        lost = next(entry_id for entry_id, fields in entries if fields["order_id"] == ids[-1])
        assert admin.xdel("engine:jobs", lost) == 1  # the last one was still waiting: gone
        admin.close()
        frames = await asyncio.gather(*(client.listen(a["links"]["ws"], timeout=90) for a in accepted))
        for stream, close_code in frames:
            assert_complete_lifecycle(stream)
        await one_swap_each(client, ids)
        client.close()

    asyncio.run(scenario())
    assert "queued again 1 unfinished orders" in cluster.workers[0].log_text()
