"""The kill switch end to end: real `engine web` and `engine worker` processes on Postgres and
Redis. A halt made on one web process refuses submits on another, holds an armed limit order
whose price crosses and a queued market order (through a SIGKILL of its worker), and each
executes exactly once after the resume.

HALT_REFRESH_SECONDS is long here (60 s): every process must learn of a halt from the bus's
control message, not from its periodic reload. The tests wait on what the processes log when
their view of the halts changes, and on stored state, never on a fixed sleep."""
from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import pytest

from tests.e2e.cluster import FAST_FAILOVER, SLOW_TICK, Client, took_over, until
from tests.e2e.guarantees import confirmed_swaps, executed
from tests.e2e.test_order_types import ABOVE_DRIFT, best_price, push_sol_up
from web.access import owner_id

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = "halt-key-a-0123456789-0123456789abc", "halt-key-b-9876543210-9876543210abc"
OPERATOR = "halt-operator-0123456789-abcdefghijkl"
SECRET = "halt-key-id-secret-0123456789-abcdef"
ENV = {"API_KEYS": f"{KEY_A},{KEY_B}", "ADMIN_KEYS": OPERATOR, "KEY_ID_SECRET": SECRET,
       "KEY_RATE_LIMIT": "100000", "VENUE_PROFILE": "instant", "HALT_REFRESH_SECONDS": "60",
       "MARKET_MAX_WAIT_SECONDS": "300", **SLOW_TICK}
KEY_A_ID = owner_id(KEY_A, SECRET.encode())


def halted_now(process) -> str:
    """What the process's view of the halts is now, by its last log line about them ('' before any)."""
    lines = re.findall(r"halts: now halted: (.*)", process.log_text())
    return lines[-1] if lines else ""


async def views(processes, wanted: str, timeout: float = 10):
    """Wait until every process's view of the halts starts with `wanted`."""
    await until(lambda: _all_see(processes, wanted), timeout, f"every process to see: {wanted}")


async def _all_see(processes, wanted):
    return all(halted_now(p).startswith(wanted) for p in processes)


async def operator(client: Client, action: str, status: int, **body) -> dict:
    code, answer = await client.request("POST", f"/api/admin/{action}", body)
    assert code == status, answer
    return answer


async def order_status(client, order_id):
    return (await client.order(order_id))[1]["status"]


def test_a_halt_on_one_web_refuses_submits_on_another_and_an_armed_limit_order_fires_once_after_resume(
        make_cluster):
    cluster = make_cluster(webs=2, workers=2, **ENV)
    web0, web1 = (proc for proc, _ in cluster.webs)

    async def scenario():
        port0, port1 = cluster.webs[0][1], cluster.webs[1][1]
        op, a0, a1, b1 = Client(port0, OPERATOR), Client(port0, KEY_A), Client(port1, KEY_A), Client(port1, KEY_B)
        limit = str(((await best_price(a0)) * ABOVE_DRIFT).quantize(Decimal("0.000001")))
        code, armed = await a0.submit(tokenIn="SOL", tokenOut="USDC", amount="0.5", type="limit",
                                      limitPrice=limit, slippageBps=5000)
        assert code == 202, armed
        order_id = armed["orderId"]
        await until(lambda: _is(a0, order_id, "waiting"), 30, "the limit order to be armed")

        # Halt everything on web 0: web 1 refuses at once, with the reason, and stores nothing.
        await operator(op, "halt", 201, scope="all", reason="incident 42")
        await views([web1, *cluster.workers], "all trading")
        for client in (a1, b1):
            code, answer = await client.submit(tokenIn="USDC", tokenOut="SOL", amount="5")
            assert (code, answer["error"]["code"], answer["error"]["reason"]) == (503, "trading_halted",
                                                                                  "incident 42"), answer

        # Keep key A halted, let everyone else trade again, and push the price across A's limit.
        await operator(op, "halt", 201, scope="key", keyId=KEY_A_ID, reason="key A under review")
        await operator(op, "resume", 200, scope="all")
        await views([web0, web1, *cluster.workers], "trading of key")
        await push_sol_up(b1)
        await until(lambda: _logged([*cluster.workers], f"order {order_id} fired during a halt"), 30,
                    "the crossed order to be held")
        assert await order_status(a0, order_id) == "waiting"
        code, swaps = await a0.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert swaps == {"swaps": []}, "nothing executed while halted"

        listener = asyncio.ensure_future(a0.listen(armed["links"]["ws"], timeout=60))
        await operator(op, "resume", 200, scope="key", keyId=KEY_A_ID)
        frames, _ = await listener
        assert [f["status"] for f in frames] == ["pending", "waiting", "routing", "building", "submitted",
                                                 "confirmed"]
        code, swaps = await a0.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == confirmed_swaps(frames[-1]), "fired once: one swap per leg"
        code, halts = await op.request("GET", "/api/admin/halts")
        assert (code, halts) == (200, {"halts": []})
        for client in (op, a0, a1, b1):
            client.close()

    asyncio.run(scenario())


def test_a_market_order_queued_before_a_halt_is_held_through_a_killed_worker_and_executes_once_after_resume(
        make_cluster):
    cluster = make_cluster(webs=1, workers=0, **ENV, **FAST_FAILOVER)  # no worker yet: the order stays queued

    async def scenario():
        op, a = Client(cluster.webs[0][1], OPERATOR), Client(cluster.webs[0][1], KEY_A)
        code, accepted = await a.submit(tokenIn="SOL", tokenOut="USDC", amount="0.5")
        assert code == 202, accepted
        order_id = accepted["orderId"]
        await operator(op, "halt", 201, scope="pair", pair="USDC/SOL", reason="oracle check")
        holder = cluster.add_worker()  # it reads the halts before it starts a single order
        await until(lambda: _is(a, order_id, "waiting"), 30, "the queued order to be held")
        code, order = await a.order(order_id)
        assert order["events"][-1]["meta"]["trigger"] == "halt"
        assert order["events"][-1]["meta"]["reason"] == "oracle check"

        holder.kill()  # SIGKILL while it holds the order: its job stays pending in Redis
        successor = cluster.add_worker()
        await until(lambda: _took_over(successor, order_id), 30, "another worker to take the held order over")
        await until(lambda: _logged([successor], f"order {order_id} held by a halt"), 30,
                    "the successor to hold it too")
        assert await order_status(a, order_id) == "waiting"

        await operator(op, "resume", 200, scope="pair", pair="SOL/USDC")
        frames, _ = await a.listen(accepted["links"]["ws"], timeout=60)
        assert [f["status"] for f in frames] == ["pending", "waiting", "routing", "building", "submitted",
                                                 "confirmed"]
        code, swaps = await a.request("GET", f"/api/sim/swaps?orderId={order_id}")
        assert executed(swaps) == confirmed_swaps(frames[-1]), "executed once"
        op.close()
        a.close()

    asyncio.run(scenario())


async def _is(client, order_id, wanted):
    return await order_status(client, order_id) == wanted


async def _logged(processes, text):
    return any(text in p.log_text() for p in processes)


async def _took_over(process, order_id):
    return took_over(process.log_text(), order_id)
