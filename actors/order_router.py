"""OrderRouter: the router pool. One OrderActor per in-flight order, supervised here.

It loads each job's order, starts its actor, acks the job once the order is terminal
and frees the slot. When an order actor dies unexpectedly it resumes the order from
its stored state (a fresh actor), and after `MAX_RESTARTS` fails it with a reason:
an order is never left hanging.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

import pykka

from actors.messages import (
    AttachConsumer,
    ChildDied,
    ExecuteOrder,
    InFlight,
    OrderActorDied,
    OrderFinished,
    SlotFreed,
)
from actors.order_actor import OrderActor
from storage.errors import OrderNotFound, StorageError
from storage.records import EventDraft

log = logging.getLogger(__name__)

MAX_RESTARTS = 2


@dataclass(frozen=True)
class RetryStart:
    """Load and start an order again (after the database failed to answer)."""

    order_id: str


@dataclass(frozen=True)
class FlushAcks:
    """Acknowledge the finished jobs collected so far (self-sent: one round trip for many)."""


class OrderRouter(pykka.ThreadingActor):
    """Supervises the order actors of this worker."""

    def __init__(self, orders, bus, directory, timers, policy, new_signature, worker_id, supervisor=None):
        super().__init__()
        self.orders = orders
        self.bus = bus
        self.directory = directory
        self.timers = timers
        self.policy = policy
        self.new_signature = new_signature
        self.worker_id = worker_id
        self.supervisor = supervisor
        self.consumer = None
        self.in_flight: dict[str, dict] = {}
        self.acks: list = []  # finished jobs not acknowledged yet

    def on_receive(self, message):
        """Runs on the router's thread."""
        if isinstance(message, ExecuteOrder):
            self._execute(message.job)
        elif isinstance(message, OrderFinished):
            self._finished(message.order_id)
        elif isinstance(message, OrderActorDied):
            self._died(message.order_id, message.reason)
        elif isinstance(message, RetryStart):
            if message.order_id in self.in_flight:
                self._start(message.order_id)
        elif isinstance(message, FlushAcks):
            self._flush_acks()
        elif isinstance(message, AttachConsumer):
            self.consumer = message.consumer
        elif isinstance(message, InFlight):
            return len(self.in_flight)

    def _execute(self, job) -> None:
        if job.order_id in self.in_flight:  # the same order queued twice: one execution is enough
            self._ack(job)
            return self._free_slot()
        self.in_flight[job.order_id] = {"job": job, "restarts": 0, "ref": None}
        self._start(job.order_id)

    def _start(self, order_id: str) -> None:
        entry = self.in_flight[order_id]
        try:
            order = self.orders.claim(UUID(order_id), entry["job"].job_id, self.worker_id)
            if order is None:
                log.warning("order %s is owned by another job; duplicate job %s dropped", order_id, entry["job"].job_id)
                return self._finished(order_id)
        except (OrderNotFound, ValueError):
            log.warning("job %s names no order %s; dropped", entry["job"].job_id, order_id)
            return self._finished(order_id)
        except Exception as exc:  # the database is unreachable: try again shortly
            log.warning("loading order %s failed (%s); retrying", order_id, exc)
            ref = self.actor_ref
            self.timers.call_later(1.0, lambda: ref.tell(RetryStart(order_id)))
            return
        try:
            entry["ref"] = OrderActor.start(
                order, directory=self.directory, timers=self.timers, router=self.actor_ref,
                policy=self.policy, new_signature=self.new_signature, worker_id=self.worker_id,
            )
        except Exception as exc:  # an order this worker cannot even load must fail, not hang
            log.exception("order %s: cannot start its actor", order_id)
            self._fail(order_id, repr(exc))
            self._finished(order_id)

    def _finished(self, order_id: str) -> None:
        entry = self.in_flight.pop(order_id, None)
        if entry is None:
            return
        if entry["ref"] is not None:
            entry["ref"].stop(block=False)
        self._ack(entry["job"])
        self._free_slot()

    def _died(self, order_id: str, reason: str) -> None:
        entry = self.in_flight.get(order_id)
        if entry is None:
            return
        entry["restarts"] += 1
        if entry["restarts"] <= MAX_RESTARTS:
            log.warning("order %s: actor died (%s); resuming from its stored state", order_id, reason)
            return self._start(order_id)
        log.error("order %s: actor died %d times (%s); failing the order", order_id, entry["restarts"], reason)
        try:
            self._fail(order_id, reason)
        except StorageError as exc:  # cannot record the failure now: resume it later instead
            log.warning("recording the failure of %s failed (%s); retrying", order_id, exc)
            ref = self.actor_ref
            self.timers.call_later(1.0, lambda: ref.tell(RetryStart(order_id)))
            return
        self._finished(order_id)

    def _fail(self, order_id: str, reason: str) -> None:
        order = self.orders.get_order(UUID(order_id), with_events=False)
        if order.terminal:
            return
        draft = EventDraft(order.id, "failed", order.attempt,
                           {"error": {"code": "internal_error", "message": f"execution crashed: {reason}"},
                            "attempts": order.attempt})
        stored = [r.to_api() for r in self.orders.append_events([draft]) if not isinstance(r, Exception)]
        if stored:
            try:
                self.bus.publish(stored)
            except StorageError as exc:
                log.warning("publishing the failure of %s failed: %s", order_id, exc)

    def _ack(self, job) -> None:
        # Orders finishing together are acknowledged together: FlushAcks arrives after the
        # OrderFinished messages already queued (a pykka inbox is FIFO).
        if not self.acks:
            self.actor_ref.tell(FlushAcks())
        self.acks.append(job)

    def _flush_acks(self) -> None:
        jobs, self.acks = self.acks, []
        try:
            self.bus.ack(*jobs)
        except StorageError as exc:
            # The jobs stay pending with this live consumer; if we die, their orders are
            # terminal by then and whoever claims them just acks them.
            log.warning("ack of %d jobs failed: %s", len(jobs), exc)

    def _free_slot(self) -> None:
        if self.consumer is not None:
            self.consumer.tell(SlotFreed())

    def on_stop(self):
        """Runs on the router's thread: ack what finished, stop the order actors still alive
        (their jobs stay pending for another worker)."""
        if self.acks:
            self._flush_acks()
        for entry in self.in_flight.values():
            if entry["ref"] is not None:
                entry["ref"].stop(block=False)

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on the router's thread as it dies: the root stops the worker."""
        self.on_stop()
        if self.supervisor is not None:
            self.supervisor.tell(ChildDied("order_router", repr(exception_value)))
