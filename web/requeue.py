"""Requeuer: gets stored orders into the queue when the intake's queue write failed.

The stored order is the commit point: once its row is committed the client is answered
202, and queueing it is the engine's job from then on. When the intake's write to the bus
fails (Redis down, or its reply lost after the jobs were added), the orders are handed here
and written again on this thread, with capped exponential waits (backoff), until the bus
takes them; the reconciler queues any order still without a job if this process dies
first. Writing a job twice is harmless: an order is bound to the first job that claims it,
and a duplicate is dropped (a `pending` event published twice reaches each listener once).

While orders wait here the bus is not taking writes, so the intake refuses new orders with
503 before storing them (`waiting`): a 503 means nothing was stored.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import backoff

from config.logs import about_order
from storage.errors import BusError
from storage.orders import Created

log = logging.getLogger(__name__)

FIRST_WAIT_S = 0.05
MAX_WAIT_S = 2.0


class Requeuer:
    """Queues again, on a thread of its own, orders whose queue write failed."""

    def __init__(self, bus, on_queued: Callable[[int, float], None] = lambda depth, age: None):
        self._bus = bus
        self._on_queued = on_queued  # the queue stats read with the write that succeeded
        self._orders: list[Created] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> bool:
        """Whether orders wait for the bus (so it is not taking writes)."""
        return bool(self._orders)

    def add(self, created: list[Created], cause: BusError) -> None:
        """Queue these stored orders as soon as the bus takes them (any thread)."""
        for c in created:
            log.warning("order %s is stored but its queue write failed (%s); queueing it again", c.order.id,
                        cause, extra=about_order(c.order.id))
        with self._cond:
            self._orders += created
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="web-requeue", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        waits = backoff.expo(base=2, factor=FIRST_WAIT_S, max_value=MAX_WAIT_S)
        next(waits)  # the generator's first value is a placeholder
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._orders or self._closed)
                if self._closed:
                    return
                batch = list(self._orders)
            try:
                accepted = self._bus.accept([str(c.order.id) for c in batch], [c.pending.published() for c in batch])
            except BusError as exc:
                log.warning("queueing %d stored orders again failed (%s); retrying", len(batch), exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, next(waits))
                continue
            waits = backoff.expo(base=2, factor=FIRST_WAIT_S, max_value=MAX_WAIT_S)
            next(waits)
            with self._cond:
                done = {id(c) for c in batch}
                self._orders = [c for c in self._orders if id(c) not in done]
            log.info("queued %d stored orders whose first queue write had failed", len(batch))
            self._on_queued(accepted.queue_depth, accepted.oldest_age_s)

    def close(self) -> None:
        """Stop trying: orders still waiting are queued by the reconciler (they are stored)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._orders:
            log.warning("%d stored orders were not queued by this process; the reconciler will queue them",
                        len(self._orders))
