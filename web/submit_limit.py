"""KEY_RATE_LIMIT: submissions per API key in any 60 s window, all web processes together.

A submission is counted when its headers arrive, before its body is read, so a flood of
junk is limited like valid orders. The count lives on the bus (a sorted set per key in
Redis, timed by Redis's clock), and the submits that arrive in one IOLoop turn share one
bus call, as the intake's orders share one transaction:

    IOLoop: admit -> Gatherer --take--> limiter thread: bus.try_submit (one round trip)
                      ^                                   |
                      +------- waits (one hop) -----------+
"""
from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

from storage.batching import Gatherer
from storage.bus import Bus
from web.errors import ApiError

WINDOW_S = 60.0
MAX_BATCH = 256
MAX_WAITING = 4096  # submits waiting for a count; beyond, 503 (the bus is stuck or slow)


def rate_limited(wait_s: float) -> ApiError:
    """The spec's 429, with the whole seconds until a submission is counted again."""
    seconds = max(1, math.ceil(wait_s))
    return ApiError(429, "rate_limited", f"too many submissions for this API key; retry in {seconds} s",
                    headers={"Retry-After": str(seconds)})


class SubmissionLimiter:
    """Counts each key's submissions on the bus, in batches; `admit` is called on the IOLoop thread."""

    def __init__(self, bus: Bus, limit: int, window_s: float = WINDOW_S):
        self._bus = bus
        self._limit = limit
        self._window_s = window_s
        self._gatherer: Gatherer[tuple[str, asyncio.Future]] = Gatherer(MAX_BATCH)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="web-limiter")

    async def admit(self, owner: str) -> None:
        """Count one submission of `owner`; raise the 429 when its window is full (BusError when
        the bus cannot count: the caller answers 503)."""
        if self._gatherer.waiting >= MAX_WAITING:
            raise ApiError(503, "not_ready", "too many submissions are waiting to be counted; retry later")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._gatherer.add((owner, future)):
            loop.call_soon(self._start)
        wait = await future
        if wait > 0:
            raise rate_limited(wait)

    def _start(self) -> None:
        batch = self._gatherer.take()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, self._bus.try_submit, [owner for owner, _ in batch],
                                    self._limit, self._window_s)
        work.add_done_callback(lambda done: self._finish(loop, batch, done))

    def _finish(self, loop, batch, done: asyncio.Future) -> None:
        """IOLoop thread: answer each submit of the batch, then start the next batch."""
        try:
            results: list = done.result()
        except Exception as exc:  # the bus failed the whole batch (BusError: Redis is down)
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._gatherer.done():
            loop.call_soon(self._start)

    def close(self) -> None:
        """Let the limiter thread go."""
        self._executor.shutdown(wait=False)
