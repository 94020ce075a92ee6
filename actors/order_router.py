"""OrderRouter: the router pool. One OrderActor per in-flight order, supervised here.

The JobConsumer hands it orders already claimed in the database (`ExecuteOrders`); it
gives each one an OrderActor of its own from a pool it keeps (an actor is a thread:
starting one per order and stopping it after measured ~0.2 ms more worker CPU per order,
+20%, in three interleaved throughput runs each way),
acknowledges the job once the order is terminal and frees the slot. When an order
actor dies unexpectedly it resumes the order from its stored state on a fresh actor,
and after `MAX_RESTARTS` fails it with a reason: an order is never left hanging.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from uuid import UUID

import pykka

from actors.messages import (
    AttachConsumer,
    ClaimedOrder,
    Drain,
    ExecuteOrders,
    InFlight,
    OrderActorDied,
    OrderFinished,
    RunOrder,
    SlotFreed,
)
from actors.order_actor import OrderActor
from actors.schedule_book import Adopt
from actors.supervision import SupervisedActor
from actors.trigger_book import Arm
from config.logs import about_order
from storage.batching import Gatherer
from storage.bus import Job
from storage.errors import StorageError
from storage.records import PARENT_TYPES, EventDraft

log = logging.getLogger(__name__)

MAX_RESTARTS = 2
RETRY_START_S = 1.0
# Jobs acknowledged in one pipeline at most. No more than WORKER_CONCURRENCY (at most 1000)
# orders finish between two flushes, duplicates aside: in practice one batch holds them all.
MAX_ACKS = 1000


@dataclass(frozen=True)
class RetryStart:
    """Load and start an order again (after the database failed to answer)."""

    order_id: str


@dataclass(frozen=True)
class FlushAcks:
    """Acknowledge the finished jobs and free their slots (self-sent: one round trip for many).

    The finished orders are gathered with `storage.batching.Gatherer`: the first to finish
    while no flush is pending sends this, and since a pykka inbox is FIFO, every OrderFinished
    queued before it joins the batch."""


class OrderRouter(SupervisedActor):
    """Supervises the order actors of this worker and keeps the idle ones for the next orders."""

    child_name = "order_router"

    def __init__(self, orders, bus, directory, timers, policy, new_signature, worker_id, supervisor=None,
                 market_max_wait_s: float = 30.0, collar=None, halts=None):
        super().__init__(supervisor)
        self.halts = halts  # the worker's HaltWatch, for its order actors (None: nothing is halted)
        self.market_max_wait_s = market_max_wait_s
        self.collar = collar
        self.orders = orders
        self.bus = bus
        self.directory = directory
        self.timers = timers
        self.policy = policy
        self.new_signature = new_signature
        self.worker_id = worker_id
        self.consumer = None
        self.draining = False
        self.in_flight: dict[str, dict] = {}
        self.idle: list[pykka.ActorRef] = []  # order actors with no order, ready for the next one
        # Orders off this worker whose slot is not freed yet: each its job to acknowledge, or None.
        self.finished: Gatherer[Job | None] = Gatherer(MAX_ACKS)

    def on_receive(self, message):
        """Runs on the router's thread."""
        if isinstance(message, ExecuteOrders):
            for claimed in message.claimed:
                self._execute(claimed)
        elif isinstance(message, OrderFinished):
            if message.armed is not None:
                self._armed(message.order_id, message.armed)
            self._finished(message.order_id, message.actor,
                           ack=not (message.lost or message.handed_back or message.armed is not None))
        elif isinstance(message, OrderActorDied):
            self._died(message.order_id, message.reason)
        elif isinstance(message, RetryStart):
            if message.order_id in self.in_flight:
                self._reload(message.order_id)
        elif isinstance(message, FlushAcks):
            self._flush_acks()
        elif isinstance(message, Drain):
            self.draining = True
            for entry in self.in_flight.values():
                if entry["ref"] is not None:
                    entry["ref"].tell(message)
        elif isinstance(message, AttachConsumer):
            self.consumer = message.consumer
        elif isinstance(message, InFlight):
            return len(self.in_flight)

    def _execute(self, claimed: ClaimedOrder) -> None:
        order_id = str(claimed.order.id)
        if order_id in self.in_flight:  # the same order queued twice: one execution is enough
            self._ack(claimed.job)
            return
        if self.draining:  # claimed just before the drain began: leave it for another worker
            self._ack(None)
            return
        if claimed.order.type in PARENT_TYPES:  # a twap/dca parent swaps nothing: the schedule book
            self.directory.get("schedule_book").tell(Adopt(claimed.order, claimed.job))  # holds its job
            self._ack(None)  # and its slot is free at once
            return
        self.in_flight[order_id] = {"job": claimed.job, "restarts": 0, "ref": None}
        self._run(order_id, claimed.order)

    def _run(self, order_id: str, order) -> None:
        entry = self.in_flight[order_id]
        entry["fence"] = order.fence
        try:
            entry["ref"] = self._take_actor()
        except Exception as exc:  # an order this worker cannot even start must fail, not hang
            log.exception("order %s: cannot start its actor", order_id, extra=about_order(order_id))
            self._fail(order_id, repr(exc))
            return self._finished(order_id, None)
        entry["ref"].tell(RunOrder(order))
        if self.draining:
            entry["ref"].tell(Drain())

    def _take_actor(self) -> pykka.ActorRef:
        while self.idle:
            ref = self.idle.pop()
            if ref.is_alive():
                return ref
        return OrderActor.start(directory=self.directory, timers=self.timers, router=self.actor_ref,
                                policy=self.policy, new_signature=self.new_signature, worker_id=self.worker_id,
                                market_max_wait_s=self.market_max_wait_s, collar=self.collar, halts=self.halts)

    def _armed(self, order_id: str, armed) -> None:
        """The order waits for its trigger: the book watches it; its job stays ours, its slot is freed."""
        entry = self.in_flight.get(order_id)
        if entry is not None:
            self.directory.get("trigger_book").tell(Arm(replace(armed, job=entry["job"])))

    def _finished(self, order_id: str, actor, ack: bool = True) -> None:
        """The order is off this worker: ack its job (unless another worker holds it now or
        is to take it over: then the job stays pending) and free its slot."""
        entry = self.in_flight.pop(order_id, None)
        if actor is not None and actor.is_alive():
            self.idle.append(actor)
        if entry is not None:
            self._ack(entry["job"] if ack else None)

    def _died(self, order_id: str, reason: str) -> None:
        entry = self.in_flight.get(order_id)
        if entry is None:
            return
        entry["ref"] = None  # a dead actor never returns to the pool
        entry["restarts"] += 1
        if entry["restarts"] <= MAX_RESTARTS:
            log.warning("order %s: actor died (%s); resuming from its stored state", order_id, reason,
                        extra=about_order(order_id))
            return self._reload(order_id)
        log.error("order %s: actor died %d times (%s); failing the order", order_id, entry["restarts"], reason,
                  extra=about_order(order_id))
        try:
            self._fail(order_id, reason)
        except StorageError as exc:  # cannot record the failure now: resume it later instead
            log.warning("recording the failure of %s failed (%s); retrying", order_id, exc,
                        extra=about_order(order_id))
            return self._retry_later(order_id)
        self._finished(order_id, None)

    def _reload(self, order_id: str) -> None:
        """Read the order as stored (its job still holds it) and run it on a fresh actor."""
        entry = self.in_flight[order_id]
        try:
            order = self.orders.claim(UUID(order_id), entry["job"].job_id, self.worker_id)
        except StorageError as exc:  # the database is unreachable: try again shortly
            log.warning("loading order %s failed (%s); retrying", order_id, exc, extra=about_order(order_id))
            return self._retry_later(order_id)
        if order is None:
            log.warning("order %s is owned by another job now; %s dropped", order_id, entry["job"].job_id,
                        extra=about_order(order_id))
            return self._finished(order_id, None)
        self._run(order_id, order)

    def _retry_later(self, order_id: str) -> None:
        ref = self.actor_ref
        self.timers.call_later(RETRY_START_S, lambda: ref.tell(RetryStart(order_id)))

    def _fail(self, order_id: str, reason: str) -> None:
        order = self.orders.get_order(UUID(order_id), with_events=False)
        if order.terminal:
            return
        draft = EventDraft(order.id, "failed", order.attempt,
                           {"error": {"code": "internal_error", "message": f"execution crashed: {reason}"},
                            "attempts": order.attempt}, fence=self.in_flight[order_id]["fence"])
        stored = [r.published() for r in self.orders.append_events([draft]) if not isinstance(r, Exception)]
        if stored:
            try:
                self.bus.publish(stored)
            except StorageError as exc:
                log.warning("publishing the failure of %s failed: %s", order_id, exc, extra=about_order(order_id))

    def _ack(self, job) -> None:
        """Acknowledge `job` (None: nothing to acknowledge) and free its slot, with the others
        finishing now (see FlushAcks)."""
        if self.finished.add(job):
            self.actor_ref.tell(FlushAcks())

    def _flush_acks(self) -> None:
        batch = self.finished.take()
        try:
            self._acknowledge(batch)
        finally:
            if self.finished.done():  # more than MAX_ACKS were waiting
                self.actor_ref.tell(FlushAcks())

    def _acknowledge(self, batch: list) -> None:
        """Ack the batch's jobs in one pipeline, then give the consumer back their slots."""
        jobs = [job for job in batch if job is not None]
        try:
            if jobs:
                self.bus.ack(*jobs)
        except StorageError as exc:
            # The jobs stay pending with this live consumer; if we die, their orders are
            # terminal by then and whoever claims them just acks them.
            log.warning("ack of %d jobs failed: %s", len(jobs), exc)
        if self.consumer is not None and batch:
            self.consumer.tell(SlotFreed(len(batch)))

    def on_stop(self):
        """Runs on the router's thread: ack what finished, stop every order actor (the jobs of
        orders still running stay pending for another worker)."""
        waiting = self.finished.drain()
        if any(job is not None for job in waiting):
            self._acknowledge(waiting)
        refs = self.idle + [e["ref"] for e in self.in_flight.values() if e["ref"] is not None]
        for ref in refs:
            ref.stop(block=False)
        self.idle = []

    def leftovers(self) -> list:
        """Runs on the router's thread as it dies (the root then stops the worker): stop the
        order actors; the jobs of unfinished orders stay pending for another worker."""
        self.on_stop()
        return []
