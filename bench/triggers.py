"""The `triggers` scenario: armed limit orders and sniper orders on one worker.

- memory: the worker's resident memory idle, then with `armed` limit orders waiting in its
  trigger book: the cost per armed order;
- crossing: a market buy pushes SOL's price over the lowest `crossing` limits; the time
  from that push's `confirmed` event to the first `routing` event of an armed order, and
  until every crossed order has started, each exactly once;
- sniper: `snipers` orders wait for a token's launch; the delay from `launchAt` to each
  one's `routing` event.
Times come from the stored event timestamps (one clock: the machine's).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from bench.client import engine_client, percentile
from web.client.aio import AsyncEngineClient

TRIGGERS_ENV = {"VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "ORDER_RATE_LIMIT": "1000000",
                "RETRY_ATTEMPTS": "3", "API_KEYS": "", "SIM_SEED": "11", "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "text", "VENUE_PROFILE": "instant", "WORKER_CONCURRENCY": "50",
                "QUEUE_MAX_DEPTH": "100000"}
SNIPER_TOKEN = "POPCAT"
# The simulator's drift alone moves a price at most e^(2·MAX_LOG_DRIFT) ≈ 2.8% (storage.venues.
# sim.amm), so the crossing band sits 3% to 3.5% above the price (only the push crosses it),
# the push takes the price 4.5% up (1% over the band, so drift meanwhile cannot take the
# last crossed orders back under), and the other limits sit 8% to 12% up (over the push
# plus what drift can add).
BAND = (Decimal("1.03"), Decimal("1.035"))
PUSH_TO = Decimal("1.045")
REST = (Decimal("1.08"), Decimal("1.12"))


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ts(value) -> float:
    """Epoch seconds of a stored naive-UTC timestamp or an ISO text with a Z."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc).timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def _price(client: AsyncEngineClient) -> Decimal:
    code, quote = await client.quote("SOL", "USDC", "0.01")
    if code != 200:
        raise RuntimeError(f"quote failed: {code} {quote}")
    return Decimal(quote["route"]["amountOut"]) / Decimal("0.01")


async def _usdc_to_raise(client: AsyncEngineClient, price: Decimal) -> Decimal:
    """USDC that takes SOL to sell for `price` (after the fee) on both venues. On an x·y=k pool
    the price goes with the square of the USDC reserve R, so a pool at price p needs
    R × (√(p'/p) − 1) to reach p'; the router splits the order the same way (it buys where
    SOL is cheaper first). A little more (0.5%), as the fee keeps part of each leg."""
    code, answer = await client.pools()
    if code != 200:
        raise RuntimeError(f"pools failed: {code} {answer}")
    usdc = Decimal(0)
    for p in answer["pools"]:
        if (p["tokenA"], p["tokenB"]) != ("SOL", "USDC"):
            continue
        wanted = price * Decimal("1.005") / (1 - Decimal(p["feeRate"]))  # the pool's own price
        if wanted > Decimal(p["price"]):
            usdc += Decimal(p["reserveB"]) * ((wanted / Decimal(p["price"])).sqrt() - 1)
    return usdc.quantize(Decimal("0.01"))


async def _submit_all(client: AsyncEngineClient, bodies: list[dict]) -> list[str]:
    async def one(body):
        code, answer = await client.submit(body)
        if code != 202:
            raise RuntimeError(f"submit refused: {code} {answer}")
        return answer["orderId"]

    return list(await asyncio.gather(*(one(b) for b in bodies)))


def _count(database_url: str, sql: str, params=()) -> int:
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _rows(database_url: str, sql: str, params=()) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


