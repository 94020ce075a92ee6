"""Per-caller limits counted in leases (web/rate_limits.py): a caller's requests cost one bus
call per lease, never pass the limit within a lease's window, and a lease's tokens are not
spent after the window they were counted in."""
from __future__ import annotations

import asyncio

import pytest

from storage.bus_memory import InProcessBus
from web.rate_limits import RateLimited, RequestLimiter


def test_requests_are_counted_a_lease_at_a_time_and_the_limit_holds():
    now = [0.0]
    bus = InProcessBus(clock=lambda: now[0])
    calls = []
    counted = bus.try_submit
    bus.try_submit = lambda owners, *args: calls.append(len(owners)) or counted(owners, *args)

    async def scenario():
        limiter = RequestLimiter(bus, "rate:connects", 300, 60.0, "WebSocket connections", clock=lambda: now[0])
        assert limiter.lease == 3
        for _ in range(300):
            await limiter.admit("10.0.0.1")
        with pytest.raises(RateLimited) as refused:
            await limiter.admit("10.0.0.1")
        assert refused.value.retry_after == 60
        await limiter.admit("10.0.0.2")  # another caller's own window
        now[0] = 30.0
        with pytest.raises(RateLimited):
            await limiter.admit("10.0.0.1")
        now[0] = 60.5  # the window moved past every token: a fresh lease
        await limiter.admit("10.0.0.1")
        limiter.close()

    asyncio.run(scenario())
    assert calls[:100] == [3] * 100  # 300 requests: 100 bus calls of a lease of 3
    assert len(calls) <= 105


def test_tokens_left_are_not_spent_after_the_window_they_were_counted_in():
    now = [0.0]
    bus = InProcessBus(clock=lambda: now[0])

    async def scenario():
        limiter = RequestLimiter(bus, "rate:quotes", 200, 10.0, "quote requests", clock=lambda: now[0])
        await limiter.admit("a")  # leases 2, spends 1
        calls = []
        counted = bus.try_submit
        bus.try_submit = lambda owners, *args: calls.append(len(owners)) or counted(owners, *args)
        now[0] = 5.0
        await limiter.admit("a")  # the second token, within its window: no bus call
        assert calls == []
        await limiter.admit("a")  # none left: a new lease
        now[0] = 16.0
        await limiter.admit("a")  # one left, but its window (from t=5) ended: a new lease
        assert calls == [2, 2]
        limiter.close()

    asyncio.run(scenario())


def test_a_limit_under_the_lease_share_and_submissions_count_every_request_alone():
    from web.submit_limit import SubmissionLimiter

    bus = InProcessBus()
    lists, submits = RequestLimiter(bus, "rate:lists", 99, 60.0, "x"), SubmissionLimiter(bus, 6000)
    assert lists.lease == 1
    assert submits.lease == 1  # KEY_RATE_LIMIT is exact, as the spec states it
    lists.close()
    submits.close()


def test_requests_arriving_together_share_one_lease_instead_of_each_leasing():
    bus = InProcessBus()
    calls = []
    counted = bus.try_submit
    bus.try_submit = lambda owners, *args: calls.append(len(owners)) or counted(owners, *args)

    async def scenario():
        limiter = RequestLimiter(bus, "rate:connects", 6000, 60.0, "WebSocket connections")
        await asyncio.gather(*[limiter.admit("10.0.0.1") for _ in range(120)])
        limiter.close()

    asyncio.run(scenario())
    assert sum(calls) == 120 and all(n == 60 for n in calls), calls  # two leases of 60, not 120
