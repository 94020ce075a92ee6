"""Kept-alive HTTP/1.1 connections for the asyncio client, when it is asked for them.

tornado's AsyncHTTPClient opens a connection per request. A program that sends many (the
benchmark's load client, above all, whose own CPU is the server's loss on a shared
machine) gives `AsyncEngineClient(..., connections=N)` a pool of N connections instead,
each reused for request after request. The engine answers with a Content-Length, which is
all this reads; anything else is an UnexpectedAnswer.
"""
from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from web.client.api import Call, UnexpectedAnswer


class _Connection:
    """One keep-alive HTTP/1.1 connection, opened again when the server has closed it."""

    def __init__(self, host: str, port: int, tls: bool):
        self.host, self.port, self.tls = host, port, tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes, dict[str, str], float]:
        """Send one request, read its answer: (status, body, headers, sent_at)."""
        reused = self.writer is not None
        if not reused:
            await self._open()
        try:
            sent_at = time.monotonic()
            self.writer.write(request)
            return (*await self._response(), sent_at)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        # A kept-alive connection the server closed while it was idle: once more on a new one.
        # (The request may have reached the server: a submit with a clientOrderId is safe to repeat.)
        await self._open()
        sent_at = time.monotonic()
        self.writer.write(request)
        return (*await self._response(), sent_at)

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls or None)

    async def _response(self) -> tuple[int, bytes, dict[str, str]]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
        lower = {name.lower(): value for name, value in headers.items()}
        if "content-length" not in lower:
            self.close()
            raise UnexpectedAnswer(f"an answer without Content-Length: {head[0]}")
        body = await self.reader.readexactly(int(lower["content-length"]))
        if lower.get("connection", "").lower() == "close":
            self.close()
        return status, body, headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class KeepAlivePool:
    """At most `size` requests in flight to one engine, each on a reused connection."""

    def __init__(self, url: str, size: int):
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        self.authority = parts.netloc
        self.idle = [_Connection(parts.hostname, parts.port or (443 if tls else 80), tls) for _ in range(size)]
        self.free = asyncio.Semaphore(size)

    async def exchange(self, call: Call) -> tuple[int, bytes, dict[str, str], float, float]:
        """(status, body, headers, sent_at, answered_at): the times are taken once a connection
        is free, so waiting for one does not count as the engine's time."""
        head = "".join(f"{name}: {value}\r\n" for name, value in call.headers.items())
        body = call.body or b""
        request = (f"{call.method} {call.path} HTTP/1.1\r\nHost: {self.authority}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        async with self.free:
            conn = self.idle.pop()
            try:
                status, raw, headers, sent_at = await conn.exchange(request)
                return status, raw, headers, sent_at, time.monotonic()
            finally:
                self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
