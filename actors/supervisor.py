"""The worker's supervisor tree, written down once: the root starts these children in
order and stops them in reverse.

    RootSupervisor
     ├── EventWriter            stores status events in batches, then publishes them
     ├── VenueGateway(raydium)  quotes, swaps and signature checks, latency on timers
     ├── VenueGateway(meteora)
     ├── OrderRouter            router pool: an OrderActor for each in-flight order
     │    └── OrderActor × ≤ WORKER_CONCURRENCY   kept in a pool, one order at a time
     ├── JobConsumer            pulls jobs under the concurrency and rate limits, claims their orders
     └── Reconciler             re-queues unfinished orders when the bus lost its jobs

(plus one `Timers` thread, started first and stopped last, that delivers every delay.)

pykka has no supervision of its own: each child tells the root from `on_failure`.
The root restarts a dead EventWriter or VenueGateway (peers find the new one through
the Directory); a dead OrderRouter, JobConsumer or Reconciler stops the worker with an error, so
the process manager restarts it and other workers take over its jobs.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import pykka

from actors.directory import Directory
from actors.event_writer import EventWriter
from actors.job_consumer import JobConsumer
from actors.messages import AttachConsumer, ChildDied, InFlight, StopFetching
from actors.order_actor import VENUES
from actors.order_router import OrderRouter
from actors.reconciler import Reconciler
from actors.retry import RetryPolicy
from actors.timers import Timers
from actors.venue_gateway import VenueGateway

log = logging.getLogger(__name__)

ASK_TIMEOUT = 5.0


class RootSupervisor(pykka.ThreadingActor):
    """Starts the worker's children in order, restarts the restartable ones, stops them in reverse."""

    def __init__(self, storage, settings, timers: Timers, fatal: threading.Event, new_signature):
        super().__init__()
        self.storage = storage
        self.settings = settings
        self.timers = timers
        self.fatal = fatal
        self.new_signature = new_signature
        self.directory = Directory()
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.children: list[tuple[str, pykka.ActorRef]] = []

    def on_start(self):
        """Runs on the root's thread: start the children in order."""
        me = self.actor_ref
        self._start_child("event_writer", lambda: EventWriter.start(
            self.storage.orders, self.storage.bus, self.timers, supervisor=me))
        for dex in VENUES:
            self._start_child(dex, self._gateway_factory(dex))
        policy = RetryPolicy(attempts=self.settings.retry_attempts)
        router = self._start_child("order_router", lambda: OrderRouter.start(
            self.storage.orders, self.storage.bus, self.directory, self.timers, policy,
            self.new_signature, self.worker_id, supervisor=me))
        consumer = self._start_child("job_consumer", lambda: JobConsumer.start(
            self.storage.bus, self.storage.orders, router, self.timers, self.settings, self.worker_id,
            supervisor=me))
        router.tell(AttachConsumer(consumer))
        self._start_child("reconciler", lambda: Reconciler.start(
            self.storage.orders, self.storage.bus, self.timers, supervisor=me))
        log.info("worker %s started: concurrency %d, rate limit %d/min, %d attempts", self.worker_id,
                 self.settings.worker_concurrency, self.settings.order_rate_limit, self.settings.retry_attempts)

    def _gateway_factory(self, dex):
        me = self.actor_ref
        return lambda: VenueGateway.start(self.storage.chain.venue(dex), self.timers, supervisor=me)

    def _start_child(self, name, factory):
        ref = factory()
        self.directory.put(name, ref)
        self.children.append((name, ref))
        return ref

    def on_receive(self, message):
        """Runs on the root's thread."""
        if isinstance(message, ChildDied):
            self._child_died(message.name, message.reason)
        elif message == "children":
            return [name for name, _ in self.children]

    def _child_died(self, name: str, reason: str) -> None:
        name = name.removeprefix("venue:")
        if name in ("event_writer", *VENUES):
            log.error("%s died (%s); restarting it", name, reason)
            factory = (self._gateway_factory(name) if name in VENUES else lambda: EventWriter.start(
                self.storage.orders, self.storage.bus, self.timers, supervisor=self.actor_ref))
            ref = factory()
            self.directory.put(name, ref)
            self.children = [(n, ref if n == name else r) for n, r in self.children]
            return
        log.critical("%s died (%s); stopping the worker", name, reason)
        self.fatal.set()

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
        self.root = RootSupervisor.start(storage, settings, self.timers, self.fatal, new_signature)
        self.directory = self.root.proxy().directory.get(timeout=ASK_TIMEOUT)

    def in_flight(self) -> int:
        """Orders in flight in this worker now."""
        return self.directory.get("order_router").ask(InFlight(), timeout=ASK_TIMEOUT)

    def drain(self, timeout: float) -> int:
        """Stop taking jobs, let in-flight orders finish for up to `timeout` s; return how many remain.

        The consumer keeps heartbeating meanwhile: were it to stop, another worker would
        claim these orders' jobs while they still run here.
        """
        try:
            self.directory.get("job_consumer").tell(StopFetching())
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
        """Stop the tree (children in reverse order), then the timers."""
        try:
            self.root.stop(timeout=30)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        finally:
            self.timers.stop()


def start_worker(storage, settings, new_signature) -> Worker:
    """Start the supervisor tree on `storage`; the caller stops it with `drain()` and `stop()`."""
    return Worker(storage, settings, new_signature)
