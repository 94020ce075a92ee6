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


# ---- protective orders: their firing is stored before they are released -----------------------

class Writer:
    """Stands for the EventWriter: records the drafts, answers each as stored (or `refuse`s it)."""

    def __init__(self):
        self.drafts = []
        self.refuse = None  # an exception to answer instead of storing

    def tell(self, message):
        from actors.messages import EventsStored
        from storage.records import EventRecord

        self.drafts += message.drafts
        results = [self.refuse or EventRecord(d.order_id, 2, d.status, d.attempt, d.timestamp, d.meta)
                   for d in message.drafts]
        message.reply_to.tell(EventsStored(results, message.tag))

    def metas(self, order_id: str) -> list[dict]:
        return [d.meta for d in self.drafts if str(d.order_id) == order_id]


class Both(Directory):
    def __init__(self, consumer, writer):
        super().__init__(consumer)
        self.writer = writer

    def get(self, name):
        return self.writer if name == "event_writer" else super().get(name)


class Bus:
    """Stands for the bus: records the jobs acknowledged."""

    def __init__(self):
        self.acked = []

    def ack(self, *jobs):
        self.acked += [job.order_id for job in jobs]


@pytest.fixture
def protect_book():
    chain = ScriptedChain(ScriptedVenue("raydium", "0.15"), ScriptedVenue("meteora", "0.15"))  # 150 USDC/SOL
    consumer, writer, timers = Consumer(), Writer(), Timers().start()
    writer.bus = Bus()
    ref = TriggerBook.start(Orders(), writer.bus, chain, timers, Both(consumer, writer), "worker-1")
    yield ref, chain, consumer, writer
    ref.stop()
    timers.stop()


def protective(order_id: str, **fields) -> Arm:
    from uuid import UUID, uuid5
    order_id = str(uuid5(UUID(int=0), order_id))  # the book stores events: real order ids
    return Arm(ArmedOrder(order_id=order_id, job=Job(f"job-{order_id}", order_id), fence=1, attempt=1,
                          token_in=find_token("SOL"), token_out=find_token("USDC"), amount_in=10**9,
                          created_at=utcnow(), **fields))


def set_price(chain, usdc_per_sol: float) -> None:
    from decimal import Decimal
    for venue in chain.venues.values():
        venue.rate = Decimal(str(usdc_per_sol)) / 1000


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def ticks_pass(chain, count: int = 3) -> None:
    """Wait until the book has quoted the pair `count` more times (a tick quotes it once or more):
    what must not happen has had its chance."""
    seen = sum(venue.quote_calls for venue in chain.venues.values())
    assert wait_until(lambda: sum(venue.quote_calls for venue in chain.venues.values()) >= seen + 2 * count)


def test_an_oco_whose_two_sides_hold_at_one_tick_fires_its_stop_loss_once_and_never_its_take_profit(protect_book):
    ref, chain, consumer, writer = protect_book
    # A target below the price and a stop above it: both sides hold at the first tick.
    arm = protective("both", protect="oco", stop_price=160.0, limit_price=140.0, min_out=140 * 10**6)
    order_id = arm.armed.order_id
    ref.tell(arm)
    assert consumer.wait_for(order_id)
    (fired,) = writer.metas(order_id)
    assert fired["fired"] == "stopLoss" and fired["cancelled"] == "takeProfit", fired
    set_price(chain, 200)  # the take-profit side would hold alone now: it is gone with its order
    ref.tell(protective("keeps-ticking", stop_price=10.0))  # an armed stop keeps the book quoting
    ticks_pass(chain)  # ticks that must release nothing more
    assert consumer.released.count(order_id) == 1 and len(writer.metas(order_id)) == 1
    assert ref.ask("size", timeout=5) == 1, "only the other stop is left"


def test_an_oco_fires_the_side_the_price_reaches_first_and_only_it(protect_book):
    ref, chain, consumer, writer = protect_book
    arm = protective("take", protect="oco", stop_price=100.0, limit_price=170.0, min_out=170 * 10**6)
    order_id = arm.armed.order_id
    ref.tell(arm)
    ticks_pass(chain)
    assert order_id not in consumer.released, "neither side holds at 150"
    set_price(chain, 180)
    assert consumer.wait_for(order_id)
    ref.tell(protective("keeps-ticking", stop_price=10.0))
    set_price(chain, 90)
    ticks_pass(chain)
    (fired,) = writer.metas(order_id)
    assert fired["fired"] == "takeProfit" and fired["cancelled"] == "stopLoss"
    assert consumer.released.count(order_id) == 1


def test_a_trailing_stop_follows_the_rise_stores_its_mark_coalesced_and_fires_on_the_fall_below_it(protect_book):
    from actors.trigger_protect import TRAIL_EVENT_S

    ref, chain, consumer, writer = protect_book
    arm = protective("trail", protect="trailing_stop", trail=0.10, high=150.0, high_stored=150.0)
    order_id = arm.armed.order_id
    ref.tell(arm)
    started = time.monotonic()
    for price in range(151, 201):  # a rise in 50 steps, a tick or so each
        set_price(chain, price)
        time.sleep(0.01)
    # Stored once it rose by a tenth of its trail (1% here) since the last stored mark.
    assert wait_until(lambda: any(float(m.get("highWater", 0)) >= 198 for m in writer.metas(order_id)), 5), \
        writer.metas(order_id)
    elapsed = time.monotonic() - started
    trails = [m for m in writer.metas(order_id) if "fired" not in m]
    assert len(trails) <= elapsed / TRAIL_EVENT_S + 1, f"{len(trails)} trail events in {elapsed:.1f}s: a flood"
    set_price(chain, 185)  # above 200 - 10%: it holds
    ticks_pass(chain)
    assert order_id not in consumer.released
    set_price(chain, 179)
    assert consumer.wait_for(order_id)
    fired = writer.metas(order_id)[-1]
    assert fired["fired"] == "trailingStop" and fired["highWater"] == "200" and fired["stopPrice"] == "180"
    assert consumer.released.count(order_id) == 1


