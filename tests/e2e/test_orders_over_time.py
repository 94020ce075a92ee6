"""Orders over time (twap, dca) end to end: real `engine web` and `engine worker` processes on
Postgres and Redis. A parent schedules child orders; each child is a full order, executed once."""
from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal

import pytest

from tests.e2e.cluster import FAST_FAILOVER, TERMINAL, Client, took_over, until
from tests.e2e.guarantees import confirmed_swaps, executed
from tests.e2e.test_order_types import best_price

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = "twap-key-a-000000-000000000000000", "twap-key-b-111111-111111111111111"
KEY_C, KEY_D = "twap-key-c-222222-222222222222222", "twap-key-d-333333-333333333333333"
# One cluster for the tests that kill and stall nothing, each with keys of its own: it sees,
# and asserts on, its own orders only.
# Schedules run for seconds: their parents (each read with all its children) are polled twice
# a second, not ten times.
SLOW_POLL = 0.5
SHARED = {"workers": 2, "VENUE_PROFILE": "instant", "API_KEYS": f"{KEY_A},{KEY_B},{KEY_C},{KEY_D}"}


async def children(client, parent_id: str) -> list[dict]:
    code, parent = await client.order(parent_id)
    assert code == 200, parent
    return parent["children"]


async def _terminal(client, order_id: str):
    code, order = await client.order(order_id)
    return order if order["status"] in TERMINAL else None


async def assert_each_child_executed_once(client, parent: dict) -> None:
    """Every child confirmed, its swaps on the chain exactly those of its confirmation."""
    for child in parent["children"]:
        code, order = await client.order(child["orderId"])
        assert order["status"] == "confirmed", order
        assert order["parentId"] == parent["orderId"]
        code, swaps = await client.request("GET", f"/api/sim/swaps?orderId={child['orderId']}")
        assert executed(swaps) == confirmed_swaps(order["events"][-1]), "executed once"


def test_a_twap_of_five_children_survives_its_worker_killed_mid_schedule(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant", **FAST_FAILOVER)

    async def scenario():
        client = cluster.client()
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="twap",
                                             durationSeconds=10, slices=5, slippageBps=5000)
        assert code == 202, accepted
        parent_id = accepted["orderId"]
        listener = asyncio.ensure_future(client.listen(accepted["links"]["ws"], timeout=120))
        await until(lambda: _has_children(client, parent_id, 2), 30, "two children", pause=SLOW_POLL)
        holder, survivor = _holder_and_survivor(cluster, parent_id)
        holder.kill()  # SIGKILL mid-schedule: its parent's job stays pending in Redis
        parent = await until(lambda: _terminal(client, parent_id), 90, "the parent to end", pause=SLOW_POLL)
        assert took_over(survivor.log_text(), parent_id), "the survivor resumed the schedule"
        assert parent["status"] == "completed", parent
        kids = parent["children"]
        assert sorted(k["sliceIndex"] for k in kids) == [0, 1, 2, 3, 4], kids
        assert sum(Decimal(k["amount"]) for k in kids) == Decimal(1)
        await assert_each_child_executed_once(client, parent)
        assert parent["progress"]["filled"] == "1" and parent["progress"]["remaining"] == "0"
        assert Decimal(parent["progress"]["averagePrice"]) > 0
        frames, close = await listener
        assert close == 1000 and [f["status"] for f in frames][:2] == ["pending", "scheduled"]
        assert frames[-1]["status"] == "completed" and frames[-1]["meta"]["progress"]["settled"] == 5
        code, page = await client.request("GET", "/api/orders?type=twap")
        assert [o["orderId"] for o in page["orders"]] == [parent_id]
        client.close()

    asyncio.run(scenario())


def test_a_worker_that_stalled_mid_twap_wakes_without_creating_a_slice_twice(make_cluster):
    cluster = make_cluster(workers=2, VENUE_PROFILE="instant", **FAST_FAILOVER)

    async def scenario():
        client = cluster.client()
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="twap",
                                             durationSeconds=8, slices=4, slippageBps=5000)
        parent_id = accepted["orderId"]
        await until(lambda: _has_children(client, parent_id, 1), 30, "the first child")
        stalled, survivor = _holder_and_survivor(cluster, parent_id)
        os.kill(stalled.pid, signal.SIGSTOP)  # its heartbeat lapses; its book still holds the parent
        try:
            await until(lambda: _async(took_over(survivor.log_text(), parent_id)), 30, "the takeover")
        finally:
            os.kill(stalled.pid, signal.SIGCONT)  # it wakes, ticks, finds the parent claimed again
        parent = await until(lambda: _terminal(client, parent_id), 60, "the parent to end", pause=SLOW_POLL)
        assert parent["status"] == "completed", parent
        assert sorted(k["sliceIndex"] for k in parent["children"]) == [0, 1, 2, 3]
        await assert_each_child_executed_once(client, parent)
        client.close()

    asyncio.run(scenario())


def _holder_and_survivor(cluster, parent_id):
    """The worker whose schedule book adopted the parent, and the other one."""
    holder = next(w for w in cluster.workers if f"parent {parent_id} adopted" in w.log_text())
    (survivor,) = [w for w in cluster.workers if w is not holder]
    return holder, survivor


