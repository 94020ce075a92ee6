"""The scenarios: the load each drives and the figures each reports.

Times are `time.monotonic()` seconds on the client; latencies are reported in ms.
"""
from __future__ import annotations

import asyncio
import heapq
import time
from datetime import datetime, timezone

from bench.client import engine_client, listen, percentile
from web.client.aio import AsyncEngineClient

ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.1"}

# Environment of each scenario, on top of DATABASE_URL / REDIS_URL. Everything that changes
# the figures is written out, so a `.env` in the checkout cannot change them.
COMMON_ENV = {"VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "ORDER_RATE_LIMIT": "1000000",
              "RETRY_ATTEMPTS": "3", "API_KEYS": "", "SIM_SEED": "11", "LOG_LEVEL": "WARNING",
              "LOG_FORMAT": "text"}
# One client address stands for every user: its WebSocket handshakes are not limited (past 6,000
# in a minute a longer run's listeners were refused).
THROUGHPUT_ENV = {**COMMON_ENV, "VENUE_PROFILE": "instant", "WORKER_CONCURRENCY": "50",
                  "QUEUE_MAX_DEPTH": "100000", "CONNECT_RATE_LIMIT": "0"}
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


async def submit_and_listen(client: AsyncEngineClient, timeout: float) -> dict:
    """Submit one order and follow its `links.ws` stream to the close: {code, sentAt,
    answeredAt, orderId, stream} (or `error` when the submit was not accepted)."""
    answer = await client.submit(ORDER)
    code, body = answer
    result = {"code": code, "sentAt": answer.sent_at, "answeredAt": answer.answered_at}
    if code != 202:
        result["error"] = f"{code} {body}"
        return result
    result["orderId"] = body["orderId"]
    result["stream"] = await listen(client, body["links"]["ws"], timeout)
    return result


async def throughput(port: int, orders: int, connections: int, listeners: int, timeout: float) -> dict:
    """Submit `orders` orders over `connections` keep-alive connections, each followed by
    its own WebSocket listener; at most `listeners` orders are in flight (submitted and
    not yet closed), so every listener opens right after its submit returns."""
    client = engine_client(port, connections)
    in_flight = asyncio.Semaphore(listeners)

    async def one() -> dict:
        async with in_flight:
            return await submit_and_listen(client, timeout)

    try:
        results = await asyncio.gather(*(one() for _ in range(orders)))
    finally:
        client.close()
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
    client = engine_client(port, orders)
    try:
        results = await asyncio.gather(*(submit_and_listen(client, timeout) for _ in range(orders)))
        accepted = sorted((r for r in results if "orderId" in r), key=lambda r: r["answeredAt"])
        details = []
        for r in accepted:
            code, body = await client.order(r["orderId"])
            details.append(body if code == 200 else {"events": []})
    finally:
        client.close()
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
    # Quotes at once: the most quote spans (routing .. building) in the air together (at most
    # the concurrency), and how long the first `concurrency` orders' quotes all overlapped
    # (negative: they were not all in the air together).
    quoting = quote_spans(details)
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
        "quotesInFlightPeak": peak_in_flight(quoting),
        "firstQuotesOverlapMs": _ms(overlap(sorted(quoting)[:concurrency])),
        "orderIds": [r["orderId"] for r in accepted],
    }


def quote_spans(orders: list[dict]) -> list[tuple[float, float]]:
    """Each order's quote span: its first `routing` to its first `building` event (epoch s)."""
    spans = []
    for order in orders:
        firsts: dict[str, float] = {}
        for event in order.get("events", []):
            firsts.setdefault(event["status"], _ts(event["timestamp"]))
        if "routing" in firsts and "building" in firsts:
            spans.append((firsts["routing"], firsts["building"]))
    return spans


