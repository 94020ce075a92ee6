"""The event hub: one bus subscription per process, fanned out to WebSocket listeners.

Threads: the bus calls `_on_batch` on its own thread; everything else here runs on the
IOLoop thread (batches are handed over with `call_soon_threadsafe`), and database reads
go through the executor. Pub/sub can lose events, so every listener's feed fills gaps
from the database, and a sweeper looks there for orders that went quiet (a lost last
event has no later event to reveal it).

A new listener's history comes from `RecentEvents`, the events of the orders this
process saw lately (every web process sees every event), when it holds the order; only
an order it has not seen (or has forgotten) is read from the database. Whatever the
cache lacks shows up as a gap in `seq` and is filled from the database like any gap.

Owners: every event carries its order's owner (the API key's id), so a listener sees
only its own orders without a database read: a firehose skips the others' events, and
following another key's order answers `order_missing`, as for an order that does not exist.

Bounds: a firehose remembers at most MAX_REMEMBERED_PER_FIREHOSE orders it must not
follow again (finished, unsubscribed) and holds at most MAX_SUBSCRIPTIONS orders it
asked for with `subscribe`; an `unsubscribe` of an order it does not follow creates nothing.

    bus thread --call_soon_threadsafe--> _dispatch --offer--> OrderFeed --deliver--> Listener
                                            |                    ^
                                            +--gap/idle--> _fill (executor: events_after)
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable
from uuid import UUID

from tornado.ioloop import IOLoop, PeriodicCallback

from config.logs import about_order
from storage.bus import Bus, Subscription
from storage.errors import OrderArchived, OrderNotFound, StorageError
from storage.orders import OrderStore
from storage.records import BusEvent
from storage.status import TERMINAL
from web.errors import ApiError, ValidationError
from web.feed import IDLE_S, Listener, OrderFeed

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
MAX_REMEMBERED_PER_FIREHOSE = 10_000  # finished or unsubscribed orders a firehose does not follow again
MAX_SUBSCRIPTIONS = 1_000  # orders a connection follows at once because it asked to (`subscribe`)
RECENT_ORDERS = 5_000  # orders whose events a web process keeps for new listeners (~10 s at full load)


class RecentEvents:
    """The events of the orders seen most recently, by order and seq (IOLoop thread only)."""

    def __init__(self, max_orders: int = RECENT_ORDERS):
        self._max = max_orders
        self._orders: OrderedDict[str, dict[int, BusEvent]] = OrderedDict()

    def add(self, event: BusEvent) -> None:
        """Remember `event`; the orders seen longest ago are forgotten first."""
        events = self._orders.get(event.order_id)
        if events is None:
            events = self._orders[event.order_id] = {}
            if len(self._orders) > self._max:
                self._orders.popitem(last=False)
        events[event.seq] = event

    def owner_of(self, order_id: str) -> str | None:
        """The owner of a remembered order; None when the order is not remembered."""
        events = self._orders.get(order_id)
        return next(iter(events.values())).owner if events else None

    def after(self, order_id: str, after: int) -> tuple[list[BusEvent], bool] | None:
        """The order's remembered events with seq > `after`, in order (gaps and all), and whether
        its terminal event is at or before `after`; None when the order is not remembered (then
        only the database can tell whether it exists)."""
        events = self._orders.get(order_id)
        if events is None:
            return None
        ended = any(seq <= after and e.status in TERMINAL for seq, e in events.items())
        return [events[seq] for seq in sorted(events) if seq > after], ended


class _Firehose:
    """What an all-orders connection keeps besides its feeds: whose orders it may see, the orders
    it must not follow again (order id -> None once finished, or the seq to resume from once
    unsubscribed), and how many feeds it asked for."""

    __slots__ = ("owner", "skip", "subscribed")

    def __init__(self, owner: str | None):
        self.owner = owner
        self.skip: OrderedDict[str, int | None] = OrderedDict()
        self.subscribed = 0

    def sees(self, event: BusEvent) -> bool:
        """True when this connection may see `event`'s order."""
        return self.owner is None or event.owner == self.owner

    def remember(self, order_id: str, resume_at: int | None) -> None:
        """Do not follow `order_id` again by itself (forgetting the oldest beyond the bound)."""
        self.skip[order_id] = resume_at
        self.skip.move_to_end(order_id)
        while len(self.skip) > MAX_REMEMBERED_PER_FIREHOSE:
            self.skip.popitem(last=False)


