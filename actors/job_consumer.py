"""JobConsumer: takes jobs from the bus while this worker has free slots and the shared rate allows.

At most WORKER_CONCURRENCY orders are in flight here: the consumer holds that many
credits, spends one per started order and gets them back (SlotFreed) when the router
is done with them. Starts are counted against ORDER_RATE_LIMIT through the bus, a fetched
batch at once, so the limit holds across all workers. Jobs wait in the queue, in order,
until both allow. The started jobs' orders are then claimed in the database in one
statement, here and not on the router's thread, and handed to the router together.
It also keeps this worker's heartbeat alive and takes over the jobs of dead workers.

Waiting for new jobs blocks (a blocking XREADGROUP), so a `JobFetcher` thread does it and
tells the consumer what came: the consumer's own thread never blocks, and what it is told
meanwhile (armed orders that fired, slots freed, the drain) is handled at once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

import backoff
import pykka

from actors.messages import ClaimedOrder, ExecuteOrders, Poll, SlotFreed, StopFetching, Triggered
from actors.supervision import SupervisedActor
from config.logs import about_order
from storage.batching import Company
from storage.errors import StorageError
from storage.records import OrderRecord

log = logging.getLogger(__name__)

FETCH_BLOCK_MS = 200
FETCH_BATCH = 64
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Tick:
    """Periodic: heartbeat and claim abandoned jobs (self-sent through the timers)."""


@dataclass(frozen=True)
class Fetched:
    """What a fetch brought: jobs (maybe none, after its block time) or the bus's error."""

    result: list | Exception


