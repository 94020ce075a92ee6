"""The TriggerBook on its own: a real actor and timer thread, a scripted chain for the launch
schedule, and doubles for what it talks to (the consumer it releases orders to, the store)."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from actors.timers import Timers
from actors.trigger_book import Arm, ArmedOrder, TriggerBook
from config.tokens import find_token
from storage.bus import Job
from storage.records import utcnow
from tests.unit.venue_double import ScriptedChain, ScriptedVenue


class Consumer:
    """Stands for the JobConsumer: records the jobs the book releases."""

    def __init__(self):
        self.released: list[str] = []
        self.changed = threading.Condition()

    def tell(self, message):
        with self.changed:
            self.released += [job.order_id for job in message.jobs]
            self.changed.notify_all()

    def wait_for(self, order_id: str, timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: order_id in self.released, timeout)


class Orders:
    """Stands for the order store: every order the book asks about is still armed by it."""

    def armed_by(self, worker_id, order_ids):
        return set(order_ids), set()


class Directory:
    def __init__(self, consumer):
        self.consumer = consumer

    def get(self, name):
        assert name == "job_consumer"
        return self.consumer


@pytest.fixture
def book():
    chain = ScriptedChain(ScriptedVenue("raydium", "0.15"), ScriptedVenue("meteora", "0.15"))
    consumer = Consumer()
    timers = Timers().start()
    ref = TriggerBook.start(Orders(), None, chain, timers, Directory(consumer), "worker-1")
    yield ref, chain, consumer
    ref.stop()
    timers.stop()


def sniper(order_id: str, token: str = "POPCAT") -> Arm:
    return Arm(ArmedOrder(order_id=order_id, job=Job(f"job-{order_id}", order_id), fence=1, attempt=1,
                          token_in=find_token("SOL"), token_out=find_token(token), amount_in=10**9,
                          created_at=utcnow(), launch=token))


def test_a_sniper_armed_after_its_token_s_launch_fired_is_released_at_once(book):
    ref, chain, consumer = book
    ref.tell(sniper("first"))
    chain.launches["POPCAT"] = utcnow() + timedelta(seconds=0.2)
    assert consumer.wait_for("first"), "the first sniper fires at the launch"
    # Armed late (its quotes were taken just before the launch): the launch is past, so it
    # fires now rather than waiting on a launch timer that has already run.
    armed_at = time.monotonic()
    ref.tell(sniper("late"))
    assert consumer.wait_for("late"), "a sniper armed after the launch fired is stranded"
    print(f"released {1000 * (time.monotonic() - armed_at):.0f} ms after it was armed")


def test_snipers_of_two_tokens_each_fire_at_their_own_launch(book):
    ref, chain, consumer = book
    ref.tell(sniper("popcat"))
    ref.tell(sniper("mew", "MEW"))
    chain.launches["MEW"] = utcnow() + timedelta(seconds=0.1)
    assert consumer.wait_for("mew")
    assert "popcat" not in consumer.released, "POPCAT has no launch yet"
    chain.launches["POPCAT"] = utcnow() + timedelta(seconds=0.1)
    assert consumer.wait_for("popcat")


def test_snipers_of_two_tokens_launching_together_each_fire(book):
    ref, chain, consumer = book
    ref.tell(sniper("popcat"))
    ref.tell(sniper("mew", "MEW"))
    chain.launches["POPCAT"] = chain.launches["MEW"] = utcnow() + timedelta(seconds=0.2)  # one check sets both timers
    assert consumer.wait_for("mew") and consumer.wait_for("popcat"), "each timer launches its own token"


class Halts:
    """Stands for the worker's HaltWatch: `current` is what the book reads at each release."""

    def __init__(self):
        from storage.halts import NOTHING_HALTED
        self.current = NOTHING_HALTED

    def set(self, *halts):
        from storage.halts import HaltSet
        self.current = HaltSet.of(halts)


def a_halt(scope="all", target=""):
    from storage.halts import Halt
    return Halt("h1", scope, target, None, "incident", utcnow(), "op")


@pytest.fixture
def halted_book():
    chain = ScriptedChain(ScriptedVenue("raydium", "0.15"), ScriptedVenue("meteora", "0.15"))
    consumer, halts, timers = Consumer(), Halts(), Timers().start()
    ref = TriggerBook.start(Orders(), None, chain, timers, Directory(consumer), "worker-1", halts=halts)
    yield ref, chain, consumer, halts
    ref.stop()
    timers.stop()


def test_a_sniper_launched_during_a_halt_is_held_and_released_when_the_halts_change(halted_book):
    from actors.halts import HaltsChanged

    ref, chain, consumer, halts = halted_book
    halts.set(a_halt("pair", "POPCAT/SOL"))
    ref.tell(sniper("held"))
    ref.tell(sniper("other-pair", "MEW"))
    chain.launches["POPCAT"] = chain.launches["MEW"] = utcnow()
    assert consumer.wait_for("other-pair"), "a pair halt leaves other pairs alone"
    deadline = time.monotonic() + 5
    while "held" not in ref.ask("held", timeout=5):
        assert time.monotonic() < deadline, "the launch fired and the order is held"
        time.sleep(0.01)
    assert "held" not in consumer.released
    ref.tell(HaltsChanged())  # still halted: it stays
    assert ref.ask("held", timeout=5) == {"held"}
    halts.set()
    ref.tell(HaltsChanged())
    assert consumer.wait_for("held"), "released once no halt covers it"
    assert consumer.released.count("held") == 1 and ref.ask("size", timeout=5) == 0


def test_an_order_held_at_its_start_waits_for_the_resume_only(halted_book):
    from dataclasses import replace

    from actors.halts import HaltsChanged

    ref, chain, consumer, halts = halted_book
    halts.set(a_halt())
    market = replace(sniper("market").armed, launch=None, token_out=find_token("USDC"), held=True)
    ref.tell(Arm(market))
    assert ref.ask("held", timeout=5) == {"market"} and consumer.released == []
    halts.set()
    ref.tell(HaltsChanged())
    assert consumer.wait_for("market")
    again = replace(market, order_id="resumed-already", job=Job("job-again", "resumed-already"))
    ref.tell(Arm(again))  # no halt now: released at once
    assert consumer.wait_for("resumed-already")


def stop(order_id: str, stop_price: float, amount_in: int = 10**9) -> Arm:
    return Arm(ArmedOrder(order_id=order_id, job=Job(f"job-{order_id}", order_id), fence=1, attempt=1,
                          token_in=find_token("SOL"), token_out=find_token("USDC"), amount_in=amount_in,
                          created_at=utcnow(), stop_price=stop_price))


def test_stops_fire_when_the_price_falls_to_them_and_each_only_once(book):
    ref, chain, consumer = book
    ref.tell(stop("near", 140.0))
    ref.tell(stop("far", 100.0, amount_in=5 * 10**9))
    ref.tell(stop("probe", 90.0, amount_in=10**8))  # the smallest: it prices the pair for all
    for venue in chain.venues.values():
        venue.rate = venue.rate * 13 / 15  # 130
    assert consumer.wait_for("near")
    assert "far" not in consumer.released and "probe" not in consumer.released
    for venue in chain.venues.values():
        venue.rate = venue.rate * 9 / 13  # 90
    assert consumer.wait_for("far") and consumer.wait_for("probe"), "the smallest stop fired: the others still watch"
    assert sorted(consumer.released) == ["far", "near", "probe"], "a stop fires once"