class EventHub:
    """Fans bus events out to listeners, each order in `seq` order, each event once, each listener
    only its owner's orders."""

    def __init__(self, orders: OrderStore, bus: Bus, run: Callable[..., Awaitable[Any]], metrics,
                 clock: Callable[[], float] = time.monotonic, sweep_interval_s: float = SWEEP_INTERVAL_S,
                 idle_s: float = IDLE_S):
        self._orders = orders
        self._bus = bus
        self._run = run
        self._metrics = metrics
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._idle_s = idle_s
        self.recent = RecentEvents()
        self._by_order: dict[str, set[OrderFeed]] = {}
        self._by_listener: dict[Listener, dict[str, OrderFeed]] = {}
        self._firehoses: dict[Listener, _Firehose] = {}
        self._tasks: set[asyncio.Task] = set()  # references, or the loop may drop running tasks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handing: list[tuple[list[BusEvent], float]] = []  # from the bus thread, for the IOLoop
        self._handing_lock = threading.Lock()
        self._subscription: Subscription | None = None
        self._sweeper: PeriodicCallback | None = None

    # ---- lifecycle (IOLoop thread) -----------------------------------------------------

    def start(self) -> None:
        """Subscribe to the bus (once) and start the sweeper."""
        if self._subscription is not None:
            return
        self._loop = IOLoop.current().asyncio_loop
        self._subscription = self._bus.subscribe(self._on_batch)
        self._sweeper = PeriodicCallback(self.sweep, self._sweep_interval_s * 1000)
        self._sweeper.start()

    def stop(self) -> None:
        """Unsubscribe and stop the sweeper; running fills are cancelled."""
        if self._sweeper is not None:
            self._sweeper.stop()
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        for task in list(self._tasks):
            task.cancel()

    def _on_batch(self, batch: list[BusEvent]) -> None:
        """Bus thread: hand the batch to the IOLoop. Batches that arrive before the IOLoop took
        the last ones join them: one hop (a wake-up of the loop) carries them all."""
        loop = self._loop
        if loop is None:
            return
        with self._handing_lock:
            self._handing.append((batch, self._clock()))
            if len(self._handing) > 1:
                return  # the hop on its way takes this one too
        try:
            loop.call_soon_threadsafe(self._take_handed)
        except RuntimeError:  # the loop is closed: we are shutting down
            with self._handing_lock:
                self._handing.clear()

    def _take_handed(self) -> None:
        with self._handing_lock:
            handed, self._handing = self._handing, []
        for batch, handed_at in handed:
            self._dispatch(batch, handed_at)

    # ---- listeners (IOLoop thread) -----------------------------------------------------

    def follow(self, listener: Listener, order_id: str, after: int = 0, owner: str | None = None) -> None:
        """Stream one order to `listener`: events after `after` from the database, then live.

        The feed is registered for live events before the history is read, so nothing
        falls between the two. `listener.order_missing` is called if the order is unknown
        or belongs to another owner than `owner` (None: anyone's). On an all-orders
        connection this is a `subscribe`: past MAX_SUBSCRIPTIONS it raises a ValidationError.
        """
        feeds = self._by_listener.setdefault(listener, {})
        feed = feeds.get(order_id)
        if feed is not None:  # already streamed on this connection: resume, never repeat
            if not feed.initial:  # else its first load answers (started again if it failed)
                listener.order_found(order_id)
            self._spawn(self._fill(feed))
            return
        hose = self._firehoses.get(listener)
        resume_at = hose.skip.get(order_id, 0) if hose is not None else 0
        if resume_at is None:  # its own order, delivered to its end already
            return listener.order_found(order_id)
        # Checked on every subscribe, a resumed one too: an `unsubscribe` may have come before
        # the first subscribe's check in the database answered.
        if owner is not None and self.recent.owner_of(order_id) not in (None, owner):
            return listener.order_missing(order_id)  # another key's order: as if it did not exist
        if hose is not None:
            after = self._subscribe(hose, order_id, resume_at, after)
        remembered = self.recent.after(order_id, after)
        feed = self._add_feed(listener, order_id, after + 1, initial=remembered is None, owner=owner)
        feed.requested = hose is not None
        if remembered is None:
            return self._spawn(self._fill(feed))
        listener.order_found(order_id)
        events, ended = remembered
        if ended:  # resumed after the terminal event: nothing more to send
            feed.finish()
        gap = False
        for event in events:
            gap = feed.offer(event) or gap
        if gap:
            self._spawn(self._fill(feed))
        self._after_offer(feed)

    @staticmethod
    def _subscribe(hose: _Firehose, order_id: str, resume_at: int, after: int) -> int:
        """Count a `subscribe` against the connection's bound; the seq to stream after (where an
        `unsubscribe` stopped it, if one did)."""
        if hose.subscribed >= MAX_SUBSCRIPTIONS:
            raise ValidationError("invalid_field", f"a connection follows at most {MAX_SUBSCRIPTIONS} "
                                  "orders it subscribed to; unsubscribe some first", "subscribe")
        hose.subscribed += 1
        if not resume_at:
            return after
        del hose.skip[order_id]
        return resume_at - 1

    def mute(self, listener: Listener, order_id: str) -> None:
        """Stop sending `order_id` to an all-orders `listener` (an `unsubscribe`); an order it does
        not follow changes nothing, and nothing is created for it."""
        hose = self._firehoses.get(listener)
        feed = self._by_listener.get(listener, {}).get(order_id)
        if hose is None or feed is None:
            return
        self._drop(feed)
        hose.remember(order_id, None if feed.done else feed.next_seq)

    def add_firehose(self, listener: Listener, owner: str | None = None) -> None:
        """Send `listener` the live events of every order of `owner` (None: everyone's)."""
        self._firehoses[listener] = _Firehose(owner)
        self._by_listener.setdefault(listener, {})

    def detach(self, listener: Listener) -> None:
        """The connection has gone: forget all its feeds."""
        self._firehoses.pop(listener, None)
        for feed in self._by_listener.pop(listener, {}).values():
            feed.closed = True
            self._unindex(feed)

    @property
    def listener_count(self) -> int:
        """Connections known to the hub."""
        return len(self._by_listener)

    def feed_count(self) -> int:
        """Feeds alive in the hub (for tests of its bounds)."""
        return sum(len(feeds) for feeds in self._by_listener.values())

    # ---- delivery (IOLoop thread) ------------------------------------------------------

    def _add_feed(self, listener: Listener, order_id: str, next_seq: int, *, initial: bool = False,
                  owner: str | None = None) -> OrderFeed:
        feed = OrderFeed(listener, order_id, next_seq, initial=initial, owner=owner, clock=self._clock,
                         idle_s=self._idle_s)
        self._by_listener[listener][order_id] = feed
        self._by_order.setdefault(order_id, set()).add(feed)
        return feed

    def _unindex(self, feed: OrderFeed) -> None:
        feeds = self._by_order.get(feed.order_id)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._by_order[feed.order_id]

    def _drop(self, feed: OrderFeed) -> None:
        """Forget a feed: it delivers nothing more (a fill still running sees `closed`)."""
        feed.closed = True
        self._unindex(feed)
        feeds = self._by_listener.get(feed.listener)
        if feeds is not None and feeds.get(feed.order_id) is feed:
            del feeds[feed.order_id]
            hose = self._firehoses.get(feed.listener)
            if hose is not None and feed.requested:
                hose.subscribed -= 1

    def remember(self, events: list[BusEvent]) -> None:
        """Events this process stored itself (the intake's `pending` events): kept for new
        listeners before the bus brings them back (IOLoop thread)."""
        for event in events:
            self.recent.add(event)

    def _dispatch(self, batch: list[BusEvent], handed_at: float | None = None) -> None:
        if handed_at is not None:  # once per batch: how long the IOLoop kept it waiting
            self._metrics.observe_dispatch_lag(self._clock() - handed_at)
        for event in batch:
            order_id = event.order_id
            self.recent.add(event)
            self._metrics.observe_event(event)
            for listener, hose in self._firehoses.items():
                if order_id not in self._by_listener[listener] and order_id not in hose.skip and hose.sees(event):
                    self._add_feed(listener, order_id, event.seq)  # live from here on
            feeds = self._by_order.get(order_id)
            if not feeds:
                continue
            for feed in list(feeds):
                if feed.offer(event):
                    self._metrics.listener_gap()
                    self._spawn(self._fill(feed))
                self._after_offer(feed)

    def _after_offer(self, feed: OrderFeed) -> None:
        if feed.done and not feed.closed:
            self._drop(feed)
            hose = self._firehoses.get(feed.listener)
            if hose is not None:  # remember it, to drop late duplicates (within a bound)
                hose.remember(feed.order_id, None)

    async def _fill(self, feed: OrderFeed) -> None:
        """Deliver what the database holds after the feed's position (history or a gap)."""
        if feed.filling:
            feed.refill = True  # the running read may predate the event that showed the gap
            return
        feed.filling = True
        try:
            while not feed.closed and not feed.done:
                feed.refill = False
                check = feed.initial
                found, order, events = await self._run(self._load, feed.order_id, feed.next_seq - 1, check,
                                                       feed.owner)
                if feed.closed:
                    return
                if not found:
                    self._drop(feed)
                    feed.listener.order_missing(feed.order_id, order)  # order: OrderArchived or None
                    return
                if check:
                    feed.initial = False
                    feed.listener.order_found(feed.order_id)
                for event in events:
                    feed.offer(event.published())
                feed.drain()
                if order is not None and order.terminal and feed.next_seq > order.last_seq:
                    feed.finish()  # resumed after the terminal event: nothing more to send
                self._after_offer(feed)
                if not feed.refill:
                    break
        except asyncio.CancelledError:
            raise
        except (StorageError, ApiError) as exc:  # an outage (or a full executor): expected, retried
            log.warning("could not read events of order %s (the sweeper retries): %s", feed.order_id, exc,
                        extra=about_order(feed.order_id))
        except Exception:
            log.exception("could not read events of order %s; the sweeper retries", feed.order_id,
                          extra=about_order(feed.order_id))
        finally:
            feed.filling = False

    def _load(self, order_id: str, after: int, check: bool, owner: str | None):
        """Executor thread: (found, order or None, events after `after`); not found: the order
        slot holds OrderArchived when the order was archived.

        The order itself is read only when there are no events to show for it: then it
        tells whether the order exists (for `owner`) and whether it has already ended.
        """
        try:
            oid = UUID(order_id)
        except ValueError:
            return False, None, []
        events = self._orders.events_after(oid, after)
        if check and owner is not None and events and events[0].owner != owner:
            return False, None, []  # another key's order: as if it did not exist
        order = None
        if check and not events:
            try:
                order = self._orders.get_order(oid, owner, with_events=False)
            except OrderArchived as archived:  # said so, in the error's shape (410 `archived`)
                return False, archived, []
            except OrderNotFound:
                return False, None, []
        return True, order, events

    def sweep(self) -> None:
        """Look in the database for events of quiet orders that listeners still wait on."""
        now = self._clock()
        for feeds in list(self._by_order.values()):
            for feed in list(feeds):
                if feed.idle(now):
                    feed.backed_off(now)
                    self._spawn(self._fill(feed))

    def _spawn(self, coro) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
