"""TriggerBook: every armed limit and sniper order of this worker, in one actor.

An armed order costs no thread and no in-flight slot: its OrderActor stored `waiting`,
handed it here and went back to the pool. The book keeps the limit orders of each pair
sorted by limit price and, while any are armed, prices the candidates every TRIGGER_TICK_MS
(quotes read pool states a few tens of milliseconds old, as any quote does): an order
whose full size would now get at least its limit on a venue is released. Sniper orders
wait for their token's launch: the book reads the scheduled launch times and releases them
on a timer at the launch. Released orders go to the JobConsumer, which starts them under
the usual concurrency and rate limits; their OrderActor quotes again and executes, or arms
them again if the price moved back. An order is removed from the book when released, so
it is released once; its job stays pending with this worker until the order ends, so if
the worker dies another one claims the job and arms the order again.

Halts (actors/halts.py): an order a halt covers is not released when its trigger fires; it
stays here, held, and so does an order held at its start (`held`: it waits only for the
halt's end). When the halts change (`HaltsChanged`), the held orders no halt covers any more
are released; a held limit order quotes again then and waits again if the price moved back.

Protective orders (actors/trigger_protect.py): a stop-limit, a trailing stop and an oco are
released only once their firing is stored (a `waiting` event whose meta says which side `fired`),
so that whoever runs them next, this worker or another after its death, executes that side and no
other. A trailing stop follows the pair's price on each tick; its best price seen is stored in a
`waiting` event at most every TRAIL_EVENT_S when it moved, and the next worker arming it starts
from there.

Expiry is the book's too: at `expires_at` it stores `expired` (under the order's fence)
and acknowledges the job (held orders expire too). Every TRIGGER_REFRESH_SECONDS it asks the
database which of its orders are still armed by it, and forgets the others (cancelled by
their owner, or taken over).
"""
from __future__ import annotations

import bisect
import heapq
import logging
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import pykka

from actors.event_writer import WriterDied
from actors.halts import HaltsChanged, NoHalts, covering
from actors.messages import AppendEvents, EventsStored, Triggered
from actors.supervision import SupervisedActor
from actors.trigger_protect import ProtectiveTriggers
from config import Token
from config.logs import about_order
from config.settings import Settings
from storage.bus import Job
from storage.errors import StorageError
from storage.records import EventDraft, iso, ms_since, utcnow
from storage.status import OrderEnded
from storage.venues.base import VenueError
from storage.venues.paths import best_route, quote_all

log = logging.getLogger(__name__)

LAUNCH_POLL_S = 0.1
EXPIRE_AGAIN_S = 0.1  # an expiry whose outcome is unknown (the writer died) is tried again this soon


@dataclass(slots=True)
class ArmedOrder:
    """What the book needs of an armed order (a few hundred bytes each)."""

    order_id: str
    job: Job
    fence: int
    attempt: int
    token_in: Token
    token_out: Token
    amount_in: int  # base units
    created_at: datetime
    min_out: int = 0  # limit: the least output (base units) that meets the limit price
    limit_price: float = 0.0  # limit: only to keep the pair's orders sorted
    launch: str | None = None  # sniper: the token whose launch fires it
    stop_price: float = 0.0  # stop_loss: fires when the pair's price falls to it (tokenOut per tokenIn)
    protect: str = ""  # stop-limit, trailing stop, oco (their type): its firing is stored before its release
    trail: float = 0.0  # trailing_stop: the distance below `high` it fires at (a fraction: 0.05 for 5%)
    trail_amount: float = 0.0  # trailing_stop: that distance in price instead (tokenOut per tokenIn), when set
    high: float = 0.0  # trailing_stop: the best pair price seen (tokenOut per tokenIn)
    high_stored: float = 0.0  # trailing_stop: the best price its events hold
    stored_at: float = 0.0  # trailing_stop: when (monotonic) its last trail event was sent
    expires_at: datetime | None = None
    owner: str = ""  # whose order (a halt may cover one owner's orders)
    held: bool = False  # held at its start by a halt: released when no halt covers it


