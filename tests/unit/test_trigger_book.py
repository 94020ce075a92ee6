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
