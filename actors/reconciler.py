"""Reconciler: puts an order back in the queue when its job was lost.

A job can be lost: a web process killed between storing an order and queueing it, a job
deleted from the stream by hand, or Redis restarting without persistence (the in-process
bus of `engine run` starts empty too). The order then sits in the database, unfinished,
with nobody to run it. Every RECONCILE_EVERY_SECONDS (10) one worker at a time (a lock
on the bus) looks for unfinished orders older than RECONCILE_MIN_AGE_SECONDS (10; younger
ones may still be on their way into the queue) with an indexed query, and queues again
each one that has no job in the queue and that no live worker holds. An order's job is bound to it by its claim in the
database (and every claim raises its fence), so a job queued twice never runs it twice.

The bus also keeps an epoch: a new one means the bus's data is new (first start, or lost).
The worker that creates it (the epoch is checked every fifth of RECONCILE_EVERY_SECONDS)
reconciles sooner, once live workers have had time to heartbeat again (three beats), for
every unfinished order older than the epoch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from actors.supervision import SupervisedActor
from config.settings import Settings
from storage.errors import StorageError
from storage.records import utcnow

log = logging.getLogger(__name__)

LOCK_S = 60.0
PAGE = 1000  # unfinished orders read at a time


@dataclass(frozen=True)
class CheckEpoch:
    """Periodic: has the bus's data been replaced?"""


@dataclass(frozen=True)
class Reconcile:
    """Queue again what lost its job, among the orders created before `before` (None: the minimum age ago)."""

    before: datetime | None = None
    periodic: bool = False


class Reconciler(SupervisedActor):
    """Finds unfinished orders that lost their job and queues them again."""

    child_name = "reconciler"

    def __init__(self, orders, bus, timers, worker_id: str = "reconciler", supervisor=None, settings=None):
        super().__init__(supervisor)
        self.orders = orders
        self.bus = bus
        self.timers = timers
        self.worker_id = worker_id
        settings = settings or Settings()
        self.every_s = settings.reconcile_every_s
        # An order is queued again within about every_s + min_age_s of losing its job.
        self.min_age_s = settings.reconcile_min_age_s
        self.check_every_s = settings.reconcile_every_s / 5
        self.grace_s = 3 * settings.heartbeat_every_s  # three beats for live workers to show up again

    def on_start(self):
        """Runs on the reconciler's thread."""
        self.actor_ref.tell(CheckEpoch())
        self._later(self.every_s, Reconcile(periodic=True))

    def on_receive(self, message):
        """Runs on the reconciler's thread."""
        if isinstance(message, CheckEpoch):
            self._check()
            self._later(self.check_every_s, CheckEpoch())
        elif isinstance(message, Reconcile):
            try:
                self.reconcile(message.before)
            except StorageError as exc:  # try again shortly: the jobs are still missing
                log.warning("reconciling failed (%s); retrying", exc)
                if not message.periodic:
                    self._later(self.check_every_s, message)
            if message.periodic:
                self._later(self.every_s, message)

    def _check(self) -> None:
        try:
            epoch, created = self.bus.ensure_epoch()
        except StorageError as exc:
            log.warning("cannot read the bus epoch: %s", exc)
            return
        if created:
            log.info("the bus's data is new (epoch %s): reconciling in %.1fs", epoch, self.grace_s)
            self._later(self.grace_s, Reconcile(utcnow()))

    def reconcile(self, before: datetime | None = None) -> int:
        """Queue again every unfinished order created before `before` that has no job in the
        queue and that no live worker holds; the number queued (0 if another worker holds the lock)."""
        if not self.bus.try_lock("reconcile", self.worker_id, LOCK_S):
            return 0
        try:
            return self._reconcile(before or utcnow() - timedelta(seconds=self.min_age_s))
        finally:
            self.bus.unlock("reconcile", self.worker_id)

    def _reconcile(self, before: datetime) -> int:
        live = queued = None
        requeued, after = 0, None
        while True:  # every unfinished order, a page at a time: thousands armed hide no lost one
            page = self.orders.unfinished_orders(created_before=before, limit=PAGE, after=after)
            if not page:
                break
            if live is None:
                live, queued = self.bus.live_consumers(), self.bus.queued_order_ids()
                waiting = self.bus.waiting_order_ids()
            for order_id, job_id, worker, _ in page:
                if job_id is None and str(order_id) in queued and str(order_id) not in waiting:
                    # Fetched this long ago and never claimed: a fetch whose reply was lost (a
                    # connection cut, a Redis Cluster failover) left the job with a consumer that
                    # never saw it. A second job is harmless: the first claim binds the order.
                    log.warning("order %s: its job was fetched but never started; queueing it again", order_id)
                elif str(order_id) in queued:
                    continue  # waiting, or held by a consumer (a dead one's jobs are claimed, not requeued)
                if job_id is not None:
                    if worker in live or not self.orders.release_job(order_id, job_id):
                        continue
                self.bus.enqueue(str(order_id))
                requeued += 1
            if len(page) < PAGE:
                break
            after = (page[-1][3], page[-1][0])
        if requeued:
            log.warning("queued again %d unfinished orders whose jobs were lost", requeued)
        return requeued

    def _later(self, delay: float, message) -> None:
        ref = self.actor_ref
        self.timers.call_later(delay, lambda: ref.tell(message))
