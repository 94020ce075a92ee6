"""One listener's view of one order's events: in `seq` order, each exactly once.

Runs on the IOLoop thread only. The hub offers live events and database fills; the
feed delivers `seq == next_seq`, drops what it already delivered, and buffers what
comes early until the gap is filled.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

from storage.records import BusEvent
from storage.status import TERMINAL


class Listener(Protocol):
    """A connection that receives events (a WebSocket handler). Called on the IOLoop thread."""

    def deliver(self, event: BusEvent) -> None:
        """Send one event (its JSON text, as encoded once by the writer)."""

    def order_found(self, order_id: str) -> None:
        """The order exists; its history follows (a firehose answers `subscribed` here)."""

    def order_missing(self, order_id: str, reason: Exception | None = None) -> None:
        """The order does not exist (or is not the caller's); `reason`: OrderArchived when it
        was archived (answered as such), else None."""

    def order_finished(self, order_id: str) -> None:
        """The order's terminal event has been delivered: nothing more will come."""


IDLE_S = 2.0  # no progress for this long: check the database for a lost event
MAX_IDLE_S = 30.0  # back-off ceiling for orders that stay quiet (armed limit orders)


class OrderFeed:
    """Delivery state of one order on one listener (`owner`: whose order the listener may see;
    None for anyone)."""

    __slots__ = ("listener", "order_id", "owner", "next_seq", "pending", "initial", "filling", "refill",
                 "requested", "done", "closed", "_clock", "last_progress", "_idle_s", "idle_after")

    def __init__(self, listener: Listener, order_id: str, next_seq: int, *, initial: bool,
                 owner: str | None = None, clock: Callable[[], float] = time.monotonic, idle_s: float = IDLE_S):
        self.listener = listener
        self.order_id = order_id
        self.owner = owner
        self.next_seq = next_seq
        self.pending: dict[int, BusEvent] = {}
        # Until the first database load has confirmed the order and sent its history,
        # live events are only buffered, so nothing overtakes the history.
        self.initial = initial
        self.filling = False
        self.refill = False
        self.requested = False  # asked for by a `subscribe` (counts against the connection's bound)
        self.done = False
        self.closed = False
        self._clock = clock
        self.last_progress = clock()
        self._idle_s = idle_s
        self.idle_after = idle_s

    def offer(self, event: BusEvent) -> bool:
        """Take one event (live or from the database); return True when a gap waits to be filled."""
        if self.done or self.closed:
            return False
        seq = event.seq
        if seq < self.next_seq:
            return False  # delivered already
        if self.initial or seq > self.next_seq:
            self.pending.setdefault(seq, event)
            return not self.initial
        self._deliver(event)
        self.drain()
        return bool(self.pending)

    def drain(self) -> None:
        """Deliver buffered events that are now next in line; forget ones already delivered."""
        while not self.done and self.next_seq in self.pending:
            self._deliver(self.pending.pop(self.next_seq))
        for seq in [s for s in self.pending if s < self.next_seq]:
            del self.pending[seq]

    def _deliver(self, event: BusEvent) -> None:
        self.next_seq = event.seq + 1
        self.last_progress = self._clock()
        self.idle_after = self._idle_s
        self.listener.deliver(event)
        if event.status in TERMINAL:
            self.finish()

    def finish(self) -> None:
        """Nothing more will come for this order on this listener."""
        if self.done:
            return
        self.done = True
        self.pending.clear()
        self.listener.order_finished(self.order_id)

    def idle(self, now: float) -> bool:
        """True when the sweeper should look in the database for events this feed missed, or
        read its history again: a first read that failed (the database was down) is retried
        like any other, so the listener never waits in silence."""
        return not (self.done or self.closed or self.filling) and now - self.last_progress >= self.idle_after

    def backed_off(self, now: float) -> None:
        """A sweep is starting: wait longer before the next one unless events arrive."""
        self.last_progress = now
        self.idle_after = min(self.idle_after * 2, MAX_IDLE_S)
