"""A venue's circuit breaker: a venue that fails most of its recent swaps is skipped for a while.

The VenueGateway records each swap's outcome here and asks before quoting: while the breaker
is open the venue answers every quote with `circuit_open`, so orders route to the other
venue (the refusal is in their `routing` event, and on /metrics). After the cool-down the
breaker closes with an empty window: the venue is tried again and must fail most of a fresh
window to be skipped again. Only failures that say something about the venue count (a swap
it failed, or whose outcome it left unknown); a swap refused for slippage says the market
moved. Each worker keeps its own breakers: pure bookkeeping, no actor, no storage.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

WINDOW = 20  # the recent swaps judged
MIN_SWAPS = 10  # fewer than this judge nothing
FAILING_SHARE = 0.5  # more than this share failed: open
VENUE_FAULTS = frozenset({"transient", "expired", "swap_failed", "venue_unavailable", "venue_timeout",
                          "transaction_expired"})


class CircuitBreaker:
    """Open (skip the venue) for `cool_down_s` once most of its last WINDOW swaps failed."""

    def __init__(self, cool_down_s: float, clock: Callable[[], float] = time.monotonic):
        self.cool_down_s = cool_down_s
        self.clock = clock
        self.outcomes: deque[bool] = deque(maxlen=WINDOW)  # True: the swap failed through the venue
        self.open_until: float | None = None

    def record(self, status: str, error_code: str | None = None) -> None:
        """A swap's outcome: `confirmed`, `failed` (with its code) or `timeout` (unknown)."""
        if status == "failed" and error_code not in VENUE_FAULTS:
            return
        self.outcomes.append(status != "confirmed")
        if self.open_until is None and len(self.outcomes) >= MIN_SWAPS \
                and sum(self.outcomes) > FAILING_SHARE * len(self.outcomes):
            self.open_until = self.clock() + self.cool_down_s

    def refusal(self) -> str | None:
        """Why the venue is skipped now; None when it may be used (the cool-down over, it closes)."""
        if self.open_until is None:
            return None
        left = self.open_until - self.clock()
        if left <= 0:
            self.open_until = None
            self.outcomes.clear()
            return None
        return f"most of its recent swaps failed; skipped for {left:.0f} s more"