async def _until(probe, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _warmed_up(client, worker_pid: int) -> tuple:
    """The pair's price, and the worker's resident memory (MB) once 20 orders have warmed it up."""
    price = await _price(client)
    await _submit_all(client, [{"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.01"}] * 20)
    await asyncio.sleep(2)
    return price, rss_mb(worker_pid)


async def triggers(port: int, worker_pid: int, database_url: str, armed: int, crossing: int, snipers: int,
                   timeout: float) -> dict:
    """Run the three measurements against a running cluster with one worker."""
    client = engine_client(port, 50)
    try:
        price, idle = await _warmed_up(client, worker_pid)
        # The lowest `crossing` limits in BAND, the others in REST (see above).
        bodies = []
        for i in range(armed):
            low, high = BAND if i < crossing else REST
            share = Decimal(i) / max(crossing, 1) if i < crossing else Decimal(i - crossing) / max(armed - crossing, 1)
            limit = (price * (low + (high - low) * share)).quantize(Decimal("0.000001"))
            bodies.append({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.01", "type": "limit",
                           "limitPrice": str(limit), "slippageBps": 5000})
        started = time.monotonic()
        ids = await _submit_all(client, bodies)
        await _until(lambda: _count(database_url, "SELECT count(*) FROM orders WHERE status = 'waiting'") >= armed,
                     timeout, "every limit order to wait")
        arm_seconds = time.monotonic() - started
        await asyncio.sleep(1)
        loaded = rss_mb(worker_pid)
        # The push: one market buy of SOL sized to take the price to PUSH_TO (another, should
        # the first fall short; `pushes` says how many it took).
        target = price * PUSH_TO
        pushes: list[str] = []
        while await _price(client) < target and len(pushes) < 10:
            usdc = await _usdc_to_raise(client, target)
            (push,) = await _submit_all(client, [{"tokenIn": "USDC", "tokenOut": "SOL", "amount": str(usdc),
                                                 "slippageBps": 5000}])
            pushes.append(push)
            await _until(lambda: _count(database_url, "SELECT count(*) FROM orders WHERE id = %s AND "
                                                      "status IN ('confirmed', 'failed')", (push,)) == 1,
                         60, "the push to land")
        push_times = sorted(_ts(at) for (at,) in _rows(
            database_url, "SELECT created_at FROM order_events WHERE order_id = ANY(%s::uuid[]) AND "
                          "status = 'confirmed'", (pushes,)))
        await _until(lambda: _count(database_url, "SELECT count(DISTINCT order_id) FROM order_events e JOIN "
                                                  "orders o ON o.id = e.order_id WHERE o.type = 'limit' AND "
                                                  "e.status = 'confirmed'") >= crossing, timeout,
                     "the crossed orders to confirm")
        await asyncio.sleep(2)
        # Each armed order's first routing event: when it started (a retry adds another).
        routed = _rows(database_url, "SELECT e.order_id, min(e.created_at) AS started FROM order_events e JOIN "
                                     "orders o ON o.id = e.order_id WHERE o.type = 'limit' AND "
                                     "e.status = 'routing' GROUP BY e.order_id ORDER BY started")
        swaps = _rows(database_url, "SELECT order_id, count(*) FROM sim_swaps WHERE status = 'confirmed' "
                                    "AND order_id = ANY(%s::text[]) GROUP BY order_id HAVING count(*) > 1", (ids,))
        first = last = None
        # From the push after which the first armed order started (the crossing).
        crossed_by = max((t for t in push_times if routed and t <= _ts(routed[0][1])), default=None)
        if crossed_by is not None:
            first = (_ts(routed[0][1]) - crossed_by) * 1000
            last = (_ts(routed[-1][1]) - crossed_by) * 1000
        sniper = await _snipers(client, database_url, snipers, timeout)
    finally:
        client.close()
    return {
        "armed": armed, "armSeconds": round(arm_seconds, 1), "idleRssMb": round(idle, 1),
        "armedRssMb": round(loaded, 1), "bytesPerArmedOrder": round((loaded - idle) * 1024 * 1024 / armed),
        "pushes": len(pushes), "released": len(routed), "executedTwice": len(swaps),
        "crossingToFirstRoutingMs": round(first, 1) if first is not None else None,
        "crossingToLastRoutingMs": round(last, 1) if last is not None else None,
        **sniper,
    }


async def _snipers(client: AsyncEngineClient, database_url: str, count: int, timeout: float) -> dict:
    ids = await _submit_all(client, [{"tokenIn": "SOL", "tokenOut": SNIPER_TOKEN, "amount": "0.01", "type": "sniper",
                                      "slippageBps": 5000}] * count)
    await _until(lambda: _count(database_url, "SELECT count(*) FROM orders WHERE type = 'sniper' AND "
                                              "status = 'waiting'") >= count, timeout, "the snipers to wait")
    code, launch = await client.launch(SNIPER_TOKEN, 2)
    if code != 202:
        raise RuntimeError(f"launch refused: {code} {launch}")
    await _until(lambda: _count(database_url, "SELECT count(*) FROM orders WHERE type = 'sniper' AND "
                                              "status = 'confirmed'") >= count, timeout, "the snipers to confirm")
    rows = _rows(database_url, "SELECT e.created_at FROM order_events e WHERE e.order_id = ANY(%s::uuid[]) AND "
                               "e.status = 'routing'", (ids,))
    delays = [(_ts(at) - _ts(launch["launchAt"])) * 1000 for (at,) in rows]
    return {"snipers": count, "sniperDelayP50Ms": _round(percentile(delays, 50)),
            "sniperDelayP99Ms": _round(percentile(delays, 99)), "sniperDelayMaxMs": _round(max(delays, default=None))}


def _round(value):
    return None if value is None else round(value, 1)


# ---- protective orders: their memory, and the trail events a drifting price writes ----------------

PROTECTIVE_KINDS = ("stop_limit", "trailing_stop", "oco", "stop_loss")


def _protective_body(kind: str, price: Decimal) -> dict:
    """One protective order far from firing: stops 20% under the price, targets 20% over it (the
    drift moves a price by ~2.8% at most), a trailing stop 20% under its best price."""
    low, high = (price * Decimal("0.8")).quantize(Decimal("0.000001")), (price * Decimal("1.2")).quantize(
        Decimal("0.000001"))
    body = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.01", "slippageBps": 5000, "type": kind}
    if kind == "stop_limit":
        body.update(type="stop_loss", stopPrice=str(low), limitPrice=str(low * Decimal("0.99")))
    elif kind == "stop_loss":
        body["stopPrice"] = str(low)
    elif kind == "trailing_stop":
        body["trailPercent"] = "20"
    else:
        body.update(takeProfit={"targetPrice": str(high)}, stopLoss={"stopPrice": str(low)})
    return body


async def protective(port: int, worker_pid: int, database_url: str, armed: int, timeout: float,
                     hold_s: float = 10.0) -> dict:
    """`armed` protective orders, a quarter of each kind, armed on one worker: its memory over the
    idle worker, and over `hold_s` seconds of drift the events they write (trail events of the
    trailing stops, coalesced) and the orders released (none should be)."""
    client = engine_client(port, 50)
    try:
        price, idle = await _warmed_up(client, worker_pid)
        bodies = [_protective_body(PROTECTIVE_KINDS[i % len(PROTECTIVE_KINDS)], price) for i in range(armed)]
        started = time.monotonic()
        await _submit_all(client, bodies)
        await _until(lambda: _count(database_url, "SELECT count(*) FROM orders WHERE status = 'waiting'") >= armed,
                     timeout, "every protective order to wait")
        arm_seconds = time.monotonic() - started
        before = _count(database_url, "SELECT count(*) FROM order_events WHERE status = 'waiting'")
        await asyncio.sleep(hold_s)
        loaded = rss_mb(worker_pid)
        trail_events = _count(database_url, "SELECT count(*) FROM order_events WHERE status = 'waiting'") - before
        released = _count(database_url, "SELECT count(*) FROM order_events WHERE status = 'routing' AND order_id IN "
                                         "(SELECT id FROM orders WHERE type <> 'market')")
    finally:
        client.close()
    return {"armed": armed, "armSeconds": round(arm_seconds, 1), "idleRssMb": round(idle, 1),
            "armedRssMb": round(loaded, 1), "overIdleMb": round(loaded - idle, 1),
            "bytesPerArmedOrder": round((loaded - idle) * 1024 * 1024 / armed),
            "trailEventsPerSecond": round(trail_events / hold_s, 1), "released": released}
