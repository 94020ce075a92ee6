"""The two scenarios: the load each drives and the figures each reports.

Times are `time.monotonic()` seconds on the client; latencies are reported in ms.
"""
from __future__ import annotations

import asyncio
import heapq
from datetime import datetime

from bench.client import HttpPool, listen, percentile

ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.1"}

# Environment of each scenario, on top of DATABASE_URL / REDIS_URL. Everything that changes
# the figures is written out, so a `.env` in the checkout cannot change them.
COMMON_ENV = {"VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "ORDER_RATE_LIMIT": "1000000",
              "RETRY_ATTEMPTS": "3", "API_KEYS": "", "SIM_SEED": "11", "LOG_LEVEL": "WARNING"}
THROUGHPUT_ENV = {**COMMON_ENV, "VENUE_PROFILE": "instant", "WORKER_CONCURRENCY": "50",
                  "QUEUE_MAX_DEPTH": "100000"}
DRAIN_ENV = {**COMMON_ENV, "VENUE_PROFILE": "realistic", "WORKER_CONCURRENCY": "10", "QUEUE_MAX_DEPTH": "10000"}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _stream_problems(results: list[dict]) -> list[str]:
    problems = []
    for r in results:
        stream = r.get("stream")
        if stream is not None and not stream.complete:
            seqs = [f.get("seq") for f in stream.frames]
            last = stream.frames[-1].get("status") if stream.frames else None
            problems.append(f"{r.get('orderId')}: seqs={seqs} last={last} close={stream.close_code} "
                            f"error={stream.error}")
    return problems


async def submit_and_listen(pool: HttpPool, port: int, timeout: float) -> dict:
    """Submit one order and follow its `links.ws` stream to the close: {code, sentAt,
    answeredAt, orderId, stream} (or `error` when the submit was not accepted)."""
    code, body, sent_at, answered_at = await pool.request("POST", "/api/orders/execute", ORDER)
    result = {"code": code, "sentAt": sent_at, "answeredAt": answered_at}
    if code != 202:
        result["error"] = f"{code} {body}"
        return result
    result["orderId"] = body["orderId"]
    result["stream"] = await listen(port, body["links"]["ws"], timeout)
    return result


async def throughput(port: int, orders: int, connections: int, listeners: int, timeout: float) -> dict:
    """Submit `orders` orders over `connections` keep-alive connections, each followed by
    its own WebSocket listener; at most `listeners` orders are in flight (submitted and
    not yet closed), so every listener opens right after its submit returns."""
    pool = HttpPool(port, connections)
    in_flight = asyncio.Semaphore(listeners)

    async def one() -> dict:
        async with in_flight:
            return await submit_and_listen(pool, port, timeout)

    try:
        results = await asyncio.gather(*(one() for _ in range(orders)))
    finally:
        pool.close()
    rejected = [r["error"] for r in results if "error" in r]
    confirmed = [r for r in results if r.get("stream") and r["stream"].confirmed_at is not None]
    first = min(r["sentAt"] for r in results)
    last = max((r["stream"].confirmed_at for r in confirmed), default=None)
    latencies = [r["stream"].confirmed_at - r["sentAt"] for r in confirmed]
    submits = [r["answeredAt"] - r["sentAt"] for r in results]
    problems = _stream_problems(results)
    elapsed = (last - first) if last is not None else None
    return {
        "orders": orders, "accepted": orders - len(rejected), "rejected": len(rejected),
        "rejectedSamples": rejected[:5], "confirmed": len(confirmed),
        "incompleteStreams": len(problems), "incompleteSamples": problems[:5],
        "seconds": round(elapsed, 3) if elapsed else None,
        "ordersPerSecond": round(len(confirmed) / elapsed, 1) if elapsed else None,
        "latencyP50Ms": _ms(percentile(latencies, 50)), "latencyP99Ms": _ms(percentile(latencies, 99)),
        "submitP50Ms": _ms(percentile(submits, 50)), "submitP99Ms": _ms(percentile(submits, 99)),
        "orderIds": [r["orderId"] for r in results if "orderId" in r],
    }


