"""The `history` scenario's reads: each read path's p50 and p99, over HTTP against the real web
processes (one open, one with API keys) and, for the workers' own queries, through the store.

Each read is repeated `samples` times, one after another on one keep-alive connection: the
figure is what one request costs, not what a loaded server does.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote
from uuid import UUID

from bench.client import percentile
from bench.cluster import EngineProcess, cluster, free_port, wait_ready
from bench.scenarios import THROUGHPUT_ENV, submit_and_listen, throughput
from storage.orders import encode_cursor
from storage.records import utcnow
from web.client.aio import AsyncEngineClient

METRICS_SAMPLES = 12  # /metrics reads storage at most once a second: one sample a second
# Submitted first by each caller (open and keyed), so that on the empty database too every
# unfiltered list answers a full page: the comparison is of reads, not of page sizes.
SEED_ORDERS = 60


def _figures(name: str, times: list[float], statuses: set[int]) -> dict:
    return {"read": name, "p50Ms": round(percentile(times, 50) * 1000, 2),
            "p99Ms": round(percentile(times, 99) * 1000, 2), "samples": len(times), "statuses": sorted(statuses)}


async def _http(client: AsyncEngineClient, name: str, path: str, samples: int) -> dict:
    times, statuses = [], set()
    for _ in range(samples):
        started = time.perf_counter()
        answer = await client.request("GET", path)
        times.append(time.perf_counter() - started)
        statuses.add(answer.status)
    return _figures(name, times, statuses)


async def _listener(client: AsyncEngineClient, order_id: str, samples: int) -> dict:
    """A late listener of a finished order: connect, every stored event, closed by the server."""
    times, frames = [], set()
    for _ in range(samples):
        started = time.perf_counter()
        async with await client.connect(f"/ws?orderId={order_id}") as stream:
            got = [frame async for frame in stream]
        times.append(time.perf_counter() - started)
        frames.add(len(got))
    return {**_figures("listener: a finished order's history (/ws, late)", times, set()), "frames": sorted(frames)}


async def _metrics(client: AsyncEngineClient) -> dict:
    times, statuses = [], set()
    for _ in range(METRICS_SAMPLES):
        await asyncio.sleep(1.05)  # past the web's refresh interval: every scrape reads storage
        started = time.perf_counter()
        answer = await client.request("GET", "/metrics")
        times.append(time.perf_counter() - started)
        statuses.add(answer.status)
    return _figures("/metrics (each reading the counts)", times, statuses)


async def seed(port: int, key: str | None, timeout: float) -> list[str]:
    """Submit SEED_ORDERS orders (with `key`, if given) and follow each to its end; their ids."""
    client = AsyncEngineClient(f"http://127.0.0.1:{port}", key, raise_error=False, connections=1)
    try:
        ids = []
        for _ in range(SEED_ORDERS):
            result = await submit_and_listen(client, timeout)
            ids.append(result.get("orderId"))
        return [i for i in ids if i]
    finally:
        client.close()


async def http_reads(port: int, keyed_port: int, key: str, deep_cursor: str | None, samples: int) -> list[dict]:
    """Every HTTP read path on the open web (owner "") and the keyed one (the key's owner)."""
    results = []
    for label, p, api_key in (("no keys", port, None), ("with a key", keyed_port, key)):
        client = AsyncEngineClient(f"http://127.0.0.1:{p}", api_key, raise_error=False, connections=1)
        try:
            first = (await client.request("GET", "/api/orders?limit=20")).body
            cursor = quote(first.get("nextCursor") or "0-" + "0" * 32)
            deep = quote(deep_cursor or cursor)
            order_id = first["orders"][-1]["orderId"] if first.get("orders") else None
            paths = [("list", "/api/orders?limit=20"),
                     ("list status=confirmed", "/api/orders?status=confirmed&limit=20"),
                     ("list status=pending (none in the history)", "/api/orders?status=pending&limit=20"),
                     ("list type=limit", "/api/orders?type=limit&limit=20"),
                     ("list status=failed&type=sniper", "/api/orders?status=failed&type=sniper&limit=20"),
                     ("list page 2 (cursor)", f"/api/orders?limit=20&cursor={cursor}"),
                     ("list status=confirmed, cursor mid-history", f"/api/orders?status=confirmed&limit=20&cursor={deep}"),
                     ("list type=sniper, cursor mid-history", f"/api/orders?type=sniper&limit=20&cursor={deep}"),
                     ("dashboard first paint (list limit=50)", "/api/orders?limit=50")]
            if order_id:
                paths.append(("one order with its events", f"/api/orders/{order_id}"))
            for name, path in paths:
                results.append({**await _http(client, name, path, samples), "as": label})
            if order_id:
                results.append({**await _listener(client, order_id, max(10, samples // 4)), "as": label})
            if api_key is None:
                results.append({**await _metrics(client), "as": label})
        finally:
            client.close()
    return results


def store_reads(database_url: str, samples: int) -> list[dict]:
    """The workers' queries, timed through the store: the reconciler's (every unfinished order,
    a page of 1,000), the trigger book's (its worker's armed orders) and the counts /metrics reads."""
    from config import load_settings
    from storage.database import open_database
    from storage.orders import OrderStore
    from storage.records import utcnow

    settings = load_settings({"DATABASE_URL": database_url, "REDIS_URL": ""}, dotenv=None)
    db, entities = open_database(settings)
    store = OrderStore(db, entities)
    reads = [("reconciler: unfinished orders, a page of 1,000", lambda: store.unfinished_orders(utcnow(), 1000)),
             ("trigger book: armed orders of a worker", lambda: store.armed_by("worker-0", [])),
             ("counts by status (what /metrics reads)", store.counts_by_status)]
    results = []
    try:
        for name, read in reads:
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                read()
                times.append(time.perf_counter() - started)
            results.append({**_figures(name, times, set()), "as": "store"})
    finally:
        store.close()
        db.disconnect()
    return results


# The history scenario's servers: the throughput scenario's, with a fixed key secret (so the
# bench knows the key's owner id before any process starts) and the read limits lifted.
HISTORY_SECRET = "bench-history-secret-0123456789abcdef"
HISTORY_ENV = {**THROUGHPUT_ENV, "KEY_ID_SECRET": HISTORY_SECRET, "LIST_RATE_LIMIT": "0",
               "SUBSCRIBE_RATE_LIMIT": "0", "CONNECT_RATE_LIMIT": "0"}
HISTORY_DAYS = 100


def run_history(args, log_dir: Path, orders: int, key: str) -> dict:
    """One side of a history run: a cluster whose database holds `orders` finished orders (0:
    empty), a second web process with `key` as its API key; every read, then the throughput load."""
    from bench.history import build_history
    from web.access import owner_id

    built: dict = {}
    prepare = None
    if orders:
        key_owner = owner_id(key, HISTORY_SECRET.encode())
        prepare = lambda url: built.update(build_history(url, orders, key_owner, HISTORY_DAYS))  # noqa: E731
    with cluster(HISTORY_ENV, workers=args.workers, log_dir=log_dir, prepare=prepare) as (port, procs, url):
        keyed_port = free_port()
        keyed = EngineProcess("web", {**HISTORY_ENV, "DATABASE_URL": url, "REDIS_URL": procs["web0"].env["REDIS_URL"],
                                      "PORT": str(keyed_port), "API_KEYS": key, "KEY_RATE_LIMIT": "1000000"},
                              log_dir, "web1").start()
        try:
            wait_ready(keyed_port, keyed)
            seeded = asyncio.run(seed(port, None, args.timeout)) + asyncio.run(seed(keyed_port, key, args.timeout))
            middle = utcnow() - timedelta(days=HISTORY_DAYS / 2)
            deep = encode_cursor(middle, UUID(int=2**128 - 1))
            reads = asyncio.run(http_reads(port, keyed_port, key, deep, args.read_samples))
            reads += store_reads(url, args.read_samples)
            load = asyncio.run(asyncio.wait_for(
                throughput(port, args.orders, args.connections, args.listeners, args.timeout), args.timeout))
        finally:
            keyed.stop()
        load.pop("orderIds", None)
        return {"historyOrders": orders, "built": built, "seeded": len(seeded), "reads": reads,
                "ordersPerSecond": load.get("ordersPerSecond"), "incompleteStreams": load.get("incompleteStreams"),
                "submitP50Ms": load.get("submitP50Ms"), "submitP99Ms": load.get("submitP99Ms"),
                "logProblems": {name: p.log_text().count("ERROR") for name, p in {**procs, "web1": keyed}.items()}}


def history_table(empty_runs: list[dict], full_runs: list[dict], orders: int) -> str:
    """Per read: p50 / p99 on the empty database and on the history (medians of the runs), and
    the ratio of the p50s; then the submit throughput on both."""
    def medians(runs):
        per: dict[tuple, list] = {}
        for run in runs:
            for r in run.get("reads", []):
                per.setdefault((r["read"], r["as"]), []).append(r)
        return {k: (statistics.median(r["p50Ms"] for r in v), statistics.median(r["p99Ms"] for r in v))
                for k, v in per.items()}

    empty, full = medians(empty_runs), medians(full_runs)
    lines = [f"== history: reads on an empty database vs {orders:,} finished orders (ms, p50 / p99, medians "
             f"of {len(full_runs)} runs)",
             f"{'read':58} {'as':10} {'empty':>15} {'history':>15} {'p50 ratio':>9}"]
    for key in empty:
        e, f = empty[key], full.get(key, (None, None))
        ratio = f"{f[0] / e[0]:.2f}" if f[0] and e[0] else ""
        lines.append(f"{key[0][:58]:58} {key[1]:10} {e[0]:>7} / {e[1]:<6} {str(f[0]):>7} / {str(f[1]):<6} {ratio:>9}")
    for label, runs in (("empty", empty_runs), ("history", full_runs)):
        ops = [r["ordersPerSecond"] for r in runs if r.get("ordersPerSecond")]
        lines.append(f"submit throughput, {label}: {statistics.median(ops) if ops else None} orders/s "
                     f"(runs: {ops}); incomplete streams {[r.get('incompleteStreams') for r in runs]}")
    built = [r["built"] for r in full_runs if r.get("built")]
    if built:
        lines.append(f"history built: {built}")
    return "\n".join(lines)
