"""A light load client on one asyncio loop: keep-alive HTTP/1.1 connections for submits
and tornado WebSocket listeners, one per order, as the API's users do."""
from __future__ import annotations

import asyncio
import json
import socket
import time

from tornado.netutil import Resolver
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from bench.cluster import BenchError

TERMINAL = {"confirmed", "failed", "cancelled", "expired"}

# The API key every request carries (`python -m bench.run --keys`), None for an open engine.
API_KEY: str | None = None


class HttpError(BenchError):
    """The server answered something the bench did not expect."""


class _Connection:
    """One keep-alive HTTP/1.1 connection (reopened when the server closes it)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        auth = f"Authorization: Bearer {API_KEY}\r\n" if API_KEY else ""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body or b'')}\r\n\r\n").encode()
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(head + (body or b""))
            return await self._response()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        # A kept-alive connection the server had closed while idle: once more on a new one.
        # (A duplicate order this could cause would show in the database check.)
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(head + (body or b""))
        return await self._response()

    async def _response(self) -> tuple[int, bytes]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        code = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in headers:
            raise HttpError(f"response without Content-Length: {lines[0]}")
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return code, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpPool:
    """At most `size` requests in flight, each on a reused keep-alive connection."""

    def __init__(self, port: int, size: int):
        self.idle = [_Connection("127.0.0.1", port) for _ in range(size)]
        self.free = asyncio.Semaphore(size)

    async def request(self, method: str, path: str, payload=None) -> tuple[int, object, float, float]:
        """(status, parsed body, sent_at, answered_at): times from time.monotonic(), taken
        once a connection is free, so waiting for one does not count as server time."""
        body = None if payload is None else json.dumps(payload).encode()
        async with self.free:
            conn = self.idle.pop()
            try:
                sent_at = time.monotonic()
                code, raw = await conn.request(method, path, body)
                answered_at = time.monotonic()
            finally:
                self.idle.append(conn)
        return code, (json.loads(raw) if raw else None), sent_at, answered_at

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


class Stream:
    """What one WebSocket listener of one order saw."""

    def __init__(self):
        self.frames: list[dict] = []
        self.confirmed_at: float | None = None  # time.monotonic() when the `confirmed` frame arrived
        self.close_code: int | None = None
        self.error: str | None = None

    @property
    def complete(self) -> bool:
        """seq 1..n without a gap or a repeat, ending on a terminal status, closed normally."""
        return (self.error is None and bool(self.frames)
                and [f.get("seq") for f in self.frames] == list(range(1, len(self.frames) + 1))
                and self.frames[-1].get("status") in TERMINAL
                and all(f.get("status") not in TERMINAL for f in self.frames[:-1]))


class LoopbackResolver(Resolver):
    """Resolves the literal 127.0.0.1 without tornado's default thread-pool getaddrinfo,
    which would cost the client a thread hand-off per WebSocket it opens."""

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC):
        if host != "127.0.0.1":
            raise ValueError(f"the bench only talks to 127.0.0.1, not {host}")
        return [(socket.AF_INET, (host, port))]


_RESOLVER = LoopbackResolver()


async def listen(port: int, ws_path: str, timeout: float) -> Stream:
    """Follow one order's stream until the server closes it (or `timeout` passes).

    One deadline for the whole stream rather than a timer per frame: the client shares
    the machine's cores with the server, so it keeps its own work small.
    """
    stream = Stream()
    conn = None
    try:
        async with asyncio.timeout(timeout):
            url = f"ws://127.0.0.1:{port}{ws_path}"
            headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
            conn = await websocket_connect(HTTPRequest(url, headers=headers), resolver=_RESOLVER)
            while True:
                msg = await conn.read_message()
                if msg is None:
                    stream.close_code = conn.close_code
                    break
                frame = json.loads(msg)
                stream.frames.append(frame)
                if frame.get("status") == "confirmed":
                    stream.confirmed_at = time.monotonic()
    except TimeoutError:
        stream.error = f"still open after {timeout}s"
    except Exception as exc:  # noqa: BLE001 - reported per stream, counted as incomplete
        stream.error = repr(exc)
    finally:
        if conn is not None:
            conn.close()
    return stream


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]