def peak_in_flight(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one time (an end at the same instant as a start closes first)."""
    level = peak = 0
    for _, delta in sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans]):
        level += delta
        peak = max(peak, level)
    return peak


def overlap(spans: list[tuple[float, float]]) -> float | None:
    """How long every one of `spans` was open together (s): the earliest end minus the latest
    start; negative when they do not all overlap (the first slots' quotes were not at once)."""
    if not spans:
        return None
    return min(end for _, end in spans) - max(start for start, _ in spans)


# ---- latency -------------------------------------------------------------------------------------

# The stages of one order, from the client's submit to its `confirmed` frame, cut at the
# event timestamps the engine stores (see bench/README.md, "latency"): (key, from, to, label).
# They add up, order by order, to submit -> confirmed frame.
STAGES = [
    ("submitToPending", "submit", "pending", "submit -> pending    (HTTP in, parse, gather, intake hop)"),
    ("pendingToRouting", "pending", "routing", "pending -> routing   (insert, queue, claim, actor start)"),
    ("routingToBuilding", "routing", "building", "routing -> building  (quotes)"),
    ("buildingToConfirmed", "building", "confirmed",
     "building -> confirmed (store 3 events, swap, confirm)"),
    ("confirmedToFrame", "confirmed", "frame", "confirmed -> frame   (store, publish, web, client)"),
]
# Not a stage of the sum: it runs alongside pending -> routing.
PARALLEL_STAGES = [("pendingToAnswer", "pending", "answer", "(pending -> 202 answer, alongside: store, queue, reply)")]


async def _timed_submit(client: AsyncEngineClient, timeout: float, **extra) -> dict:
    """submit_and_listen, plus the offset of the wall clock over time.monotonic() at that
    moment, so the client's times can be set against the server's stored timestamps."""
    offset = time.time() - time.monotonic()
    result = await submit_and_listen(client, timeout)
    result.update(extra, wallOffset=offset)
    return result


def _latency_figures(results: list[dict], prefix: str) -> dict:
    """p50/p99/max of submit -> confirmed frame, p50/p99 of the HTTP submit, stream checks."""
    confirmed = [r for r in results if r.get("stream") and r["stream"].confirmed_at is not None]
    latencies = [r["stream"].confirmed_at - r["sentAt"] for r in confirmed]
    submits = [r["answeredAt"] - r["sentAt"] for r in results]
    problems = _stream_problems(results)
    rejected = [r["error"] for r in results if "error" in r]
    return {
        f"{prefix}Orders": len(results), f"{prefix}Rejected": len(rejected), f"{prefix}RejectedSamples": rejected[:5],
        f"{prefix}Confirmed": len(confirmed), f"{prefix}IncompleteStreams": len(problems),
        f"{prefix}IncompleteSamples": problems[:5],
        f"{prefix}P50Ms": _ms(percentile(latencies, 50)), f"{prefix}P99Ms": _ms(percentile(latencies, 99)),
        f"{prefix}MaxMs": _ms(max(latencies, default=None)),
        f"{prefix}SubmitP50Ms": _ms(percentile(submits, 50)), f"{prefix}SubmitP99Ms": _ms(percentile(submits, 99)),
    }


async def alone(port: int, orders: int, warmup: int, timeout: float) -> dict:
    """`warmup` then `orders` orders one after another: each submitted once the previous
    one's stream has closed, and followed by its own listener."""
    client = engine_client(port, 1)
    try:
        warm = [await _timed_submit(client, timeout) for _ in range(warmup)]
        results = [await _timed_submit(client, timeout) for _ in range(orders)]
    finally:
        client.close()
    warm_latencies = [r["stream"].confirmed_at - r["sentAt"] for r in warm
                      if r.get("stream") and r["stream"].confirmed_at is not None]
    return {**_latency_figures(results, "alone"), "aloneWarmupOrders": warmup,
            "aloneStartedAt": _iso(results[0]["sentAt"] + results[0]["wallOffset"]) if results else None,
            "aloneWarmupMs": [_ms(v) for v in warm_latencies],
            "aloneWarmupIncompleteStreams": len(_stream_problems(warm)),
            "results": results, "warmupResults": warm}


async def paced(port: int, rate: float, orders: int, warmup: int, connections: int, timeout: float) -> dict:
    """Open loop: order i is submitted at start + i / rate, whether or not the earlier ones
    have been answered or confirmed, over `connections` keep-alive connections, each
    followed by its own listener. The first `warmup` orders are left out of the figures."""
    client = engine_client(port, connections)
    tasks = []
    start = time.monotonic() + 0.05
    try:
        for i in range(orders):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_timed_submit(client, timeout, index=i, dueAt=due)))
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        client.close()
    measured = results[warmup:]
    sends = [r["sentAt"] for r in measured]
    spread = max(sends) - min(sends) if len(sends) > 1 else 0.0
    lags = [r["sentAt"] - r["dueAt"] for r in measured]
    confirmed = [r for r in measured if r.get("stream") and r["stream"].confirmed_at is not None]
    from_due = [r["stream"].confirmed_at - r["dueAt"] for r in confirmed]
    everything = _latency_figures(results, "all")
    return {
        **_latency_figures(measured, "paced"),
        "pacedTargetRate": rate, "pacedWarmupOrders": warmup,
        # wall-clock time of the first measured submit, to set the samples' sentAtS against server logs
        "pacedStartedAt": _iso(min(sends) + measured[0]["wallOffset"]) if sends else None,
        # submits per second over the measured part, from its first to its last submit
        "pacedRate": round((len(sends) - 1) / spread, 1) if spread > 0 else None,
        # how late the client sent each order against its schedule (a busy client, or no free connection)
        "pacedSendLagP50Ms": _ms(percentile(lags, 50)), "pacedSendLagP99Ms": _ms(percentile(lags, 99)),
        "pacedSendLagMaxMs": _ms(max(lags, default=None)),
        # submit -> confirmed counted from the scheduled time instead: what a late send adds
        "pacedFromScheduleP99Ms": _ms(percentile(from_due, 99)),
        # every paced order, warm-up included (what the CPU figures are divided by)
        "allConfirmed": everything["allConfirmed"], "allIncompleteStreams": everything["allIncompleteStreams"],
        "allIncompleteSamples": everything["allIncompleteSamples"],
        "results": measured, "warmupResults": results[:warmup],
    }


