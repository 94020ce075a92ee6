"""EventWriter: the one actor that stores status events, in batches, then publishes them.

Every order actor's events come here (STACK-FACTS: a Pony connection per writing
thread, ~0.5 ms per commit). Appends are gathered with `storage.batching.Gatherer`:
the writer tells itself `Flush` when the first append of a batch arrives, and since a
pykka inbox is FIFO, every append queued before that `Flush` joins the batch. One
transaction stores it; only then is it published, as one bus message (stored before
published), and only then are the order actors told.
"""
from __future__ import annotations

import logging

import backoff
import pykka

from actors.messages import AppendEvents, EventsStored, Flush
from actors.supervision import SupervisedActor
from config.logs import about_order
from storage.batching import Gatherer
from storage.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

MAX_BATCH = 500


class WriterDied(StorageError):
    """The writer died while storing this batch: whether it was stored is unknown."""


class EventWriter(SupervisedActor):
    """Batches AppendEvents into one transaction, publishes the stored events, replies."""

    child_name = "event_writer"

    def __init__(self, orders, bus, timers, supervisor=None, wait_s: float = 0.0):
        super().__init__(supervisor)
        self.orders = orders
        self.bus = bus
        self.timers = timers
        self.appends: Gatherer[AppendEvents] = Gatherer(MAX_BATCH, wait_s)  # BATCH_WAIT_MS
        self.in_flight: list[AppendEvents] = []  # the batch being stored, until its senders are told
        self.failures = 0
        self._waits = None

    def on_receive(self, message):
        """Runs on the writer's thread."""
        if isinstance(message, AppendEvents):
            if self.appends.add(message):
                self._schedule_flush()
        elif isinstance(message, Flush):
            if self.appends.due():  # else it started early (company came) or was retried
                self._flush()

    def _flush(self) -> None:
        batch = self.in_flight = self.appends.take()
        try:
            results = self._store(batch)
        except StorageUnavailable as exc:  # the database is down or restarting: keep the batch, retry
            self.in_flight = []
            self.appends.failed(batch)
            return self._retry_later(exc)
        self.failures, self._waits = 0, None
        stored = [r.published() for r in results if not isinstance(r, Exception)]
        if stored:
            try:
                self.bus.publish(stored)
            except StorageError as exc:  # listeners fill the gap from the database
                log.warning("publishing %d events failed: %s", len(stored), exc)
        position = 0
        for msg in batch:
            mine = results[position:position + len(msg.drafts)]
            position += len(msg.drafts)
            if msg.reply_to is not None:
                try:
                    msg.reply_to.tell(EventsStored(mine, msg.tag))
                except pykka.ActorDeadError:
                    pass
        self.in_flight = []
        if self.appends.done():
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Flush now, or after waiting a little for company (storage/batching.py)."""
        self.timers.tell(self.actor_ref, Flush(), self.appends.wait())

    def _store(self, batch: list[AppendEvents]) -> list:
        """Append the batch in one transaction; per draft its record or its refusal.

        A failure that is not an outage is a bug somewhere in the batch: each order's drafts
        are then tried on their own, so only the one at fault is refused.
        """
        drafts = [d for msg in batch for d in msg.drafts]
        try:
            return self.orders.append_events(drafts)
        except StorageUnavailable:
            raise
        except Exception as exc:
            if len(batch) == 1:
                order_id = batch[0].drafts[0].order_id
                log.error("storing the events of order %s failed: %r", order_id, exc, extra=about_order(order_id))
                return [exc] * len(drafts)
        return [result for msg in batch for result in self._store([msg])]

    def leftovers(self) -> list:
        """Runs on the writer's thread as it dies: the appends not yet stored go to the next
        writer; the senders of the batch being stored learn that its outcome is unknown (their
        orders resume from what was stored)."""
        for msg in self.in_flight:
            if msg.reply_to is not None:
                try:
                    msg.reply_to.tell(EventsStored([WriterDied("the event writer died")] * len(msg.drafts), msg.tag))
                except pykka.ActorDeadError:
                    pass
        return self.appends.drain() + [m for m in self.drain_inbox() if isinstance(m, AppendEvents)]

    def _retry_later(self, exc: Exception) -> None:
        if self._waits is None:
            self._waits = backoff.expo(base=2, factor=0.05, max_value=2.0)
            self._waits.send(None)
        delay = backoff.full_jitter(next(self._waits))
        self.failures += 1
        log.warning("storing events failed (%s); retry %d in %.2fs", exc, self.failures, delay)
        ref = self.actor_ref
        self.timers.call_later(delay, lambda: ref.tell(Flush()))
