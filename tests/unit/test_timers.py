"""The worker's one timer thread: due callbacks run, cancelled ones never do, and neither
wake-ups nor memory grow with timers that are cancelled before they are due."""
from __future__ import annotations

import threading

import pytest

from actors.timers import Timers


@pytest.fixture
def timers():
    t = Timers().start()
    yield t
    t.stop()


def test_a_due_callback_runs_and_a_cancelled_one_never_does(timers):
    ran = threading.Event()
    cancelled = []
    handle = timers.call_later(0.01, lambda: cancelled.append(1))
    handle.cancel()
    timers.call_later(0.02, ran.set)
    assert ran.wait(5)
    assert cancelled == []


def test_the_thread_is_woken_only_by_a_timer_due_before_every_other(timers, monkeypatch):
    timers.call_later(60, lambda: None)
    wakes = []
    original = timers._cond.notify
    monkeypatch.setattr(timers._cond, "notify", lambda *a: (wakes.append(1), original(*a)))
    for _ in range(100):
        timers.call_later(120, lambda: None)  # later than the earliest: the thread sleeps on
    assert wakes == []
    timers.call_later(30, lambda: None)
    assert wakes == [1]


def test_cancelled_timers_leave_the_heap(timers):
    handles = [timers.call_later(60, lambda: None) for _ in range(1000)]
    for handle in handles[:990]:
        handle.cancel()
        handle.cancel()  # idempotent
    assert timers.pending() == 10
    assert len(timers._heap) < 200, "cancelled entries were purged"


def test_cancelling_a_timer_that_already_ran_changes_nothing(timers):
    ran = threading.Event()
    handle = timers.call_later(0, ran.set)
    assert ran.wait(5)
    handle.cancel()
    assert timers.pending() == 0
