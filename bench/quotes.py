"""The `quotes` scenario: how many quote subscribers one web process serves.

One web + one worker. Subscribers connect to `/ws` (one connection each, one `subscribeQuote`
each, spread over PAIRS) in steps (e.g. 1,000, then 5,000, then 10,000 in all). At each step:
- steady: for `window` seconds nothing trades; the quotes change with the simulator's drift
  and are pushed at most every QUOTE_STREAM_INTERVAL_MS (computed again every
  QUOTE_STREAM_REFRESH_MS): the web's CPU (cores), the frames received per second, the
  quotes the web computed per second (`engine_quote_computations_total`: one per distinct
  quote and tick, whatever the subscribers);
- push: an order (another API key, so no subscriber's stream carries its events) sells SOL,
  moving the SOL/USDC pools ~2%; each SOL->USDC subscriber's latency from the swap's
  `executedAt` (the chain's clock, the same machine's) to the first frame showing the move.
The client (one process, uvloop) shares the two cores with the web and the worker: its CPU is
reported too.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from decimal import Decimal

from bench.client import percentile
from bench.cpu import CpuMeter
from web.client.aio import AsyncEngineClient

SUBSCRIBER_KEY = "bench-quotes-subscriber-0123456789abcdef"
TRADER_KEY = "bench-quotes-trader-0123456789abcdef0123"
QUOTES_ENV = {"VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "SIM_SEED": "11", "LOG_LEVEL": "WARNING",
              "LOG_FORMAT": "text", "VENUE_PROFILE": "instant", "API_KEYS": f"{SUBSCRIBER_KEY},{TRADER_KEY}",
              "KEY_RATE_LIMIT": "1000000", "CONNECT_RATE_LIMIT": "0", "SUBSCRIBE_RATE_LIMIT": "0",
              "QUOTE_RATE_LIMIT": "0"}  # the defaults of QUOTE_STREAM_INTERVAL_MS and _REFRESH_MS
PAIRS = [("SOL", "USDC", "1"), ("USDC", "SOL", "150"), ("BONK", "USDC", "1000000"), ("JUP", "USDC", "100")]
MOVED = 0.01  # a frame showing SOL->USDC 1% off its price before the push: the push's (drift: < 0.1%/s)
CONNECT_AT_ONCE = 200
PUSHES = 5  # pushes per step (the latency depends on where the push falls between two ticks)


class Subscriber:
    """One connection with one quote subscription: its frames and what it saw of the push."""

    __slots__ = ("pair", "frames", "last", "armed", "moved_at", "error")

    def __init__(self, pair: int):
        self.pair = pair
        self.frames = 0
        self.last: str | None = None  # the last quote frame, as received
        self.armed: float | None = None  # the amountOut before the push, while waiting for the move
        self.moved_at: float | None = None
        self.error: str | None = None

    async def run(self, client: AsyncEngineClient, ready: asyncio.Semaphore, subscribed: list) -> None:
        token_in, token_out, amount = PAIRS[self.pair]
        try:
            async with ready:
                stream = await client.connect("/ws")
                await stream.send({"action": "subscribeQuote", "tokenIn": token_in, "tokenOut": token_out,
                                   "amount": amount})
            # Parsed only while a push is awaited: the client shares the cores with the web.
            while (message := await stream.conn.read_message()) is not None:
                if '"type":"quote"' not in message[:40]:
                    frame = json.loads(message)
                    if frame.get("type") == "quoteSubscribed":
                        subscribed.append(self)
                    elif frame.get("type") == "error":
                        self.error = str(frame.get("error"))
                    continue
                self.frames += 1
                self.last = message
                if self.armed is not None:
                    out = _amount_out(message)
                    if abs(out / self.armed - 1) > MOVED:
                        self.moved_at, self.armed = time.time(), None
            self.error = self.error or f"closed {stream.close_code}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted, reported
            self.error = repr(exc)


def _amount_out(message: str) -> float:
    return float(json.loads(message)["route"]["amountOut"])


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=timezone.utc).timestamp()


async def _computations(client: AsyncEngineClient) -> float:
    answer = await client.request("GET", "/metrics")
    for line in answer.raw.decode("utf-8", "replace").splitlines():
        if line.startswith("engine_quote_computations_total "):
            return float(line.split()[1])
    return 0.0


async def _push(trader: AsyncEngineClient, subscribers: list[Subscriber], timeout: float,
                sell: bool) -> tuple[int, list[float]]:
    """Sell SOL for USDC (1% of the SOL/USDC pools' SOL: the price moves ~2%), or buy it back with
    as much USDC (pushes alternate, so the price stays inside the collar): how many SOL->USDC
    subscribers watched, and each one's latency (ms) from the swap landing to the frame that shows it."""
    await asyncio.sleep(0.5)  # apart from the last push: its frames went out less than an interval ago
    code, pools = await trader.request("GET", "/api/sim/pools")
    sol_usdc = [p for p in pools["pools"] if (p["tokenA"], p["tokenB"]) == ("SOL", "USDC")]
    sol = sum(Decimal(p["reserveA"]) for p in sol_usdc) * Decimal("0.01")
    usdc = sum(Decimal(p["reserveB"]) for p in sol_usdc) * Decimal("0.01")
    watching = [s for s in subscribers if s.pair == 0 and s.last is not None]
    for s in watching:
        s.armed, s.moved_at = _amount_out(s.last), None
    body = ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": str(sol.quantize(Decimal("0.001")))} if sell else
             {"tokenIn": "USDC", "tokenOut": "SOL", "amount": str(usdc.quantize(Decimal("0.01")))})
    code, accepted = await trader.submit(slippageBps=5000, **body)
    if code != 202:
        raise RuntimeError(f"the push was refused: {code} {accepted}")
    deadline, order = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        code, order = await trader.order(accepted["orderId"])
        if order.get("status") in ("confirmed", "failed"):
            break
        await asyncio.sleep(0.05)
    code, swaps = await trader.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}")
    if not swaps.get("swaps"):
        raise RuntimeError(f"the push did not execute: {body} -> {order}")
    landed = min(_epoch(s["executedAt"]) for s in swaps["swaps"])
    while time.monotonic() < deadline and any(s.moved_at is None for s in watching):
        await asyncio.sleep(0.05)
    return len(watching), [(s.moved_at - landed) * 1000 for s in watching if s.moved_at is not None]


