"""EventWriter: the one actor that stores status events, in batches, then publishes them.

Every order actor's events come here (STACK-FACTS: a Pony connection per writing
thread, ~0.5 ms per commit). Appends queued while the writer works are taken together:
the writer sends itself `Flush` after the first append of a batch, and since a pykka
inbox is FIFO, `Flush` arrives after every append queued before it. One transaction
stores the batch; only then is it published (stored before published), and only
then are the order actors told.
"""
from __future__ import annotations

import logging

import backoff
import pykka

from actors.messages import AppendEvents, ChildDied, EventsStored, Flush
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
        self.buffer: list[AppendEvents] = []
        self.flush_queued = False
        self.failures = 0
        self._waits = None

    def on_receive(self, message):
        """Runs on the writer's thread."""
        if isinstance(message, AppendEvents):
            self.buffer.append(message)
            if not self.flush_queued:
                self.flush_queued = True
                self.actor_ref.tell(Flush())
        elif isinstance(message, Flush):
            self.flush_queued = False
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer = self.buffer[:MAX_BATCH], self.buffer[MAX_BATCH:]
        drafts = [d for msg in batch for d in msg.drafts]
        try:
            results = self.orders.append_events(drafts)
        except StorageUnavailable as exc:  # the database is down or restarting: keep the batch, retry
            self.buffer = batch + self.buffer
            self._retry_later(exc)
            return
        except Exception as exc:  # a bug, not an outage: refuse the batch, its orders resume
            log.exception("storing %d events failed", len(drafts))
            results = [exc] * len(drafts)
        self.failures, self._waits = 0, None
        stored = [r.to_api() for r in results if not isinstance(r, Exception)]
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
                    msg.reply_to.tell(EventsStored(mine))
                except pykka.ActorDeadError:
                    pass
        if self.buffer and not self.flush_queued:
            self.flush_queued = True
            self.actor_ref.tell(Flush())

    def _retry_later(self, exc: Exception) -> None:
        if self._waits is None:
            self._waits = backoff.expo(base=2, factor=0.05, max_value=2.0)
            self._waits.send(None)
        delay = backoff.full_jitter(next(self._waits))
        self.failures += 1
        log.warning("storing events failed (%s); retry %d in %.2fs", exc, self.failures, delay)
        self.flush_queued = True
        ref = self.actor_ref
        self.timers.call_later(delay, lambda: ref.tell(Flush()))

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on the writer's thread as it dies: tell the root, which restarts it."""
        if self.supervisor is not None:
            self.supervisor.tell(ChildDied("event_writer", repr(exception_value)))