def verify_database(database_url: str, orders: int, events_per_order: int = 5) -> dict:
    """Count what Postgres holds: every order confirmed and every event stored."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
            total = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM orders WHERE status = 'confirmed'")
            confirmed = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM order_events")
            events = cur.fetchone()[0]
    finally:
        conn.close()
    return {"ordersInDb": total, "confirmedInDb": confirmed, "eventsInDb": events,
            "ok": total == orders and confirmed == orders and events == events_per_order * orders}


def list_schedule(durations: list[float], slots: int, releases: list[float] | None = None) -> float:
    """Makespan of FIFO list scheduling: each job, in order, starts on the first free slot
    (not before its release time), with zero overhead."""
    free = [0.0] * slots
    end = 0.0
    for i, duration in enumerate(durations):
        start = max(heapq.heappop(free), releases[i] if releases else 0.0)
        heapq.heappush(free, start + duration)
        end = max(end, start + duration)
    return end


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def drain(port: int, orders: int, concurrency: int, timeout: float) -> dict:
    """Submit `orders` orders at once, each with a listener; compare the time to confirm
    them all with the ideal computed from the venue latencies the simulator drew."""
    pool = HttpPool(port, orders)
    try:
        results = await asyncio.gather(*(submit_and_listen(pool, port, timeout) for _ in range(orders)))
        accepted = sorted((r for r in results if "orderId" in r), key=lambda r: r["answeredAt"])
        details = []
        for r in accepted:
            code, body, _, _ = await pool.request("GET", f"/api/orders/{r['orderId']}")
            details.append(body if code == 200 else {"events": []})
    finally:
        pool.close()
    problems = _stream_problems(results)
    first = min(r["sentAt"] for r in results)
    confirmed_at = [r["stream"].confirmed_at for r in accepted if r["stream"].confirmed_at is not None]
    durations, releases, overheads, waits, pending_ts, confirmed_ts, started_ts = [], [], [], [], [], [], []
    for r, order in zip(accepted, details):
        by_status = {e["status"]: e for e in order.get("events", [])}
        routing, done, pending = by_status.get("routing"), by_status.get("confirmed"), by_status.get("pending")
        if not (routing and done and pending):
            continue
        quote = routing["meta"]["venueLatencyMs"] / 1000
        swap = done["meta"]["venueLatencyMs"] / 1000
        durations.append(quote + swap)
        releases.append(r["answeredAt"] - first)
        # routing's timestamp is when quoting started: from there to confirmed is the order's
        # own run, so anything beyond the drawn latencies is engine overhead.
        overheads.append(_ts(done["timestamp"]) - _ts(routing["timestamp"]) - quote - swap)
        waits.append(_ts(routing["timestamp"]) - _ts(pending["timestamp"]))
        pending_ts.append(_ts(pending["timestamp"]))
        confirmed_ts.append(_ts(done["timestamp"]))
        started_ts.append(_ts(routing["timestamp"]))
    # With every slot busy, the k-th order to start (k >= concurrency) takes the slot the
    # (k - concurrency)-th order to finish left: the gap is the engine's hand-off time.
    ends, starts = sorted(confirmed_ts), sorted(started_ts)
    handoffs = [starts[k] - ends[k - concurrency] for k in range(concurrency, len(starts))]
    actual = (max(confirmed_at) - first) if len(confirmed_at) == orders else None
    ideal = list_schedule(durations, concurrency) if len(durations) == orders else None
    ideal_arrivals = list_schedule(durations, concurrency, releases) if ideal else None
    return {
        "orders": orders, "accepted": len(accepted), "confirmed": len(confirmed_at),
        "incompleteStreams": len(problems), "incompleteSamples": problems[:5],
        "actualSeconds": round(actual, 3) if actual else None,
        "idealSeconds": round(ideal, 3) if ideal else None,
        "ratio": round(actual / ideal, 4) if actual and ideal else None,
        "idealWithArrivalsSeconds": round(ideal_arrivals, 3) if ideal_arrivals else None,
        "serverDrainSeconds": round(max(confirmed_ts) - min(pending_ts), 3) if confirmed_ts else None,
        "submitSpreadMs": _ms(max(r["answeredAt"] for r in results) - first),
        "orderOverheadP50Ms": _ms(percentile(overheads, 50)), "orderOverheadMaxMs": _ms(max(overheads, default=None)),
        "meanQuoteSwapMs": _ms(sum(durations) / len(durations)) if durations else None,
        "queueWaitMaxMs": _ms(max(waits, default=None)),
        "handoffP50Ms": _ms(percentile(handoffs, 50)), "handoffMaxMs": _ms(max(handoffs, default=None)),
        "orderIds": [r["orderId"] for r in accepted],
    }
