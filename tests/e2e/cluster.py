"""Real engine processes for end-to-end tests, and a small async client that talks to them
the way a user's program would: HTTP for orders, WebSocket for events."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"confirmed", "failed", "cancelled", "expired"}
LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineProcess:
    """One `engine <role>` process; its output goes to a log file kept for failures."""

    def __init__(self, role: str, env: dict, log_dir: Path, name: str | None = None):
        self.role = role
        self.name = name or role
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "EngineProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", self.role], cwd=REPO, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def run(self, timeout: float = 60) -> int:
        """Run to completion (for `migrate`)."""
        self.start()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 35) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_ready(port: int, proc: EngineProcess, timeout: float = 30) -> None:
    """Wait until /readyz answers 200 (or fail with the process log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} not ready after {timeout}s:\n{proc.log_text()[-4000:]}")


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
