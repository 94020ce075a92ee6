"""The retry policy: which errors are worth another attempt, and how long to wait first.

Delays come from the backoff library's exponential wait generator with full jitter;
they are scheduled on the worker's timers, never slept (an actor in `time.sleep`
hears nothing, not even `stop()`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import backoff

# Venue error codes that no retry can fix: fail the order at once.
PERMANENT_ERRORS = frozenset({"insufficient_liquidity", "not_tradable", "no_route", "unknown_token"})


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` attempts; the n-th retry waits full-jitter(min(max_delay, base * 2**(n-1)))."""

    attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 5.0
    jitter: Callable[[float], float] = field(default=backoff.full_jitter, compare=False)

    def should_retry(self, attempt: int, retriable: bool) -> bool:
        """True when attempt `attempt` failed with a retriable error and attempts remain."""
        return retriable and attempt < self.attempts

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        value = exponential(attempt - 1, self.base_delay, self.max_delay) if attempt >= 1 else 0.0
        return self.jitter(value)


def exponential(index: int, factor: float, max_value: float) -> float:
    """The `index`-th (0-based) wait of backoff's exponential generator, without jitter:
    factor·2^index, at most `max_value`."""
    wait = backoff.expo(base=2, factor=factor, max_value=max_value)
    wait.send(None)  # backoff's generators are primed this way by its decorators
    value = next(wait)
    for _ in range(index):
        value = next(wait)
    return value


def seeded_jitter(seed: int) -> Callable[[float], float]:
    """A full-jitter function with its own RNG, for deterministic tests."""
    rng = random.Random(seed)
    return lambda value: rng.uniform(0, value)
