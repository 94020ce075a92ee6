"""The engine's own client (web.client) as the end-to-end tests use it, on one web process,
and checks of what it receives. The processes themselves are started with bench.cluster's
EngineProcess, shared with the benchmark."""
from __future__ import annotations

import asyncio
import json
import time

from web.client.aio import AsyncEngineClient
from web.client.api import TERMINAL, EngineClient

LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]


class Client(AsyncEngineClient):
    """The engine's asyncio client on 127.0.0.1:port with `raise_error=False`, as the tests
    read it: every call (`request`, `submit(**order)`, `order(id)`, ...) gives its Answer,
    `(status, body)`, refusals included; `listen` collects a stream's frames."""

    def __init__(self, port: int, api_key: str | None = None, timeout: float = 30):
        super().__init__(f"http://127.0.0.1:{port}", api_key, timeout, raise_error=False)

    @property
    def base(self) -> str:
        """The engine's HTTP URL (the name the tests use)."""
        return self.url

    async def listen(self, path: str, timeout: float = 60):
        """The frames of a stream until the server closes it, and its close code."""
        frames = []
        async with await self.connect(path) as stream:
            try:
                async with asyncio.timeout(timeout):
                    async for frame in stream:
                        frames.append(frame)
            except TimeoutError:
                raise AssertionError(f"stream {path} still open after {timeout}s; got {frames}") from None
        return frames, stream.close_code


def assert_complete_lifecycle(events: list[dict], final: str = "confirmed") -> None:
    """seq 1..n without a gap, statuses down the lifecycle, one terminal at the end."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
    assert events[-1]["status"] == final, events
    assert all(e["status"] not in TERMINAL for e in events[:-1]), events
    if final == "confirmed" and all(e["attempt"] == 1 for e in events):
        assert [e["status"] for e in events] == LIFECYCLE


def fetch(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 30):
    """One blocking request to 127.0.0.1:port, as the engine's client builds it (a dict body as
    JSON; `headers` replace its own): (status, headers, raw body bytes)."""
    answer = EngineClient(f"http://127.0.0.1:{port}", timeout=timeout).request(method, path, body, headers)
    return answer.status, answer.headers, answer.raw


async def until(probe, timeout: float, what: str, pause: float = 0.1):
    """Await `probe()` (a coroutine function) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(pause)
    raise AssertionError(f"timed out waiting for {what}")


def wait_terminal(port: int, order_id: str, timeout: float = 30) -> dict:
    """Poll GET /api/orders/ID until the order is terminal; return it."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = fetch(port, "GET", f"/api/orders/{order_id}")
        order = json.loads(body)
        if status == 200 and order["status"] in TERMINAL:
            return order
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} not terminal after {timeout}s: {order}")
        time.sleep(0.05)


# Settings for the tests where a worker dies or stalls: its heartbeat lapses within 3 s (not
# the production 10) and the survivors look for its jobs twice a second (not every 5 s).
FAST_FAILOVER = {"HEARTBEAT_TTL_SECONDS": "3", "CLAIM_INTERVAL_SECONDS": "0.5"}


def took_over(log_text: str, order_id: str) -> bool:
    """True when a worker's log says it took over the job of `order_id` from a dead worker."""
    return f"(order {order_id}) from a dead worker" in log_text


# Settings for the tests with armed trigger orders: the book prices them every 250 ms, not
# every 50, while they wait (for a push, a takeover, a halt's end: seconds). A test waits on
# the order firing, never on how soon: a crossing is seen at the next tick all the same.
SLOW_TICK = {"TRIGGER_TICK_MS": "250"}
