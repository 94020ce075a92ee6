"""The one batching policy the web's intake, the event writer and the chain share."""
from __future__ import annotations

import pytest

from storage.batching import Gatherer


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
