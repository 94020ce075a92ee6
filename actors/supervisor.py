"""The worker's supervisor tree, written down once: the root starts these children in
order and stops them in reverse.

    RootSupervisor
     ├── EventWriter            stores status events in batches, then publishes them
     ├── VenueGateway(raydium)  quotes, swaps and signature checks, latency on timers
     ├── VenueGateway(meteora)
     ├── TriggerBook            the armed limit and sniper orders; releases those that fire
     ├── ScheduleBook           the twap and dca parents: creates their children when due
     ├── OrderRouter            router pool: an OrderActor for each in-flight order
     │    └── OrderActor × ≤ WORKER_CONCURRENCY   kept in a pool, one order at a time
     ├── JobConsumer            pulls jobs under the concurrency and rate limits, claims their orders
     ├── Reconciler             queues again the unfinished orders whose jobs were lost
     └── WebhookDispatcher      sends the webhook deliveries due, in order per order, on its own senders

(plus one `Timers` thread, started first and stopped last, that delivers every delay, the
`HaltWatch`, started before the tree and stopped after it, that keeps the active halts current:
the TriggerBook and the order actors read it, and it wakes the book when they change, and the
`ArchiveJob`, started after the tree and stopped before the timers: retention, every
ARCHIVE_INTERVAL_SECONDS, one worker at a time.)

The TriggerBook's armed orders are rebuilt by a successor from what it hands over; a new
worker's book fills as it claims the jobs of armed orders (a dead worker's included).

Each child tells the root of its death (`actors.supervision.SupervisedActor`), handing
over what it held. The root restarts an EventWriter or a VenueGateway, up to a restart
intensity per child, and gives the new one the dead one's leftovers (peers find it through
the Directory). A dead OrderRouter, JobConsumer or Reconciler, a child past its intensity,
or the root itself dying, stops the worker with an error (`fatal`): the process manager
restarts it and other workers take over its jobs meanwhile.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

import pykka

from actors.circuit_breaker import CircuitBreaker
from actors.directory import Directory
from actors.halts import HaltsChanged
from actors.event_writer import EventWriter
from actors.job_consumer import JobConsumer
from actors.messages import AttachConsumer, ChildDied, Drain, InFlight, StopFetching
from actors.order_router import OrderRouter
from actors.reconciler import Reconciler
from actors.retry import RetryPolicy
from actors.schedule_book import ScheduleBook
from actors.supervision import RestartIntensity
from actors.timers import Timers
from actors.trigger_book import TriggerBook
from actors.venue_gateway import VenueGateway
from actors.webhook_dispatcher import WebhookDispatcher
from storage.archive_job import ArchiveJob
from storage.halt_watch import HaltWatch
from storage.venues.base import VENUES
from storage.venues.collar import PriceCollar

log = logging.getLogger(__name__)

ASK_TIMEOUT = 5.0
RESTARTABLE = ("event_writer", *VENUES, "trigger_book", "schedule_book", "webhook_dispatcher")


class RootSupervisor(pykka.ThreadingActor):
    """Starts the worker's children in order, restarts the restartable ones, stops them in reverse."""

    def __init__(self, storage, settings, timers: Timers, fatal: threading.Event, new_signature, halts=None):
        super().__init__()
        self.halts = halts  # the worker's HaltWatch (None: nothing is ever halted)
        self.storage = storage
        self.settings = settings
        self.timers = timers
        self.fatal = fatal
        self.new_signature = new_signature
        self.directory = Directory()
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.children: list[tuple[str, pykka.ActorRef]] = []
        self.factories: dict[str, Callable[[], pykka.ActorRef]] = {}
        self.intensity = {name: RestartIntensity() for name in RESTARTABLE}

    def on_start(self):
        """Runs on the root's thread: start the children in order."""
        me, storage = self.actor_ref, self.storage
        wait_s = self.settings.batch_wait_ms / 1000  # a lone batch's wait for company
        self._start_child("event_writer", lambda: EventWriter.start(storage.orders, storage.bus, self.timers,
                                                                    supervisor=me, wait_s=wait_s))
        breakers = {dex: CircuitBreaker(self.settings.venue_cool_down_s) for dex in VENUES}  # outlive restarts
        for dex in VENUES:
            self._start_child(dex, lambda dex=dex: VenueGateway.start(
                storage.chain.venue(dex), self.timers, supervisor=me, current=lambda: self.directory.get(dex),
                breaker=breakers[dex], announce=storage.bus.publish_control, wait_s=wait_s))
        self._start_child("trigger_book", lambda: TriggerBook.start(
            storage.orders, storage.bus, storage.chain, self.timers, self.directory, self.worker_id, supervisor=me,
            settings=self.settings, halts=self.halts))
        self._start_child("schedule_book", lambda: ScheduleBook.start(storage.orders, storage.bus, self.timers,
                                                                      supervisor=me))
        policy = RetryPolicy(attempts=self.settings.retry_attempts, max_delay=self.settings.retry_max_delay_s)
        router = self._start_child("order_router", lambda: OrderRouter.start(
            storage.orders, storage.bus, self.directory, self.timers, policy, self.new_signature,
            self.worker_id, supervisor=me, market_max_wait_s=self.settings.market_max_wait_s,
            collar=PriceCollar(storage.oracle, self.settings.price_collar_bps) if self.settings.price_collar_bps else None,
            halts=self.halts))
        consumer = self._start_child("job_consumer", lambda: JobConsumer.start(
            storage.bus, storage.orders, router, self.timers, self.settings, self.worker_id, supervisor=me))
        router.tell(AttachConsumer(consumer))
        self._start_child("reconciler", lambda: Reconciler.start(
            storage.orders, storage.bus, self.timers, self.worker_id, supervisor=me, settings=self.settings))
        self._start_child("webhook_dispatcher", lambda: WebhookDispatcher.start(
            storage.webhooks, self.timers, self.settings, supervisor=me))
        log.info("worker %s started: concurrency %d, rate limit %d/min, %d attempts", self.worker_id,
                 self.settings.worker_concurrency, self.settings.order_rate_limit, self.settings.retry_attempts)

    def _start_child(self, name, factory):
        ref = factory()
        self.factories[name] = factory
        self.directory.put(name, ref)
        self.children.append((name, ref))
        return ref

    def on_receive(self, message):
        """Runs on the root's thread."""
        if isinstance(message, ChildDied):
            self._child_died(message)
        elif message == "children":
            return [name for name, _ in self.children]

    def _child_died(self, death: ChildDied) -> None:
        name = death.name
        if name not in RESTARTABLE:
            return self._escalate(f"{name} died ({death.reason})")
        if not self.intensity[name].allow():
            return self._escalate(f"{name} died ({death.reason}) more often than its restart intensity allows")
        log.error("%s died (%s); restarting it with the %d messages it held", name, death.reason,
                  len(death.leftovers))
        ref = self.factories[name]()
        self.directory.put(name, ref)
        self.children = [(n, ref if n == name else r) for n, r in self.children]
        for message in death.leftovers:
            ref.tell(message)

    def _escalate(self, why: str) -> None:
        log.critical("%s; stopping the worker", why)
        self.fatal.set()

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on the root's thread as it dies: nothing supervises the children now."""
        self._escalate(f"the root supervisor died ({exception_value!r})")

    def on_stop(self):
        """Runs on the root's thread: stop the children in reverse order."""
        for name, ref in reversed(self.children):
            try:
                ref.stop(timeout=ASK_TIMEOUT)
            except (pykka.ActorDeadError, pykka.Timeout):
                log.warning("%s did not stop cleanly", name)


