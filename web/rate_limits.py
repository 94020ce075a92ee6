"""Per-caller rate limits: quotes, order lists, `subscribe` frames and WebSocket handshakes.

Each kind is counted per caller in its own sliding window on the bus (a Redis sorted set per
caller, timed by Redis's clock, so every web process counts against the same window; in
process with the embedded bus), like KEY_RATE_LIMIT's submissions: the requests of one kind
that arrive in one IOLoop turn share one bus call (`RequestLimiter`, a `LoopBatcher`).

The caller is its API key's owner id where keys are configured, else its address: the TCP
peer's (`request.remote_ip`; the server runs without xheaders), or with TRUSTED_PROXY_HOPS=N
the address the N-th proxy from the engine appended to X-Forwarded-For (what is left of it
anyone could have written). IPv6 addresses count by their /64, which one client holds whole.

Everything here runs on the IOLoop thread but the bus calls (the batcher's thread).
"""
from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from typing import Any

from tornado.httputil import HTTPServerRequest

from config import Settings
from storage.bus import Bus
from web.errors import ApiError
from web.loop_batches import LoopBatcher

MAX_BATCH = 256
MAX_WAITING = 4096  # requests of one kind waiting for a count; beyond, 503 (the bus is stuck or slow)
MAX_ADDRESS = 64  # characters of an address kept as a caller (a header's entry may be longer)
# A caller's requests are counted on the bus in leases of 1/LEASE_SHARE of the limit (at least
# one): one bus call counts a lease, the web process spends it locally within the window it was
# counted in. A limit of 6,000 WebSocket handshakes costs one bus call per 60 of them instead of
# one per IOLoop turn (measured: ~0.05 ms of CPU per handshake in the throughput bench, one
# WebSocket per order). The price: tokens a process leased and did not spend count against the
# caller until their window ends, and leftovers spent in the next window are not in its count,
# so all processes together may admit up to LEASE_SHARE-th of the limit more per web process in
# a window. A limit under LEASE_SHARE leases one at a time: exact, as before.
LEASE_SHARE = 100


class RateLimited(ApiError):
    """The spec's 429 with `Retry-After`; its error object carries `retryAfter` (seconds) too,
    for a WebSocket's error frame, which has no headers."""

    def __init__(self, wait_s: float, what: str):
        self.retry_after = max(1, math.ceil(wait_s))
        super().__init__(429, "rate_limited", f"too many {what}; retry in {self.retry_after} s",
                         headers={"Retry-After": str(self.retry_after)})

    def to_api(self) -> dict[str, Any]:
        return {**super().to_api(), "retryAfter": self.retry_after}


def rate_limited(wait_s: float, what: str = "submissions for this API key") -> RateLimited:
    """The 429 for a caller whose window of `what` is full for `wait_s` more seconds."""
    return RateLimited(wait_s, what)


