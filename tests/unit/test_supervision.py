"""Restart intensity: so many restarts in so many seconds, then escalate (as OTP supervisors do)."""
from __future__ import annotations

from actors.supervision import RestartIntensity


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_restarts_are_allowed_up_to_the_intensity_within_the_period():
    clock = Clock()
    intensity = RestartIntensity(max_restarts=3, period_s=10, clock=clock)
    assert [intensity.allow() for _ in range(4)] == [True, True, True, False]


def test_restarts_older_than_the_period_no_longer_count():
    clock = Clock()
    intensity = RestartIntensity(max_restarts=2, period_s=10, clock=clock)
    assert intensity.allow() and intensity.allow() and not intensity.allow()
    clock.now += 10.5
    assert intensity.allow()
