"""Orders that change hands: a worker frozen past its heartbeat while its swaps are in
flight (fencing), and a job deleted from the queue (the periodic reconciler). Real `engine
web` and `engine worker` processes on Postgres and Redis, driven over HTTP and WebSocket."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest

from tests.e2e.cluster import FAST_FAILOVER, TERMINAL, assert_complete_lifecycle, until
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
    # Realistic venues at half their latency: swaps of 1-1.5 s, still in flight at the stall
    # and the takeover, which a 3 s heartbeat brings soon.
    cluster = make_cluster(workers=2, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=4, VENUE_LATENCY_SCALE="0.5",
                           **FAST_FAILOVER)

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
        held = []  # its unfinished orders, as stored when it stopped (it stores nothing while stopped)
        for order_id in ids:
            _, order = await client.order(order_id)
            routed = [e["meta"]["worker"] for e in order["events"] if e["status"] == "routing"]
            if order["status"] not in TERMINAL and routed and routed[-1] == worker_id:
                held.append(order_id)
        assert held, "the stalled worker held an order in flight"
        try:  # every order's stream ends with its terminal event (not a poll of six orders ten times a second)
            try:
                streams = await asyncio.wait_for(asyncio.gather(*listeners), 90)
            except asyncio.TimeoutError:
                raise AssertionError("the other worker did not finish every order within 90 s") from None
        finally:
            os.kill(frozen.pid, signal.SIGCONT)  # it wakes up and tries to go on where it was

        async def it_gave_them_up():
            # Each order it held: its swap (if sent) settled, then the events it tried to store
            # were refused, or the order had ended. Only then are all its swaps on the chain.
            log = frozen.log_text()
            return all(re.search(f"order {i} (was taken over by another worker|ended meanwhile)", log) for i in held)

        await until(it_gave_them_up, 60, "the stalled worker to give up the orders taken from it")
        await one_swap_each(client, ids)
        for frames, close_code in streams:
            assert close_code == 1000
            assert_complete_lifecycle(frames, final=frames[-1]["status"])
        client.close()
        return frozen

    frozen = asyncio.run(scenario())
    # Its events were refused (fenced out): it stopped acting for the orders it had lost.
    assert "taken over by another worker" in frozen.log_text(), frozen.log_text()[-3000:]


def test_a_job_deleted_from_the_queue_is_queued_again_and_runs_once(make_cluster, redis_url):
    import redis

    every, min_age = 2.0, 2.0
    # Swaps of 0.8-1.2 s: the three orders ahead keep the last one waiting in the queue for a while.
    cluster = make_cluster(workers=1, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=1, VENUE_LATENCY_SCALE="0.4",
                           RECONCILE_EVERY_SECONDS=every, RECONCILE_MIN_AGE_SECONDS=min_age)
    worker = cluster.workers[0]

    async def scenario():
        client = cluster.client()
        admin = redis.Redis.from_url(redis_url, decode_responses=True)

        async def epoch_made():  # else its first reconciliation, for older orders, could be the one
            return admin.exists("engine:epoch")

        await until(epoch_made, 30, "the worker to make the bus's epoch")
        accepted = [(await client.submit(**SOL_USDC))[1] for _ in range(4)]
        ids = [a["orderId"] for a in accepted]
        entries = admin.xrange("engine:jobs")
        lost = next(entry_id for entry_id, fields in entries if fields["order_id"] == ids[-1])
        assert admin.xdel("engine:jobs", lost) == 1  # the last one was still waiting: gone
        deleted_at = time.monotonic()
        admin.close()
        listeners = [asyncio.ensure_future(client.listen(a["links"]["ws"], timeout=60)) for a in accepted]

        async def queued_again():
            return "queued again 1 unfinished orders" in worker.log_text()

        # The README's promise: queued again within about RECONCILE_EVERY + MIN_AGE (it was
        # created before its job was lost); two seconds more for a loaded machine.
        await until(queued_again, every + min_age + 10, "the lost order to be queued again", pause=0.05)
        waited = time.monotonic() - deleted_at
        assert waited <= every + min_age + 2, f"queued again {waited:.1f}s after its job was lost"
        for stream, close_code in await asyncio.gather(*listeners):
            assert_complete_lifecycle(stream)
        await one_swap_each(client, ids)
        client.close()

    asyncio.run(scenario())
    assert "queued again 1 unfinished orders" in worker.log_text()
