"""The one batching policy the web's intake, the event writer and the chain share."""
from __future__ import annotations

import pytest

from storage.batching import PROBE_EVERY, Gatherer


def test_the_first_item_schedules_a_batch_and_the_next_ones_join_it():
    g = Gatherer(10)
    assert g.add("a") is True
    assert g.add("b") is False
    assert g.take() == ["a", "b"]


def test_items_that_arrive_while_a_batch_is_in_flight_form_the_next_one():
    g = Gatherer(10)
    g.add(1)
    assert g.take() == [1]
    assert g.add(2) is False and g.add(3) is False  # in flight: nothing scheduled
    assert g.done() is True  # the owner schedules the next batch now
    assert g.take() == [2, 3]
    assert g.done() is False and g.busy is False


def test_a_batch_holds_at_most_max_batch_items_and_the_rest_follow_in_order():
    g = Gatherer(2)
    for n in range(5):
        g.add(n)
    assert g.take() == [0, 1]
    assert g.done() is True
    assert g.take() == [2, 3]
    assert g.done() is True
    assert g.take() == [4]
    assert g.done() is False and g.waiting == 0


def test_a_failed_batch_goes_back_to_the_front_and_only_the_owner_reschedules_it():
    g = Gatherer(10)
    g.add("a")
    batch = g.take()
    g.add("b")
    g.failed(batch)
    assert g.add("c") is False, "the owner's retry timer is pending: nothing else schedules"
    assert g.take() == ["a", "b", "c"]


def test_an_idle_gatherer_schedules_each_lone_item_at_once():
    g = Gatherer(10)
    for n in range(3):
        assert g.add(n) is True
        assert g.take() == [n]
        assert g.done() is False


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError):
        Gatherer(0)


def test_draining_hands_over_every_item_not_yet_taken():
    g = Gatherer(2)
    for n in range(5):
        g.add(n)
    g.take()
    assert g.drain() == [2, 3, 4] and g.waiting == 0


# ---- waiting for company (BATCH_WAIT_MS) ----------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _steady(g: Gatherer, clock: Clock, gap: float, batches: int) -> list[int]:
    """Items every `gap` s; a batch takes no time; a waiting batch starts when `add` says so or
    its wait ends. The size of each batch."""
    sizes, due_at = [], None
    for _ in range(batches * 10):
        clock.now += gap
        if due_at is not None and clock.now >= due_at and g.due():  # the owner's timer fired first
            sizes.append(len(g.take()))
            g.done()
            due_at = None
        if g.add("x"):
            wait = g.wait()
            if wait:
                due_at = clock.now + wait
            elif g.due():
                sizes.append(len(g.take()))
                g.done()
                due_at = None
        if len(sizes) >= batches:
            break
    return sizes


def _busy_recently(g: Gatherer, clock: Clock) -> None:
    """Items came 2 ms apart, and waits have been bringing company."""
    g.company.arrived()
    clock.now += 0.002
    g.company.arrived()
    g.company.waited(2)
    g.company.waited(2)
    clock.now += 0.002


def test_a_lone_item_with_no_one_arriving_starts_at_once():
    clock = Clock()
    g = Gatherer(10, wait_s=0.008, clock=clock)
    for _ in range(3):
        clock.now += 1.0  # a second apart: no company is coming
        assert g.add("x") is True and g.wait() == 0.0
        assert g.take() == ["x"] and g.done() is False


def test_at_a_steady_rate_a_lone_batch_waits_for_company_once_a_wait_has_brought_some():
    clock = Clock()
    g = Gatherer(10, wait_s=0.008, clock=clock)
    sizes = _steady(g, clock, 0.003, 400)
    assert set(sizes[:100]) == {1}, "until a probe shows company comes, nothing waits"
    assert sizes[-50:] == [3] * 50, "then each batch waits for two more items and starts as they join"


def test_a_batch_that_waited_starts_once_when_company_joins_and_its_timer_finds_it_started():
    clock = Clock()
    g = Gatherer(10, wait_s=0.008, clock=clock)
    _busy_recently(g, clock)
    assert g.add("a") is True and g.wait() == 0.008
    assert g.add("b") is False, "one more is not yet enough company"
    assert g.add("c") is True, "two more: start now"
    assert g.wait() == 0.0 and g.due() is True
    assert g.take() == ["a", "b", "c"]
    assert g.due() is False, "the wait's timer, when it fires, finds the batch started"


def test_a_client_that_waits_for_each_answer_never_waits_for_company_but_at_a_rare_probe():
    """One order after another: a wait can never bring the next one, which comes only after."""
    clock = Clock()
    g = Gatherer(10, wait_s=0.008, clock=clock)
    waits = 0
    for _ in range(1000):
        clock.now += 0.005  # the client's turn-around, shorter than the wait
        assert g.add("x") is True
        wait = g.wait()
        if wait:
            waits += 1
            clock.now += wait  # nobody came
        assert g.due() and g.take() == ["x"]
        g.done()
    assert waits <= 1000 // PROBE_EVERY


def test_a_busy_gatherer_never_waits():
    clock = Clock()
    g = Gatherer(10, wait_s=0.008, clock=clock)
    _busy_recently(g, clock)
    g.add("a")
    g.take()  # in flight (the first batch waited, or not: it does not matter)
    g.add("b")
    g.add("c")
    assert g.done() is True and g.wait() == 0.0, "a batch with company already starts at once"
    assert g.take() == ["b", "c"]


def test_waiting_for_company_is_off_at_zero():
    g = Gatherer(10, wait_s=0.0)
    assert g.company is None
    for _ in range(3):
        assert g.add("x") is True and g.wait() == 0.0
        assert g.take() == ["x"] and g.done() is False