def _push_figures(pushes: list[tuple[int, list[float]]]) -> dict:
    latencies = sorted(ms for _, found in pushes for ms in found)
    per_push = [round(percentile(found, 50), 1) if found else None for _, found in pushes]
    return {"pushes": len(pushes), "pushP50MsEach": per_push, "pushSubscribers": sum(n for n, _ in pushes), "pushReached": len(latencies),
            "pushP50Ms": round(percentile(latencies, 50), 1) if latencies else None,
            "pushP99Ms": round(percentile(latencies, 99), 1) if latencies else None,
            "pushMaxMs": round(latencies[-1], 1) if latencies else None}


async def quotes(port: int, pids: dict[str, int], steps: list[int], window_s: float, timeout: float) -> dict:
    """Connect subscribers up to each of `steps` (totals); measure each step as the docstring says."""
    url = f"http://127.0.0.1:{port}"
    client = AsyncEngineClient(url, SUBSCRIBER_KEY, raise_error=False, timeout=60)
    trader = AsyncEngineClient(url, TRADER_KEY, raise_error=False)
    subscribers: list[Subscriber] = []
    subscribed: list[Subscriber] = []
    tasks: list[asyncio.Task] = []
    ready = asyncio.Semaphore(CONNECT_AT_ONCE)
    results = []
    try:
        for total in steps:
            started = time.monotonic()
            for n in range(len(subscribers), total):
                subscriber = Subscriber(n % len(PAIRS))
                subscribers.append(subscriber)
                tasks.append(asyncio.create_task(subscriber.run(client, ready, subscribed)))
            shown = time.monotonic()
            while len(subscribed) + sum(1 for s in subscribers if s.error) < total:
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"only {len(subscribed)} of {total} subscribed after {timeout}s")
                if time.monotonic() - shown > 5:
                    errors = [s.error for s in subscribers if s.error]
                    print(f"  quotes: {len(subscribed)} of {total} subscribed, {len(errors)} errors "
                          f"{errors[:2]}", flush=True)
                    shown = time.monotonic()
                await asyncio.sleep(0.1)
            connect_s = time.monotonic() - started
            await asyncio.sleep(2 * 1.0)  # every quote computed and pushed once since the last connection
            frames_before, computed_before = sum(s.frames for s in subscribers), await _computations(trader)
            meter = CpuMeter(pids)
            meter.start()
            await asyncio.sleep(window_s)
            cpu = meter.stop()
            frames = sum(s.frames for s in subscribers) - frames_before
            computed = await _computations(trader) - computed_before
            step = {"subscribers": total, "subscribed": len(subscribed), "errors": sum(1 for s in subscribers if s.error),
                    "connectSeconds": round(connect_s, 1), "webCores": cpu.get("web0"), "clientCores": cpu.get("client"),
                    "machineBusyCores": cpu.get("machine busy"),
                    "framesPerSecond": round(frames / window_s), "computationsPerSecond": round(computed / window_s, 1),
                    **_push_figures([await _push(trader, subscribers, timeout, n % 2 == 0) for n in range(PUSHES)])}
            print(f"  quotes: {step}", flush=True)
            results.append(step)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client.close()
        trader.close()
    return {"steps": results}
