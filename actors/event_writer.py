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

from actors.messages import AppendEvents, ChildDied, EventsStored, Flush
from storage.batching import Gatherer
from storage.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

MAX_BATCH = 500


class EventWriter(pykka.ThreadingActor):
    """Batches AppendEvents into one transaction, publishes the stored events, replies."""

    def __init__(self, orders, bus, timers, supervisor=None):
        super().__init__()
        self.orders = orders
        self.bus = bus
        self.timers = timers
        self.supervisor = supervisor
        self.appends: Gatherer[AppendEvents] = Gatherer(MAX_BATCH)
        self.failures = 0
        self._waits = None

    def on_receive(self, message):
        """Runs on the writer's thread."""
        if isinstance(message, AppendEvents):
            if self.appends.add(message):
                self.actor_ref.tell(Flush())
        elif isinstance(message, Flush):
            self._flush()

    def _flush(self) -> None:
        batch = self.appends.take()
        drafts = [d for msg in batch for d in msg.drafts]
        try:
            results = self.orders.append_events(drafts)
        except StorageUnavailable as exc:  # the database is down or restarting: keep the batch, retry
            self.appends.failed(batch)
            return self._retry_later(exc)
        except Exception as exc:  # a bug, not an outage: refuse the batch, its orders resume
            log.exception("storing %d events failed", len(drafts))
            results = [exc] * len(drafts)
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
        if self.appends.done():
            self.actor_ref.tell(Flush())

    def _retry_later(self, exc: Exception) -> None:
        if self._waits is None:
            self._waits = backoff.expo(base=2, factor=0.05, max_value=2.0)
            self._waits.send(None)
        delay = backoff.full_jitter(next(self._waits))
        self.failures += 1
        log.warning("storing events failed (%s); retry %d in %.2fs", exc, self.failures, delay)
        ref = self.actor_ref
        self.timers.call_later(delay, lambda: ref.tell(Flush()))

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on the writer's thread as it dies: tell the root, which restarts it."""
        if self.supervisor is not None:
            self.supervisor.tell(ChildDied("event_writer", repr(exception_value)))