class Worker:
    """The running tree of one worker process (or of `engine run`)."""

    def __init__(self, storage, settings, new_signature):
        self.storage = storage
        self.settings = settings
        self.fatal = threading.Event()
        self.timers = Timers().start()
        self.halts = HaltWatch(storage.halts, storage.bus, settings.halt_refresh_s).start()
        self.root = RootSupervisor.start(storage, settings, self.timers, self.fatal, new_signature, halts=self.halts)
        proxy = self.root.proxy()
        self.directory = proxy.directory.get(timeout=ASK_TIMEOUT)
        self.worker_id = proxy.worker_id.get(timeout=ASK_TIMEOUT)
        self.halts.listen(self._halts_changed)
        self.archive_job = ArchiveJob(storage.orders, settings.order_retention_days,
                                      settings.archive_every_s).start()

    def _halts_changed(self, _halts) -> None:
        """The watch's thread: wake the trigger book (held orders may go now)."""
        try:
            self.directory.get("trigger_book").tell(HaltsChanged())
        except (pykka.ActorDeadError, KeyError):  # being restarted: its successor reads them when arming
            log.warning("halts changed while the trigger book was away")

    def in_flight(self) -> int:
        """Orders in flight in this worker now."""
        return self.directory.get("order_router").ask(InFlight(), timeout=ASK_TIMEOUT)

    def drain(self, timeout: float) -> int:
        """Stop taking jobs and hand back the orders that have not sent a swap; let the swaps in
        flight settle for up to `timeout` s; return how many orders remain.

        The consumer keeps heartbeating meanwhile: were it to stop, another worker would claim
        these orders' jobs while they still run here. The handed-back jobs stay pending with
        this consumer until `stop()` retires it, then another worker resumes them.
        """
        for name, message in (("job_consumer", StopFetching()), ("order_router", Drain())):
            try:
                self.directory.get(name).tell(message)
            except (pykka.ActorDeadError, KeyError):
                pass
        deadline = time.monotonic() + timeout
        remaining = 0
        while time.monotonic() < deadline:
            try:
                remaining = self.in_flight()
            except (pykka.ActorDeadError, pykka.Timeout):
                return 0
            if remaining == 0:
                return 0
            time.sleep(0.1)  # the main thread waits here; no actor does
        return remaining

    def stop(self) -> None:
        """Stop the tree (children in reverse order), then the timers; retire this worker's
        consumer on the bus, so others take over its unfinished jobs at once."""
        try:
            self.root.stop(timeout=30)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        finally:
            self.archive_job.stop()
            self.timers.stop()
            self.halts.stop()
        try:
            self.storage.bus.retire(self.worker_id)
        except Exception as exc:  # noqa: BLE001 - its heartbeat expires anyway
            log.warning("could not retire consumer %s on the bus (%s); its heartbeat will expire", self.worker_id, exc)


def start_worker(storage, settings, new_signature) -> Worker:
    """Start the supervisor tree on `storage`; the caller stops it with `drain()` and `stop()`."""
    return Worker(storage, settings, new_signature)
