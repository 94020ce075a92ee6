"""Reconciler: puts orders back in the queue when the bus has lost its jobs.

Redis without persistence loses its streams when it restarts, and the in-process bus
of `engine run` starts empty every time: queued jobs are gone while their orders sit
in the database. The bus keeps an epoch; a new one means new, empty bus data, and the
worker that created it reconciles: once live workers have had time to heartbeat again,
every unfinished order older than the epoch that no live worker holds is queued again,
oldest first. An order whose job a live worker holds is never touched, and a claim in
the database lets only one job run an order, so a job queued twice never runs twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pykka

from actors.messages import ChildDied
from storage.errors import StorageError
from storage.records import utcnow

log = logging.getLogger(__name__)

CHECK_EVERY = 2.0
GRACE_S = 3.0  # live workers heartbeat every second: three beats to show up again


@dataclass(frozen=True)
class CheckEpoch:
    """Periodic: has the bus's data been replaced?"""


@dataclass(frozen=True)
class Reconcile:
    """Queue again what the lost bus data held (orders created before `epoch_at`)."""

    epoch_at: object


class Reconciler(pykka.ThreadingActor):
    """Watches the bus's epoch and re-queues lost jobs."""

    def __init__(self, orders, bus, timers, supervisor=None):
        super().__init__()
        self.orders = orders
        self.bus = bus
        self.timers = timers
        self.supervisor = supervisor

    def on_start(self):
        """Runs on the reconciler's thread."""
        self.actor_ref.tell(CheckEpoch())

    def on_receive(self, message):
        """Runs on the reconciler's thread."""
        if isinstance(message, CheckEpoch):
            self._check()
            self._later(CHECK_EVERY, CheckEpoch())
        elif isinstance(message, Reconcile):
            try:
                self.reconcile(message.epoch_at)
            except StorageError as exc:  # try again shortly: the jobs are still missing
                log.warning("reconciling failed (%s); retrying", exc)
                self._later(CHECK_EVERY, message)

    def _check(self) -> None:
        try:
            epoch, created = self.bus.ensure_epoch()
        except StorageError as exc:
            log.warning("cannot read the bus epoch: %s", exc)
            return
        if created:
            log.info("the bus's data is new (epoch %s): reconciling in %.0fs", epoch, GRACE_S)
            self._later(GRACE_S, Reconcile(utcnow()))

    def reconcile(self, epoch_at) -> int:
        """Queue every unfinished order created before `epoch_at` that no live worker holds."""
        live = self.bus.live_consumers()
        queued = 0
        for order_id, job_id, worker, created_at in self.orders.unfinished_orders():
            if created_at >= epoch_at:
                continue  # queued after the loss, in the new data
            if job_id is not None:
                if worker in live or not self.orders.release_job(order_id, job_id):
                    continue
            self.bus.enqueue(str(order_id))
            queued += 1
        if queued:
            log.warning("re-queued %d unfinished orders whose jobs the bus had lost", queued)
        return queued

    def _later(self, delay: float, message) -> None:
        ref = self.actor_ref
        self.timers.call_later(delay, lambda: ref.tell(message))

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on the reconciler's thread as it dies: the root stops the worker."""
        if self.supervisor is not None:
            self.supervisor.tell(ChildDied("reconciler", repr(exception_value)))