def db_commits(database_url: str) -> int:
    """Transactions committed in the database so far (pg_stat_database; a backend reports its
    own within a second of its last one, so read this a second after the load)."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def event_times(database_url: str, order_ids: list[str]) -> dict[str, dict[str, float]]:
    """{order id: {status: stored event time, epoch seconds}} from order_events (first attempt:
    with no failures every order has one). The columns are naive UTC."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT order_id::text, status, created_at FROM order_events "
                        "WHERE order_id = ANY(%s::uuid[]) ORDER BY order_id, seq", (list(order_ids),))
            rows = cur.fetchall()
    finally:
        conn.close()
    times: dict[str, dict[str, float]] = {}
    for oid, status, ts in rows:
        times.setdefault(oid, {}).setdefault(status, ts.replace(tzinfo=timezone.utc).timestamp())
    return times


def stage_samples(results: list[dict], times: dict[str, dict[str, float]]) -> list[dict[str, float]]:
    """Per confirmed order: its stages in ms (client times turned into wall clock with the
    offset taken at its submit; the client and the server share the machine's clock)."""
    samples = []
    first = min((r["sentAt"] for r in results), default=0.0)
    for r in results:
        stream, events = r.get("stream"), times.get(r.get("orderId"), {})
        if stream is None or stream.confirmed_at is None:
            continue
        points = {**events, "submit": r["sentAt"] + r["wallOffset"], "answer": r["answeredAt"] + r["wallOffset"],
                  "frame": stream.confirmed_at + r["wallOffset"]}
        sample = {"orderId": r["orderId"], "sentAtS": r["sentAt"] - first,
                  "latency": (stream.confirmed_at - r["sentAt"]) * 1000,
                  "submit": (r["answeredAt"] - r["sentAt"]) * 1000}
        if "dueAt" in r:
            sample["sendLag"] = (r["sentAt"] - r["dueAt"]) * 1000
        for key, start, end, _ in STAGES + PARALLEL_STAGES:
            if start in points and end in points:
                sample[key] = (points[end] - points[start]) * 1000
        samples.append(sample)
    return samples


def stage_figures(samples: list[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """p50 and p99 of each stage over the orders, ms."""
    figures = {}
    for key, *_ in STAGES + PARALLEL_STAGES:
        values = [s[key] for s in samples if key in s]
        figures[key] = {"p50": _round(percentile(values, 50)), "p99": _round(percentile(values, 99)),
                        "max": _round(max(values, default=None)), "orders": len(values)}
    return figures


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