@dataclass(frozen=True)
class Arm:
    """Watch this order (from the router, for the OrderActor that stored `waiting`)."""

    armed: ArmedOrder


@dataclass(frozen=True)
class _Tick:
    """Price the limit orders that could have crossed (self-sent)."""


@dataclass(frozen=True)
class _LaunchCheck:
    """Read the launch schedule for the armed sniper orders (self-sent)."""


@dataclass(frozen=True)
class _Launched:
    symbol: str


@dataclass(frozen=True)
class _Expire:
    """Expire what is due (self-sent at the earliest expiry)."""


@dataclass(frozen=True)
class _Refresh:
    """Forget the orders no longer armed by this worker (self-sent)."""


@dataclass
class _Pair:
    """The limit orders selling `token_in` for `token_out`, by limit price."""

    keys: list = field(default_factory=list)  # sorted (limit_price, order_id)
    probe: ArmedOrder | None = None  # the smallest order armed: its price bounds every other's
    stops: list = field(default_factory=list)  # stop orders, sorted (stop_price, order_id)
    stop_probe: ArmedOrder | None = None  # the smallest stop armed: it prices the pair for them all
    trails: dict = field(default_factory=dict)  # trailing stops' ids (a set, in arming order)
    price: float | None = None  # the pair's price at this tick (from stop_probe), once read