async def _async(value):
    return value


async def _has_children(client, parent_id: str, n: int) -> bool:
    return len(await children(client, parent_id)) >= n


def test_cancelling_a_twap_cancels_its_waiting_child_and_creates_no_more(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = Client(cluster.webs[0][1], api_key=KEY_C)
        out_of_reach = ((await best_price(client)) * 2).quantize(Decimal("0.01"))
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="twap",
                                             durationSeconds=120, slices=2, limitPrice=str(out_of_reach))
        assert code == 202, accepted
        parent_id = accepted["orderId"]
        await until(lambda: _child_waiting(client, parent_id), 30, "the first child to wait for its limit")
        code, cancelled = await client.request("POST", f"/api/orders/{parent_id}/cancel")
        assert code == 200 and cancelled["status"] == "cancelled", cancelled
        (child,) = await children(client, parent_id)
        code, child = await client.order(child["orderId"])
        assert child["status"] == "cancelled" and child["type"] == "limit", child
        assert child["expiresInSeconds"] == 60, "a child with a limit waits until the next slice"
        code, again = await client.request("POST", f"/api/orders/{parent_id}/cancel")
        assert code == 200 and again["status"] == "cancelled"
        client.close()

    asyncio.run(scenario())


async def _child_waiting(client, parent_id: str) -> bool:
    kids = await children(client, parent_id)
    return bool(kids) and kids[0]["status"] == "waiting"


def test_a_dca_pauses_and_resumes_for_its_owner_only(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        port = cluster.webs[0][1]
        mine, theirs = Client(port, api_key=KEY_A), Client(port, api_key=KEY_B)
        code, accepted = await mine.submit(tokenIn="USDC", tokenOut="SOL", amount="5", type="dca",
                                           intervalSeconds=1, count=3, slippageBps=5000)
        assert code == 202, accepted
        parent_id = accepted["orderId"]
        code, paused = await mine.request("POST", f"/api/orders/{parent_id}/pause")
        assert code == 200 and paused["paused"] is True, paused
        for action in ("pause", "resume", "cancel"):  # another key's order is not found, and untouched
            code, refused = await theirs.request("POST", f"/api/orders/{parent_id}/{action}")
            assert code == 404 and refused["error"]["code"] == "not_found", refused
        code, order = await mine.order(parent_id)
        assert order["paused"] is True and order["status"] != "cancelled"
        created = len(order["children"])
        assert created <= 1, "paused before its second slice was due"
        # Paused: no child for three intervals (a negative can only be watched for a while).
        for _ in range(30):
            assert len(await children(mine, parent_id)) == created
            await asyncio.sleep(0.1)
        code, resumed = await mine.request("POST", f"/api/orders/{parent_id}/resume")
        assert code == 200 and resumed["paused"] is False, resumed
        parent = await until(lambda: _terminal(mine, parent_id), 60, "the dca to end", pause=SLOW_POLL)
        assert parent["status"] == "completed", parent
        assert [k["sliceIndex"] for k in parent["children"]] == [0, 1, 2]
        assert all(Decimal(k["amount"]) == 5 for k in parent["children"])
        await assert_each_child_executed_once(mine, parent)
        phases = [e["meta"].get("phase") for e in parent["events"]]
        assert "paused" in phases and "resumed" in phases, phases
        code, twap = await mine.submit(tokenIn="SOL", tokenOut="USDC", amount="1", type="twap",
                                       durationSeconds=1, slices=1)
        code, refused = await mine.request("POST", f"/api/orders/{twap['orderId']}/pause")
        assert code == 409 and refused["error"]["code"] == "conflict", refused
        mine.close()
        theirs.close()

    asyncio.run(scenario())


def test_bad_schedules_are_refused_and_nothing_is_stored(shared_cluster):
    cluster = shared_cluster(**SHARED)

    async def scenario():
        client = Client(cluster.webs[0][1], api_key=KEY_D)  # a key of its own: its list starts empty
        base = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}
        cases = [({"type": "twap", "slices": 5}, "missing_field", "durationSeconds"),
                 ({"type": "twap", "durationSeconds": 5, "slices": 0}, "invalid_field", "slices"),
                 ({"type": "dca", "intervalSeconds": 5}, "missing_field", "count"),
                 ({"type": "market", "count": 2}, "invalid_field", "count"),
                 ({"type": "dca", "intervalSeconds": 5, "count": 2, "slices": 2}, "invalid_field", "slices"),
                 ({"type": "twap", "durationSeconds": 5, "slices": 2, "expiresInSeconds": 5}, "invalid_field",
                  "expiresInSeconds"),
                 ({"type": "twap", "durationSeconds": 5, "slices": 3, "amount": "0.000000002"}, "invalid_amount",
                  "amount")]
        for extra, code_wanted, field in cases:
            code, answer = await client.request("POST", "/api/orders/execute", {**base, **extra})
            assert code == 400 and answer["error"]["code"] == code_wanted, (extra, answer)
            assert answer["error"]["field"] == field, (extra, answer)
        code, page = await client.request("GET", "/api/orders")
        assert page["orders"] == []
        client.close()

    asyncio.run(scenario())
