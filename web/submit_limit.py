"""KEY_RATE_LIMIT: submissions per API key in any 60 s window, all web processes together.

A submission is counted when its headers arrive, before its body is read, so a flood of
junk is limited like valid orders. The count lives on the bus (a sorted set per key in
Redis, timed by Redis's clock), and the submits that arrive in one IOLoop turn share one
bus call, as the other per-caller limits do (`web.rate_limits.RequestLimiter`).
"""
from __future__ import annotations

from storage.bus import Bus
from web.rate_limits import RequestLimiter, rate_limited

__all__ = ["SubmissionLimiter", "rate_limited"]

WINDOW_S = 60.0


class SubmissionLimiter(RequestLimiter):
    """Counts each key's submissions on the bus, in batches; `admit` is called on the IOLoop thread."""

    def __init__(self, bus: Bus, limit: int, window_s: float = WINDOW_S):
        # Exact, as the spec states it: every submission counted on the bus, never leased.
        super().__init__(bus, "submits", limit, window_s, "submissions", exact=True)

    async def admit(self, owner: str, whose: str = " for this API key") -> None:
        """Count one submission of `owner`; raise the 429 when its window is full (BusError when
        the bus cannot count: the caller answers 503)."""
        await super().admit(owner, whose)