class TriggerBook(ProtectiveTriggers, SupervisedActor):
    """Holds this worker's armed orders and releases them when they trigger."""

    child_name = "trigger_book"

    def __init__(self, orders, bus, chain, timers, directory, worker_id: str, supervisor=None, settings=None,
                 halts=None):
        super().__init__(supervisor)
        self.halts = halts or NoHalts()  # its `current` HaltSet is read at each release
        settings = settings or Settings()
        self.tick_s = settings.trigger_tick_ms / 1000
        self.refresh_s = settings.trigger_refresh_s
        self.orders = orders
        self.bus = bus
        self.chain = chain
        self.timers = timers
        self.directory = directory
        self.worker_id = worker_id
        self.armed: dict[str, ArmedOrder] = {}
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.launches: dict[str, set[str]] = {}  # symbol -> sniper order ids
        self.launch_timers: dict[str, object] = {}
        self.held: set[str] = set()  # armed orders a halt holds (their trigger fired, or held at start)
        self.expiries: list[tuple[datetime, str]] = []
        self.expiry_timer = None
        self.ticking = self.polling = False
        self.expiring: dict[int, ArmedOrder] = {}  # AppendEvents tag -> order being expired
        self.storing: dict[int, tuple[str, ArmedOrder]] = {}  # AppendEvents tag -> ("fire" | "trail", order)
        self.tags = 0

    def on_start(self):
        """Runs on the book's thread: refresh periodically."""
        self._later(self.refresh_s, _Refresh())

    def on_receive(self, message):
        """Runs on the book's thread."""
        if isinstance(message, Arm):
            self._arm(message.armed)
        elif isinstance(message, _Tick):
            self.ticking = False
            self._tick()
        elif isinstance(message, _LaunchCheck):
            self.polling = False
            self._check_launches()
        elif isinstance(message, _Launched):
            # The timer has run: a sniper armed for this token from now on (its quotes were
            # taken just before the launch) finds the launch past and fires at the next check.
            self.launch_timers.pop(message.symbol, None)
            self._release(list(self.launches.pop(message.symbol, ())))
        elif isinstance(message, _Expire):
            self._expire_due()
        elif isinstance(message, EventsStored):
            if message.tag in self.storing:
                self._protect_stored(message)
            else:
                self._expired_stored(message)
        elif isinstance(message, _Refresh):
            self._refresh()
            self._later(self.refresh_s, _Refresh())
        elif isinstance(message, HaltsChanged):
            if self.held:
                self._release(list(self.held))  # those a halt still covers stay held
        elif message == "size":
            return len(self.armed)
        elif message == "held":
            return set(self.held)

    # ---- arming -------------------------------------------------------------------------

    def _arm(self, order: ArmedOrder) -> None:
        self._forget(order.order_id)  # armed again (released, and the price moved back)
        self.armed[order.order_id] = order
        if order.expires_at is not None:
            heapq.heappush(self.expiries, (order.expires_at, order.order_id))
            self._schedule_expiry()
        if order.held:
            self.held.add(order.order_id)
            return self._release([order.order_id])  # unless the halt is still on
        if order.launch is not None:
            self.launches.setdefault(order.launch, set()).add(order.order_id)
            self._poll_launches()
        else:  # an oco watches its stop and its target both
            pair = self.pairs.setdefault((order.token_in.symbol, order.token_out.symbol), _Pair())
            if order.stop_price:
                bisect.insort(pair.stops, (order.stop_price, order.order_id))
            trailing = order.trail or order.trail_amount
            if trailing:
                pair.trails[order.order_id] = None
            if (order.stop_price or trailing) and (pair.stop_probe is None
                                                   or order.amount_in < pair.stop_probe.amount_in):
                pair.stop_probe = order
            if order.limit_price or not (order.stop_price or trailing):
                bisect.insort(pair.keys, (order.limit_price, order.order_id))
                if pair.probe is None or order.amount_in < pair.probe.amount_in:
                    pair.probe = order
            self._start_ticking()

    def _forget(self, order_id: str) -> ArmedOrder | None:
        order = self.armed.pop(order_id, None)
        if order is None:
            return None
        self._unindex(order)
        return order  # its expiry entry goes when it comes due (lazily)

    def _unindex(self, order: ArmedOrder) -> None:
        """Stop watching the order's trigger (it stays armed, if it is, for the halt's end)."""
        order_id = order.order_id
        self.held.discard(order_id)
        if order.held:
            return
        if order.launch is not None:
            waiting = self.launches.get(order.launch)
            if waiting is not None:
                waiting.discard(order_id)
        else:
            pair = self.pairs.get((order.token_in.symbol, order.token_out.symbol))
            if pair is None:
                return
            _remove(pair.stops, (order.stop_price, order_id))
            pair.trails.pop(order_id, None)
            if pair.stop_probe is order:
                watching = [i for _, i in pair.stops] + list(pair.trails)
                pair.stop_probe = min((self.armed[i] for i in watching if i in self.armed),
                                      key=lambda o: o.amount_in, default=None)
            _remove(pair.keys, (order.limit_price, order_id))

    def _release(self, order_ids: list[str]) -> None:
        """Hand these orders to the consumer, which starts them under the usual limits; those a
        halt covers stay here, held, until it ends."""
        halts, go = self.halts.current, []
        for order_id in order_ids:
            order = self.armed.get(order_id)
            if order is None:
                continue
            if covering(halts, order.owner, order.token_in.symbol, order.token_out.symbol) is None:
                go.append(order_id)
            elif order_id not in self.held:
                self._unindex(order)
                self.held.add(order_id)
                log.info("order %s fired during a halt: held until it ends", order_id, extra=about_order(order_id))
        jobs = [order.job for order in (self._forget(i) for i in go) if order is not None]
        if jobs:
            log.info("released %d armed orders", len(jobs))
            self.directory.get("job_consumer").tell(Triggered(jobs))

    # ---- limit orders ---------------------------------------------------------------------

    def _start_ticking(self) -> None:
        if not self.ticking and any(pair.keys or pair.stops or pair.trails for pair in self.pairs.values()):
            self.ticking = True
            self._later(self.tick_s, _Tick())

    def _tick(self) -> None:
        fired: dict[str, tuple[str, float | None]] = {}  # order id -> (side, the pair's price)
        for pair in self.pairs.values():
            pair.price = None
            # Stops first: an oco whose two sides both hold at this tick fires its stopLoss.
            for side, order_ids in (("stopLoss", self._stopped(pair)), ("takeProfit", self._crossed(pair)),
                                    ("trailingStop", self._trailed(pair))):
                for order_id in order_ids:
                    fired.setdefault(order_id, (side, pair.price))
        plain = [order_id for order_id in fired if not self.armed[order_id].protect]
        self._release(plain)
        for order_id, (side, price) in fired.items():
            order = self.armed.get(order_id)
            if order is not None and order.protect:
                self._fire(order, side, price)
        self._start_ticking()

    def _crossed(self, pair: _Pair) -> list[str]:
        """The pair's orders whose full size now gets their limit on a venue.

        A larger order gets a worse price (price impact), so the price of the smallest order
        armed bounds every order's: the scan, by rising limit, stops at the first limit above
        that bound, and each order before it is priced for its own size.
        """
        if not pair.keys or pair.probe is None:
            return []
        probe = pair.probe
        best = self._best_out(probe)
        if best is None:
            return []
        scale = 10 ** (probe.token_in.decimals - probe.token_out.decimals)
        bound = best / probe.amount_in * scale * (1 + 1e-9)  # whole tokenOut per whole tokenIn
        crossed = []
        for limit_price, order_id in pair.keys:
            if limit_price > bound:
                break
            order = self.armed[order_id]
            out = best if order is probe else self._best_out(order)
            if out is not None and out >= order.min_out:
                crossed.append(order_id)
        return crossed

    def _stopped(self, pair: _Pair) -> list[str]:
        """The pair's stop orders whose stop the price has fallen to.

        A stop watches the pair's price (what the smallest stop armed would get, as a venue
        shows it), not the fill of its own size: once fired it executes as a market order.
        Every stop at or above that price fires: one quote a tick, a bisect, whatever the count.
        """
        if not pair.stops:
            return []
        price = self._pair_price(pair)
        if price is None:
            return []
        price *= 1 - 1e-9
        first = bisect.bisect_left(pair.stops, (price, ""))
        return [order_id for _, order_id in pair.stops[first:]]

    def _pair_price(self, pair: _Pair) -> float | None:
        """The pair's price now (whole tokenOut per whole tokenIn), as the smallest stop or trailing
        stop armed would get it: read once a tick, for all of them."""
        probe = pair.stop_probe
        if pair.price is None and probe is not None:
            best = self._best_out(probe)
            if best is not None:
                pair.price = best / probe.amount_in * 10 ** (probe.token_in.decimals - probe.token_out.decimals)
        return pair.price

    def _best_out(self, order: ArmedOrder) -> int | None:
        """What the order's full size gets now on its best route (through an intermediate token
        where that gives more); None when nothing can fill it or the quotes are unavailable."""
        try:
            answers = quote_all(self.chain.venue, order.token_in, order.token_out, order.amount_in)
        except StorageError as exc:  # an outage: look again at the next tick
            log.warning("trigger book: quotes unavailable (%s)", exc)
            return None
        quotes = [quote for _, _, quote in answers if not isinstance(quote, VenueError)]
        try:
            return best_route(quotes, order.token_in, order.token_out, order.amount_in, 0).amount_out
        except ValueError:
            return None

    # ---- sniper orders ------------------------------------------------------------------

    def _poll_launches(self) -> None:
        if not self.polling and any(self.launches.values()):
            self.polling = True
            self._later(LAUNCH_POLL_S, _LaunchCheck())

    def _check_launches(self) -> None:
        try:
            times = self.chain.launch_times()
        except StorageError as exc:
            log.warning("trigger book: launch times unavailable (%s)", exc)
            times = {}
        now = utcnow()
        for symbol, waiting in list(self.launches.items()):
            at = times.get(symbol)
            if not waiting or at is None or symbol in self.launch_timers:
                continue
            delay = max(0.0, (at - now).total_seconds())
            ref, launched = self.actor_ref, _Launched(symbol)
            # Bound now: a closure over the loop's variable would launch the last symbol every time.
            self.launch_timers[symbol] = self.timers.call_later(delay, lambda launched=launched: ref.tell(launched))
            log.info("%d sniper orders wait for the launch of %s in %.3fs", len(waiting), symbol, delay)
        self._poll_launches()

    # ---- expiry ---------------------------------------------------------------------------

    def _schedule_expiry(self, at_least: float = 0.0) -> None:
        if not self.expiries:
            return
        delay = max(at_least, (self.expiries[0][0] - utcnow()).total_seconds())
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
        ref = self.actor_ref
        self.expiry_timer = self.timers.call_later(delay, lambda: ref.tell(_Expire()))

    def _expire_due(self) -> None:
        now = utcnow()
        again = []  # the writer is away (being restarted): these are expired on the next pass
        while self.expiries and self.expiries[0][0] <= now:
            at, order_id = heapq.heappop(self.expiries)
            order = self.armed.get(order_id)
            if order is None or order.expires_at != at:
                continue  # released or forgotten meanwhile
            self._forget(order_id)
            self.tags += 1
            self.expiring[self.tags] = order
            meta = {"expiresAt": iso(at), "latencyMs": ms_since(order.created_at, now)}
            draft = EventDraft(UUID(order_id), "expired", order.attempt, meta, now, order.fence)
            if not self._tell_writer(AppendEvents([draft], self.actor_ref, self.tags)):
                del self.expiring[self.tags]
                again.append(order)
        self._expire_again(again)

    def _expire_again(self, orders: list[ArmedOrder]) -> None:
        """Arm these orders again, so that their expiry is tried again shortly (it is due)."""
        for order in orders:
            self._arm(order)
        self._schedule_expiry(EXPIRE_AGAIN_S if orders else 0.0)

    def _expired_stored(self, message: EventsStored) -> None:
        order = self.expiring.pop(message.tag, None)
        if order is None:
            return
        result = message.results[0]
        if isinstance(result, WriterDied):  # stored or not: expiring it again settles which
            return self._expire_again([order])
        if isinstance(result, Exception) and not isinstance(result, OrderEnded):
            log.info("order %s was not expired here: %s", order.order_id, result,  # taken over, or a rule
                     extra=about_order(order.order_id))
            return
        self._ack([order.job])

    # ---- refresh --------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Forget the orders this worker no longer holds armed; acknowledge those that ended."""
        if not self.armed:
            return
        try:
            still, ended = self.orders.armed_by(self.worker_id, list(self.armed))
        except StorageError as exc:
            log.warning("trigger book: cannot refresh (%s)", exc)
            return
        gone = [order_id for order_id in self.armed if order_id not in still]
        jobs = [self.armed[i].job for i in gone if i in ended]
        for order_id in gone:
            self._forget(order_id)
        if gone:
            log.info("trigger book: %d orders are no longer armed here (%d ended)", len(gone), len(jobs))
        self._ack(jobs)

    # ---- plumbing -------------------------------------------------------------------------

    def _ack(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            self.bus.ack(*jobs)
        except StorageError as exc:  # they stay pending with us; the next refresh acks them again
            log.warning("trigger book: ack of %d jobs failed: %s", len(jobs), exc)

    def _tell_writer(self, message) -> bool:
        try:
            self.directory.get("event_writer").tell(message)
            return True
        except (KeyError, pykka.ActorDeadError):  # being restarted: the caller tries again
            log.warning("trigger book: the event writer is away; the expiry waits")
            return False

    def _later(self, delay: float, message) -> None:
        ref = self.actor_ref
        self.timers.call_later(delay, lambda: ref.tell(message))

    def leftovers(self) -> list:
        """Runs on the book's thread as it dies: the armed orders go to its successor."""
        return [Arm(order) for order in self.armed.values()]


def _remove(keys: list, key: tuple) -> None:
    """Take `key` out of the sorted list `keys`, if it is there."""
    i = bisect.bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        del keys[i]
