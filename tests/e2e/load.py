"""Load for the fault tests, driven like real clients would: orders each followed by a
WebSocket listener that reconnects with `after=` when its connection drops, and submits
that keep probing the engine while a server is down."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.e2e.cluster import TERMINAL, Client
from web.client.api import ClientError

SOL_USDC = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.5"}
RECONNECT_PAUSE_S = 0.2
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Connection:
    """One WebSocket connection of a follower: where, from which seq, what it got, how it ended."""

    port: int
    after: int
    frames: int = 0
    close_code: int | None = None
    error: str | None = None


class Follower:
    """Follows one order to its terminal event over `/ws?orderId=`, as a real client would.

    When a connection drops before the terminal event it reconnects with `after=<last seq
    received>`, to the next of `ports` in turn (the web processes behind a load balancer).
    `frames` is everything received over all connections, in arrival order: with the
    server's guarantees it is seq 1..n exactly once, ending terminal.
    """

    def __init__(self, order_id: str, ports: list[int], on_frame=lambda follower, frame: None):
        self.order_id = order_id
        self.ports = ports
        self.clients = {port: Client(port) for port in ports}  # only their WebSockets are used
        self.on_frame = on_frame
        self.frames: list[dict] = []
        self.connections: list[Connection] = []
        self.problems: list[str] = []

    @property
    def last_seq(self) -> int:
        return self.frames[-1]["seq"] if self.frames else 0

    @property
    def done(self) -> bool:
        return bool(self.frames) and self.frames[-1].get("status") in TERMINAL

    @property
    def resumed(self) -> bool:
        """Whether it reconnected after a drop and got events on the new connection."""
        return any(c.after > 0 and c.frames > 0 for c in self.connections)

    async def run(self, deadline: float) -> "Follower":
        """Follow until the terminal event or the deadline (time.monotonic()); never raises."""
        turn = 0
        while not self.done:
            if time.monotonic() >= deadline:
                self.problems.append(f"no terminal event by the deadline (last seq {self.last_seq})")
                return self
            port = self.ports[turn % len(self.ports)]
            conn = Connection(port, self.last_seq)
            self.connections.append(conn)
            await self._connection(conn, deadline)
            if conn.error == "error frame":
                return self
            if not self.done:
                if conn.close_code == 1000:
                    self.problems.append(f"the server closed the stream (1000) after seq {self.last_seq}, "
                                         "before a terminal event")
                turn += 1
                await asyncio.sleep(RECONNECT_PAUSE_S)
        return self

    async def _connection(self, conn: Connection, deadline: float) -> None:
        try:
            stream = await asyncio.wait_for(self.clients[conn.port].events(self.order_id, conn.after),
                                            max(0.1, min(CONNECT_TIMEOUT_S, deadline - time.monotonic())))
        except Exception as exc:  # refused, reset, a 5xx handshake, no answer in time
            conn.error = f"connect: {exc!r}"
            return
        with contextlib.closing(stream):
            try:
                while True:
                    frame = await asyncio.wait_for(stream.receive(), max(0.1, deadline - time.monotonic()))
                    if frame is None:
                        conn.close_code = stream.close_code
                        return
                    if frame.get("type") == "error":
                        self.problems.append(f"error frame after seq {conn.after}: {frame}")
                        conn.error = "error frame"
                        return
                    conn.frames += 1
                    self.frames.append(frame)
                    self.on_frame(self, frame)
            except asyncio.TimeoutError:
                conn.error = "deadline"


class Load:
    """Orders submitted to a web process, each with a Follower; counts the events they stream."""

    def __init__(self, client, ports: list[int]):
        self.client = client
        self.ports = ports
        self.followers: list[Follower] = []
        self.tasks: list[asyncio.Task] = []
        self.seen: Counter[str] = Counter()  # events streamed, by status
        self._changed = asyncio.Event()

    def _seen(self, follower: Follower, frame: dict) -> None:
        self.seen[frame.get("status")] += 1
        self._changed.set()

    async def submit(self, count: int, deadline: float, ports: list[int] | None = None) -> None:
        """Submit `count` orders (each must be accepted) and follow each one until `deadline`."""
        ports = ports or self.ports
        for n in range(count):
            code, body = await self.client.submit(**SOL_USDC)
            assert code == 202, (code, body)
            k = n % len(ports)  # the followers start on each web process in turn
            self.follow(body["orderId"], deadline, ports[k:] + ports[:k])

    def follow(self, order_id: str, deadline: float, ports: list[int] | None = None) -> Follower:
        """Follow an order accepted elsewhere (a probe's 202) like the others."""
        follower = Follower(order_id, ports or self.ports, self._seen)
        self.followers.append(follower)
        self.tasks.append(asyncio.ensure_future(follower.run(deadline)))
        return follower

    async def wait_for(self, status: str, count: int, timeout: float = 30) -> None:
        """Wait until the followers have streamed `count` events of `status` (e.g. 3 `confirmed`:
        the first orders are done, their successors are starting, the others are mid-swap)."""
        deadline = time.monotonic() + timeout
        while self.seen[status] < count:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {self.seen[status]} of {count} {status} events within {timeout}s")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def finish(self) -> list[Follower]:
        """Wait for every follower (each is bounded by its deadline)."""
        await asyncio.gather(*self.tasks)
        return self.followers


@dataclass
class Answer:
    """What one probing submit got: status code (599: no answer in time), error code, seconds."""

    code: int
    error: str | None
    order_id: str | None
    seconds: float


@dataclass
class SubmitProbe:
    """Submits one order every `every` seconds while running, each bounded by `timeout`: how the
    engine answers while a server is down (202 or 503 `not_ready` or `overloaded`, never a 500 or a hang)."""

    port: int
    every: float = 0.5
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)

    def start(self) -> "SubmitProbe":
        self._client = Client(self.port, timeout=self.timeout)
        self._stop = asyncio.Event()
        self._sends: list[asyncio.Task] = []
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._sends.append(asyncio.ensure_future(self._send()))
            try:
                await asyncio.wait_for(self._stop.wait(), self.every)
            except asyncio.TimeoutError:
                pass

    async def _send(self) -> None:
        started = time.monotonic()
        try:
            code, body = await self._client.submit(**SOL_USDC)
        except ClientError as exc:  # no answer in time, a refused connection, an unreadable answer
            self.answers.append(Answer(599, type(exc).__name__, None, time.monotonic() - started))
            return
        body = body if isinstance(body, dict) else {}
        error = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else None
        self.answers.append(Answer(code, error, body.get("orderId"), time.monotonic() - started))

    async def stop(self) -> list[Answer]:
        """Stop probing; wait for the answers still on their way (each bounded by `timeout`)."""
        self._stop.set()
        await self._task
        await asyncio.gather(*self._sends)
        self._client.close()
        return self.answers
