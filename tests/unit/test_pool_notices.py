"""The worker's side of streamed quotes: a gateway announces the pools a landed block moved.
The gateway is built without starting it (the Mopidy way) and fed one block."""
from __future__ import annotations

import pytest

from actors.messages import SendSwap
from actors.venue_gateway import VenueGateway
from config import find_token
from storage.errors import BusError
from storage.pool_notices import changed_tokens, pools_changed
from storage.venues.base import SwapRequest, SwapResult


class Venue:
    name = "raydium"

    def __init__(self, outcomes):
        self.outcomes = outcomes

    def execute_swaps(self, requests):
        return [SwapResult(r.signature, status) for r, status in zip(requests, self.outcomes)]


class Sender:
    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)


def swap(token_in, token_out, n=0):
    return SwapRequest(f"sig{n}", f"order{n}", "raydium", find_token(token_in), find_token(token_out), 10, 1)


def land(outcomes, requests, announce):
    gateway = VenueGateway(Venue(outcomes), timers=None, announce=announce)
    sender = Sender()
    for request in requests:
        gateway.swaps.add((SendSwap(request, sender), 0.0))
    gateway._land_block()
    return sender


def test_a_landed_block_announces_the_tokens_of_the_pools_it_moved_once():
    heard = []
    sender = land(["confirmed", "failed", "timeout"],
                  [swap("SOL", "USDC", 1), swap("BONK", "USDC", 2), swap("JUP", "SOL", 3)], heard.append)
    assert heard == [pools_changed("raydium", ["SOL", "USDC", "JUP"])]  # a failed swap moved nothing
    assert changed_tokens(heard[0]) == {"SOL", "USDC", "JUP"} and len(sender.told) == 3
    assert changed_tokens({"topic": "halts"}) is None


def test_a_block_that_moved_nothing_announces_nothing_and_a_bus_outage_does_not_stop_the_replies():
    heard = []
    land(["failed"], [swap("SOL", "USDC")], heard.append)
    assert heard == []

    def bus_down(message):
        raise BusError("redis unavailable")

    assert len(land(["confirmed"], [swap("SOL", "USDC")], bus_down).told) == 1


class Timers:
    def __init__(self):
        self.due = []

    def call_later(self, delay, callback):
        self.due.append((delay, callback))


def test_blocks_that_land_close_together_share_one_notice_sent_when_its_interval_is_up(monkeypatch):
    """At a steady rate every block would publish a notice to every web process: one per
    NOTICE_EVERY_S carries them all (the first at once, the others with the next)."""
    from actors import venue_gateway
    heard, timers, now = [], Timers(), [1000.0]
    monkeypatch.setattr(venue_gateway.time, "monotonic", lambda: now[0])
    gateway = VenueGateway(Venue(["confirmed"]), timers=timers, announce=heard.append)
    told = []
    ref = type("Ref", (), {"tell": lambda self, message: told.append(message)})()
    monkeypatch.setattr(VenueGateway, "actor_ref", property(lambda self: ref))

    def block(token_in, token_out):
        gateway.swaps.add((SendSwap(swap(token_in, token_out), Sender()), 0.0))
        gateway._land_block()

    block("SOL", "USDC")
    assert heard == [pools_changed("raydium", ["SOL", "USDC"])], "the first notice goes at once"
    now[0] += 0.01
    block("BONK", "USDC")
    block("JUP", "SOL")
    assert len(heard) == 1 and len(timers.due) == 1, "the next ones wait for the interval, on one timer"
    assert timers.due[0][0] == pytest.approx(venue_gateway.NOTICE_EVERY_S - 0.01)
    timers.due[0][1]()
    now[0] += 0.04
    gateway.on_receive(told.pop())
    assert heard[1] == pools_changed("raydium", ["BONK", "USDC", "JUP", "SOL"])
    now[0] += 1.0
    block("SOL", "USDC")
    assert len(heard) == 3 and len(timers.due) == 1, "after a quiet interval a notice goes at once again"
