"""A small async client that talks to engine processes the way a user's program would
(HTTP for orders, WebSocket for events), and checks of what it receives. The processes
themselves are started with bench.cluster's EngineProcess, shared with the benchmark."""
from __future__ import annotations

import asyncio
import http.client
import json
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

TERMINAL = {"confirmed", "failed", "cancelled", "expired"}
LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]


class Client:
    """An HTTP + WebSocket client of one web process."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        self.http = AsyncHTTPClient(force_instance=True, defaults={"request_timeout": 30})

    async def request(self, method: str, path: str, body=None, headers=None):
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if method == "POST" and data is None:
            data = b""
        response = await self.http.fetch(HTTPRequest(self.base + path, method=method, body=data, headers=hdrs),
                                         raise_error=False)
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text else None)

    async def submit(self, **order):
        return await self.request("POST", "/api/orders/execute", order)

    async def order(self, order_id: str):
        return await self.request("GET", f"/api/orders/{order_id}")

    async def listen(self, path: str, timeout: float = 60):
        """Collect the frames of an order stream until the server closes it."""
        conn = await websocket_connect(self.ws_base + path)
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                conn.close()
                raise AssertionError(f"stream {path} still open after {timeout}s; got {frames}")
            msg = await asyncio.wait_for(conn.read_message(), left)
            if msg is None:
                return frames, conn.close_code
            frames.append(json.loads(msg))

    def close(self):
        self.http.close()


def assert_complete_lifecycle(events: list[dict], final: str = "confirmed") -> None:
    """seq 1..n without a gap, statuses down the lifecycle, one terminal at the end."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
    assert events[-1]["status"] == final, events
    assert all(e["status"] not in TERMINAL for e in events[:-1]), events
    if final == "confirmed" and all(e["attempt"] == 1 for e in events):
        assert [e["status"] for e in events] == LIFECYCLE


def fetch(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 30):
    """One blocking HTTP request to 127.0.0.1:port: (status, headers, raw body bytes).

    A dict body is sent as JSON (with its Content-Type unless `headers` names one).
    """
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        if response.status == 101:  # a WebSocket handshake: there is no body to read
            return response.status, dict(response.getheaders()), b""
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


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