class RequestLimiter:
    """Counts one kind of request per caller on the bus, in leases, in batches; `admit` is
    called on the IOLoop thread."""

    def __init__(self, bus: Bus, kind: str, limit: int, window_s: float, what: str,
                 clock=time.monotonic, exact: bool = False):
        self._bus = bus
        self._kind = kind
        self._limit = limit
        self._window_s = window_s
        self._what = what
        self._clock = clock
        self.lease = 1 if exact else max(1, limit // LEASE_SHARE)  # exact: each request counted alone
        self._held: dict[str, tuple[int, float]] = {}  # caller -> (tokens left, spendable until)
        self._counting: dict[str, asyncio.Future] = {}  # caller -> its lease being counted
        self._batches: LoopBatcher[str, tuple[int, float]] = LoopBatcher(
            self._count, f"web-limit-{kind.rsplit(':', 1)[-1]}", MAX_BATCH, MAX_WAITING)

    async def admit(self, caller: str, whose: str = "") -> None:
        """Count one request of `caller`; raise the 429 (naming what, and `whose`) when its window
        is full (BusError when the bus cannot count: the caller answers 503). The requests of a
        caller that arrive while its lease is being counted wait for that lease and share it."""
        if self.lease == 1:  # exact: every request is its own count, batched per loop turn
            granted, wait = await self._batches.submit(caller)
            if granted == 0:
                raise rate_limited(wait, f"{self._what}{whose}")
            return
        while True:
            now = self._clock()
            held = self._held.get(caller)
            if held is not None and held[0] > 0 and now < held[1]:
                self._held[caller] = (held[0] - 1, held[1])
                return
            counting = self._counting.get(caller)
            if counting is None:
                break
            await counting  # another request of this caller is leasing: share its lease
        done = self._counting[caller] = asyncio.get_running_loop().create_future()
        try:
            granted, wait = await self._batches.submit(caller)
        finally:
            del self._counting[caller]
            done.set_result(None)
        if granted == 0:
            raise rate_limited(wait, f"{self._what}{whose}")
        # Counted on the bus no earlier than `now`: spendable until that window ends.
        self._held[caller] = (granted - 1, now + self._window_s)
        if len(self._held) > MAX_WAITING:
            self._forget_spent(now)

    def _forget_spent(self, now: float) -> None:
        for caller, (left, until) in list(self._held.items()):
            if left <= 0 or until <= now:
                del self._held[caller]

    def _count(self, callers: list[str]) -> list[tuple[int, float]]:
        """Limiter thread: count a lease per request of the batch in one bus call; for each, the
        tokens granted and (none granted) the wait."""
        waits = self._bus.try_submit([c for c in callers for _ in range(self.lease)], self._limit, self._window_s,
                                     self._kind)
        results = []
        for i in range(len(callers)):
            mine = waits[i * self.lease:(i + 1) * self.lease]
            granted = sum(1 for w in mine if w <= 0)
            results.append((granted, 0.0 if granted else min(mine)))
        return results

    def close(self) -> None:
        """Let the limiter thread go."""
        self._batches.close()


# kind -> (the setting's field, what the 429 says is too many)
KINDS = {
    "quotes": ("quote_rate_limit", "quote requests"),
    "lists": ("list_rate_limit", "order list requests"),
    "subscribes": ("subscribe_rate_limit", "subscribe frames"),
    "connects": ("connect_rate_limit", "WebSocket connections"),
}


class CallerLimits:
    """QUOTE_RATE_LIMIT, LIST_RATE_LIMIT, SUBSCRIBE_RATE_LIMIT and CONNECT_RATE_LIMIT: a limiter
    per kind that is on (a limit of 0 is off), each caller counted per key or per address."""

    def __init__(self, bus: Bus, settings: Settings, keyed: bool):
        self._keyed = keyed
        self._proxy_hops = settings.trusted_proxy_hops
        self._limiters = {kind: RequestLimiter(bus, f"rate:{kind}", getattr(settings, field), settings.rate_window_s,
                                               what)
                          for kind, (field, what) in KINDS.items() if getattr(settings, field) > 0}

    async def admit(self, kind: str, request: HTTPServerRequest, owner: str | None) -> None:
        """Count one request of `kind` by its caller (`owner` where keys are configured, else
        the request's address); raise the 429 when the caller's window is full."""
        limiter = self._limiters.get(kind)
        if limiter is None:
            return
        if self._keyed:
            await limiter.admit(owner or "", " for this API key")
        else:
            await limiter.admit(client_address(request, self._proxy_hops), " from this address")

    def close(self) -> None:
        """Let every limiter's thread go."""
        for limiter in self._limiters.values():
            limiter.close()


def client_address(request: HTTPServerRequest, proxy_hops: int = 0) -> str:
    """The address a per-address limit counts: the peer's, or with `proxy_hops` trusted proxies
    the entry the farthest of them appended to X-Forwarded-For (the peer's when the header has
    fewer entries: the request did not come through them all). An IPv6 address counts by /64."""
    address = request.remote_ip or ""
    if proxy_hops:
        entries = [e.strip() for value in request.headers.get_list("X-Forwarded-For") for e in value.split(",")]
        entries = [e for e in entries if e]
        if len(entries) >= proxy_hops:
            address = entries[-proxy_hops][:MAX_ADDRESS]
    if ":" in address:
        try:
            ip = ipaddress.IPv6Address(address.strip("[]"))
        except ValueError:
            return address
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address
