"""The engine's asyncio client: the methods of `web.client.api.EngineClient`, awaited, and
the WebSocket streams of orders.

    async with AsyncEngineClient("http://localhost:8000") as client:
        accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1.5")
        async for event in client.follow(accepted["orderId"]):
            print(event["seq"], event["status"])

Requests go through tornado's AsyncHTTPClient (a connection per request), or, with
`connections=N`, over N kept-alive connections (`web.client.keepalive`). Building the
requests and reading the answers is `web.client.api`'s, shared with the blocking client.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from typing import Any, AsyncIterator

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.netutil import Resolver
from tornado.websocket import WebSocketClientConnection, websocket_connect

from web.client.api import (TERMINAL, TIMEOUT_S, Answer, Endpoints, EngineUnreachable, RequestRefused,
                            build_call, frame_refusal, order_stream_path, read_answer, read_frame, refusal)
from web.client.keepalive import KeepAlivePool

RECONNECTS = 5  # failed connections in a row, without an event in between, before `follow` gives up
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)


class _AddressResolver(Resolver):
    """An IP address as it is; a name through tornado's default resolver. The default's
    getaddrinfo runs on a thread pool: a thread hand-off per connection, even for 127.0.0.1."""

    _names: Resolver | None = None

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if _AddressResolver._names is None:
                _AddressResolver._names = Resolver()
            return await _AddressResolver._names.resolve(host, port, family)
        return [(socket.AF_INET6 if address.version == 6 else socket.AF_INET, (host, port))]


_RESOLVER = _AddressResolver()


class Stream:
    """One WebSocket of the API: its frames, parsed, until the server closes it (`async for`)."""

    def __init__(self, conn: WebSocketClientConnection):
        self.conn = conn

    async def receive(self) -> dict | None:
        """The next frame; None once the server has closed the stream."""
        message = await self.conn.read_message()
        return None if message is None else read_frame(message)

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> dict:
        frame = await self.receive()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def send(self, frame: dict) -> None:
        """Send one JSON frame (`{"subscribe": ID}`, a submit's order)."""
        await self.conn.write_message(json.dumps(frame))

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    @property
    def close_reason(self) -> str | None:
        return self.conn.close_reason

    def close(self) -> None:
        self.conn.close()

    async def __aenter__(self) -> "Stream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class AsyncEngineClient(Endpoints):
    """The asyncio client: every typed method is awaited; `request` is the raw call."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = TIMEOUT_S,
                 raise_error: bool = True, connections: int | None = None):
        super().__init__(url, api_key, timeout, raise_error)
        self._pool = KeepAlivePool(self.url, connections) if connections else None
        self._http: AsyncHTTPClient | None = None

    @property
    def ws_base(self) -> str:
        """The WebSocket form of the engine's URL."""
        return "ws" + self.url[len("http"):]

    @property
    def http(self) -> AsyncHTTPClient:
        """This client's own tornado AsyncHTTPClient (made on first use)."""
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True, resolver=_RESOLVER)
        return self._http

    async def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        """One raw call: its Answer whatever the status; EngineUnreachable when none came."""
        call = build_call(method, path, body, headers, self.api_key)
        try:
            if self._pool is not None:
                return read_answer(*await self._pool.exchange(call))
            sent_at = time.monotonic()
            response = await self.http.fetch(HTTPRequest(
                self.url + call.path, method=call.method, body=call.body, headers=call.headers,
                connect_timeout=self.timeout, request_timeout=self.timeout, follow_redirects=False,
                allow_nonstandard_methods=True), raise_error=False)
        except (OSError, HTTPClientError, asyncio.IncompleteReadError) as exc:  # 599: no answer in time
            raise EngineUnreachable(f"cannot reach the engine at {self.url}: {exc!r}") from None
        return read_answer(response.code, response.body or b"", dict(response.headers.get_all()),
                           sent_at, time.monotonic())

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._settle(await self.request(method, path, body))

    async def connect(self, path: str, headers: dict[str, str] | None = None) -> Stream:
        """Open a WebSocket (`/ws...`, `/api/orders/execute`) with the key; a refused handshake
        raises RequestRefused, no answer EngineUnreachable."""
        call = build_call("GET", path, None, headers, self.api_key)
        request = HTTPRequest(self.ws_base + call.path, headers=call.headers, connect_timeout=self.timeout,
                              request_timeout=self.timeout)
        try:
            return Stream(await websocket_connect(request, resolver=_RESOLVER))
        except HTTPClientError as exc:
            if exc.code == 599:
                raise EngineUnreachable(f"cannot open {path} at {self.url}: {exc}") from None
            raw = exc.response.body if exc.response is not None and exc.response.body else b""
            answer = read_answer(exc.code, raw)
            retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            raise refusal(exc.code, answer.body, raw or f"the WebSocket handshake was refused ({exc.code})".encode(),
                          retry_after) from None
        except OSError as exc:
            raise EngineUnreachable(f"cannot open {path} at {self.url}: {exc!r}") from None

    async def events(self, order_id: str, after: int = 0) -> Stream:
        """One connection to the order's stream: its events after `after` (all from seq 1 by
        default), then the live ones, until the server closes it after the terminal one."""
        return await self.connect(order_stream_path(order_id, after))

    async def follow(self, order_id: str, after: int = 0) -> AsyncIterator[dict]:
        """Every event of the order after `after`, once each and in `seq` order, until the
        terminal one: a dropped stream (a web process restarting) is resumed after the last
        event seen. An error frame raises RequestRefused; a stream that cannot be resumed
        (RECONNECTS failures in a row) EngineUnreachable."""
        last, failures = after, 0
        while True:
            try:
                async with await self.events(order_id, last) as stream:
                    async for frame in stream:
                        if frame.get("type") == "error":
                            raise frame_refusal(frame)
                        if frame.get("seq", 0) <= last:
                            continue
                        last, failures = frame["seq"], 0
                        yield frame
                        if frame.get("status") in TERMINAL:
                            return
                    reason: Any = f"the stream closed ({stream.close_code} {stream.close_reason or ''})".strip()
            except RequestRefused as exc:
                if not exc.retryable:
                    raise
                reason = exc
            except EngineUnreachable as exc:
                reason = exc
            failures += 1
            await _back_off(failures, f"the event stream of order {order_id}", reason)

    async def watch_quote(self, token_in: str, token_out: str, amount: Any,
                          slippage_bps: int | None = None) -> AsyncIterator[dict]:
        """The quote's frames as the engine streams them (`subscribeQuote` on `/ws`): each a
        `quote` frame (the body of GET /api/quote) or an `error` frame of the subscription (no
        venue can fill it now), each only when it changed; endless. A refused subscription raises
        RequestRefused; a dropped stream is opened and subscribed again (RECONNECTS failures in a
        row: EngineUnreachable)."""
        command = {"action": "subscribeQuote", "tokenIn": token_in, "tokenOut": token_out, "amount": str(amount)}
        if slippage_bps is not None:
            command["slippageBps"] = slippage_bps
        failures = 0
        while True:
            try:
                async with await self.connect("/ws") as stream:
                    await stream.send(command)
                    subscription = None
                    async for frame in stream:
                        kind = frame.get("type")
                        if kind == "quoteSubscribed" and subscription is None:
                            subscription = frame["subscriptionId"]
                        elif kind == "error" and subscription is None:
                            raise frame_refusal(frame)
                        elif kind in ("quote", "error") and frame.get("subscriptionId") == subscription:
                            failures = 0
                            yield frame
                    reason: Any = f"the stream closed ({stream.close_code} {stream.close_reason or ''})".strip()
            except RequestRefused as exc:
                if not exc.retryable:
                    raise
                reason = exc
            except EngineUnreachable as exc:
                reason = exc
            failures += 1
            await _back_off(failures, "the quote stream", reason)

    def close(self) -> None:
        """Close the connections this client holds (its WebSockets are the caller's to close)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._pool is not None:
            self._pool.close()

    async def __aenter__(self) -> "AsyncEngineClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


async def _back_off(failures: int, stream: str, reason: Any) -> None:
    """Wait before opening a dropped stream again; past RECONNECTS failures in a row, give up."""
    if failures > RECONNECTS:
        raise EngineUnreachable(f"lost {stream}: {reason}")
    await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