def test_a_trailing_stop_by_amount_fires_at_its_mark_less_the_amount_not_before_and_resumes_from_its_stored_mark(
        protect_book):
    from actors.protective import stored_high

    ref, chain, consumer, writer = protect_book
    fields = dict(protect="trailing_stop", trail_amount=10.0)  # 10 USDC below the best price seen
    arm = protective("trail-amount", **fields, high=150.0, high_stored=150.0)
    order_id = arm.armed.order_id
    ref.tell(arm)
    for price in range(151, 171):
        set_price(chain, price)
        time.sleep(0.01)
    assert wait_until(lambda: any(m.get("highWater") == "170" for m in writer.metas(order_id)), 5), \
        writer.metas(order_id)
    trails = writer.metas(order_id)
    assert all(m["trailAmount"] == "10" and "trailPercent" not in m for m in trails), trails
    assert all(float(m["stopPrice"]) == float(m["highWater"]) - 10 for m in trails), trails
    marks = [float(m["highWater"]) for m in trails]
    assert all(b - a > 1 for a, b in zip(marks, marks[1:])), f"a mark once it rose by a tenth of the amount: {marks}"
    set_price(chain, 163)  # a fall, above 170 - 10
    ticks_pass(chain)
    assert order_id not in consumer.released and len(writer.metas(order_id)) == len(trails), "a fall stores nothing"
    # Armed again (another worker after this one's death): from its stored mark, as the OrderActor
    # does (the best of its events' marks and the price of the moment), never from the price alone.
    high = float(max(stored_high(writer.drafts), 163))
    assert high == 170.0
    ref.tell(protective("trail-amount", **fields, high=high, high_stored=high))
    set_price(chain, 160.2)  # the price of the moment would have made a stop at 153; its mark's is 160
    ticks_pass(chain)
    assert order_id not in consumer.released, "not before its mark less the amount"
    set_price(chain, 159.8)
    assert consumer.wait_for(order_id)
    fired = writer.metas(order_id)[-1]
    assert fired["fired"] == "trailingStop" and fired["trailAmount"] == "10", fired
    assert (fired["highWater"], fired["stopPrice"], fired["price"]) == ("170", "160", "159.8"), fired
    set_price(chain, 100)
    ref.tell(protective("keeps-ticking", stop_price=10.0))
    ticks_pass(chain)
    assert consumer.released.count(order_id) == 1 and [m.get("fired") for m in writer.metas(order_id)].count(
        "trailingStop") == 1, "it fires once"


def test_a_trail_amount_larger_than_the_price_shows_a_stop_of_zero_and_fires_only_after_a_rise_past_it(protect_book):
    ref, chain, consumer, writer = protect_book
    arm = protective("wide", protect="trailing_stop", trail_amount=200.0, high=150.0, high_stored=150.0)
    order_id = arm.armed.order_id
    ref.tell(arm)
    set_price(chain, 180)  # rose by more than a tenth of the amount: a mark, its stop still 0
    assert wait_until(lambda: writer.metas(order_id), 5)
    assert writer.metas(order_id)[0]["stopPrice"] == "0" and writer.metas(order_id)[0]["highWater"] == "180"
    set_price(chain, 1)
    ticks_pass(chain)
    assert order_id not in consumer.released


def test_a_stop_limit_s_firing_is_stored_before_its_release_and_a_refused_one_is_not_released(protect_book):
    from storage.errors import FencedOut

    ref, chain, consumer, writer = protect_book
    stop_limit = protective("stop-limit", protect="stop_loss", stop_price=140.0)
    taken = protective("taken-over", protect="stop_loss", stop_price=140.0)
    ref.tell(stop_limit)
    set_price(chain, 130)
    assert consumer.wait_for(stop_limit.armed.order_id)
    assert writer.metas(stop_limit.armed.order_id)[0]["fired"] == "stopLoss"
    writer.refuse = FencedOut("claimed again")  # another worker holds it now: this book must not release it
    ref.tell(taken)
    assert wait_until(lambda: writer.metas(taken.armed.order_id))
    ref.tell(protective("keeps-ticking", stop_price=10.0))
    ticks_pass(chain)
    assert taken.armed.order_id not in consumer.released and ref.ask("size", timeout=5) == 1


def test_a_protective_order_cancelled_as_it_fires_is_not_released_and_its_job_is_acknowledged(protect_book):
    from storage.status import OrderEnded

    ref, chain, consumer, writer = protect_book
    writer.refuse = OrderEnded("order is already cancelled")  # the owner's cancel was stored first
    arm = protective("cancelled", protect="oco", stop_price=160.0, limit_price=140.0, min_out=140 * 10**6)
    ref.tell(arm)
    assert wait_until(lambda: arm.armed.order_id in writer.bus.acked), "its job is done: acknowledged"
    assert arm.armed.order_id not in consumer.released and ref.ask("size", timeout=5) == 0