class JobFetcher:
    """One thread that blocks on the bus for new jobs, a fetch at a time, when asked."""

    def __init__(self, bus, consumer: str, deliver: Callable[[list | Exception], None], wait_s: float = 0.0):
        self._bus = bus
        self._consumer = consumer
        self._deliver = deliver
        self._want = 0
        self._stopped = False
        self._company = Company(wait_s)  # BATCH_WAIT_MS: whether a fetch waits for more jobs first
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"job-fetcher-{consumer}", daemon=True)
        self._thread.start()

    def request(self, count: int) -> None:
        """Fetch up to `count` jobs (the answer comes through `deliver`)."""
        with self._cond:
            self._want = count
            self._cond.notify()

    def stop(self) -> None:
        """Stop after the fetch in progress (it returns within its block time)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=FETCH_BLOCK_MS / 1000 + 2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._want and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                count, self._want = self._want, 0
                waited = self._company.wait()
                if waited:  # jobs come often and one at a time: let more come first (stop() ends it)
                    self._cond.wait(waited)
                    if self._stopped:
                        return
            try:
                result = self._bus.fetch(self._consumer, count, FETCH_BLOCK_MS)
            except StorageError as exc:
                result = exc
            if isinstance(result, list) and result:
                self._company.arrived(len(result))
                if waited:
                    self._company.waited(len(result) - 1)
            self._deliver(result)


class JobConsumer(SupervisedActor):
    """Feeds the OrderRouter from the bus under the concurrency and rate limits."""

    child_name = "job_consumer"

    def __init__(self, bus, orders, router, timers, settings, consumer_name: str, supervisor=None):
        super().__init__(supervisor)
        self.bus = bus
        self.orders = orders
        self.router = router
        self.timers = timers
        self.settings = settings
        self.name = consumer_name
        self.credits = settings.worker_concurrency
        self.held: deque = deque()  # fetched, waiting for the rate limit, in queue order
        self.started: list = []  # counted against the rate and holding a credit, not yet claimed
        self.fired: set[str] = set()  # job ids of armed orders our book released, until claimed
        self.poll_queued = False
        self.last_claim = float("-inf")  # the first Tick claims at once
        self.errors = None
        self.rate_limited = False  # while limited, take one job at a time so the rest stay queued
        self.draining = False
        self.fetching = False  # a fetch is in progress on the fetcher's thread
        self.fetcher: JobFetcher | None = None

    def on_start(self):
        """Runs on the consumer's thread: the first Tick heartbeats and claims before any fetch."""
        ref = self.actor_ref
        self.fetcher = JobFetcher(self.bus, self.name, lambda result: _tell(ref, Fetched(result)),
                                  self.settings.batch_wait_ms / 1000)
        self.actor_ref.tell(Tick())
        self._queue_poll()

    def on_stop(self):
        """Runs on the consumer's thread: stop the fetcher."""
        if self.fetcher is not None:
            self.fetcher.stop()

    def leftovers(self) -> list:
        """Runs on the consumer's thread as it dies (the worker stops): stop the fetcher."""
        self.on_stop()
        return []

    def on_receive(self, message):
        """Runs on the consumer's thread."""
        if isinstance(message, SlotFreed):
            self.credits += message.count
            if not self.poll_queued:
                self._queue_poll()
        elif isinstance(message, Poll):
            self.poll_queued = False
            self._poll()
        elif isinstance(message, Fetched):
            self.fetching = False
            if isinstance(message.result, Exception):
                return self._queue_poll(self._error_delay(message.result))
            self.held.extend(message.result)
            if not self.poll_queued:
                self._queue_poll()
        elif isinstance(message, StopFetching):
            self.draining = True
        elif isinstance(message, Triggered):
            # Armed orders that fired go first, under the same concurrency and rate limits.
            self.held.extendleft(reversed(message.jobs))
            self.fired.update(job.job_id for job in message.jobs)
            if not self.poll_queued:
                self._queue_poll()
        elif isinstance(message, Tick):
            self._beat()
            if not self.draining and time.monotonic() - self.last_claim >= self.settings.claim_interval_s:
                self._claim()
            ref = self.actor_ref
            self.timers.call_later(self.settings.heartbeat_every_s, lambda: _tell(ref, Tick()))

    def _queue_poll(self, delay: float = 0.0) -> None:
        self.poll_queued = True
        if delay <= 0:
            self.actor_ref.tell(Poll())
        else:
            ref = self.actor_ref
            self.timers.call_later(delay, lambda: _tell(ref, Poll()))

    def _poll(self) -> None:
        try:
            self._hand_over()  # claims left over from a failed try first
            if self.credits <= 0 or self.draining:
                return  # SlotFreed polls again
            wait = self._start_held()
            self._hand_over()
        except StorageError as exc:
            return self._queue_poll(self._error_delay(exc))
        self.errors = None
        if wait > 0:
            return self._queue_poll(min(wait, 1.0))
        if self.credits > 0 and not self.held and not self.fetching:
            count = 1 if self.rate_limited else min(self.credits, FETCH_BATCH)
            self.fetching = True
            self.fetcher.request(count)  # Fetched comes back when jobs arrive or the block time ends

    def _start_held(self) -> float:
        """Count the held jobs against the shared rate, as many as there are credits for."""
        count = min(len(self.held), self.credits)
        if count == 0:
            return 0.0
        allowed, wait = self.bus.try_start(self.settings.order_rate_limit, RATE_WINDOW_S, count)
        self.rate_limited = wait > 0
        for _ in range(allowed):
            self._start(self.held.popleft())
        return wait

    def _start(self, job) -> None:
        self.credits -= 1
        self.started.append(job)

    def _hand_over(self) -> None:
        """Claim the started jobs' orders (one statement) and hand them to the router together.

        A job whose order another job owns (a duplicate) or that names no order is dropped
        and its credit returned; if the database does not answer, the jobs stay for the next try.
        """
        if not self.started:
            return
        claims, dropped = {}, []
        for job in self.started:
            try:
                claims[job] = UUID(job.order_id)
            except ValueError:
                dropped.append(job)
        fired = frozenset(oid for job, oid in claims.items() if job.job_id in self.fired)
        found = self.orders.claim_many([(oid, job.job_id) for job, oid in claims.items()], self.name, held=fired)
        self.started = []
        self.fired.difference_update(job.job_id for job in claims)
        ready = []
        for job, oid in claims.items():
            order = found.get(oid)
            if isinstance(order, OrderRecord):
                ready.append(ClaimedOrder(job, order))
            elif order is False and oid in fired:
                # It fired in our book while we were stalled and another worker took it over:
                # its job pends with that worker now, so it is neither run nor acknowledged here.
                log.warning("job %s: armed order %s was taken over by another worker; dropped", job.job_id,
                            job.order_id, extra=about_order(job.order_id))
                self.credits += 1
            else:
                log.warning("job %s: order %s is %s; dropped", job.job_id, job.order_id,
                            "owned by another job" if order is False else "unknown", extra=about_order(job.order_id))
                dropped.append(job)
        if ready:
            self.router.tell(ExecuteOrders(ready))
        if dropped:
            self.credits += len(dropped)
            try:
                self.bus.ack(*dropped)
            except StorageError as exc:  # they stay pending with us; a later claim drops them again
                log.warning("ack of %d dropped jobs failed: %s", len(dropped), exc)

    def _beat(self) -> None:
        try:
            self.bus.heartbeat(self.name, self.settings.heartbeat_ttl_s)
        except StorageError as exc:
            log.warning("heartbeat failed: %s", exc)

    def _claim(self) -> None:
        self.last_claim = time.monotonic()
        if self.credits <= 0:
            return
        try:
            jobs = self.bus.claim_abandoned(self.name, self.credits)
        except StorageError as exc:
            log.warning("claiming abandoned jobs failed: %s", exc)
            return
        for job in jobs:
            log.info("took over job %s (order %s) from a dead worker", job.job_id, job.order_id,
                     extra=about_order(job.order_id))
            self._start(job)  # it started before: resuming is not counted as a new start
        if jobs and not self.poll_queued:
            self._queue_poll()  # hands them to the router

    def _error_delay(self, exc: Exception) -> float:
        if self.errors is None:
            self.errors = backoff.expo(base=2, factor=0.1, max_value=5.0)
            self.errors.send(None)
        delay = backoff.full_jitter(next(self.errors))
        log.warning("bus unavailable (%s); polling again in %.2fs", exc, delay)
        return delay


def _tell(ref, message) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass
