"""The venue circuit breaker's bookkeeping, on a clock the test moves."""
from actors.circuit_breaker import MIN_SWAPS, WINDOW, CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_venue_failing_most_of_its_recent_swaps_is_skipped_for_the_cool_down_then_tried_again():
    clock = Clock()
    breaker = CircuitBreaker(30.0, clock)
    for _ in range(MIN_SWAPS - 1):
        breaker.record("failed", "transient")
    assert breaker.refusal() is None, "too few swaps to judge"
    breaker.record("timeout")
    assert "most of its recent swaps failed" in breaker.refusal()
    clock.now = 29.0
    assert breaker.refusal() is not None
    clock.now = 30.0
    assert breaker.refusal() is None, "the cool-down is over: tried again"
    breaker.record("failed", "transient")
    assert breaker.refusal() is None, "a fresh window: one failure does not open it again"


def test_a_venue_that_fails_half_or_less_of_its_swaps_stays_in_use():
    breaker = CircuitBreaker(30.0, Clock())
    for n in range(WINDOW * 3):
        breaker.record("failed" if n % 2 else "confirmed", "transient")
    assert breaker.refusal() is None


def test_a_swap_refused_for_slippage_says_nothing_about_the_venue():
    breaker = CircuitBreaker(30.0, Clock())
    for _ in range(WINDOW):
        breaker.record("failed", "slippage_exceeded")
    assert breaker.refusal() is None
