"""KEY_RATE_LIMIT: submissions per API key in any 60 s window, all web processes together.

A submission is counted when its headers arrive, before its body is read, so a flood of
junk is limited like valid orders. The count lives on the bus (a sorted set per key in
Redis, timed by Redis's clock), and the submits that arrive in one IOLoop turn share one
bus call (`web.loop_batches.LoopBatcher`), as the intake's orders share one transaction.
"""
from __future__ import annotations

import math

from storage.bus import Bus
from web.errors import ApiError
from web.loop_batches import LoopBatcher

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
        self._batches: LoopBatcher[str, float] = LoopBatcher(self._count, "web-limiter", MAX_BATCH, MAX_WAITING)

    async def admit(self, owner: str) -> None:
        """Count one submission of `owner`; raise the 429 when its window is full (BusError when
        the bus cannot count: the caller answers 503)."""
        wait = await self._batches.submit(owner)
        if wait > 0:
            raise rate_limited(wait)

    def _count(self, owners: list[str]) -> list[float]:
        """Limiter thread: count a batch of submissions in one bus call."""
        return self._bus.try_submit(owners, self._limit, self._window_s)

    def close(self) -> None:
        """Let the limiter thread go."""
        self._batches.close()
