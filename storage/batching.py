"""Gathering work into batches: the one policy the web's intake, the event writer and the
simulated chain share ("group commit", the way a chain lands a block).

A batch starts as soon as the first item arrives and no batch is in flight; whatever
arrives while a batch is being processed waits and forms the next one, up to
`max_batch` items. An idle system processes each item at once (latency of one), a busy
one processes many per transaction (throughput).

Between the two, at a steady moderate rate (half of what the engine can take), each batch
would hold one item and pay every fixed cost alone (a commit, a round trip, a thread's
wake-up): twice the CPU per order of a busy engine, and the queueing that comes with it.
So a batch that would start with one item may wait for company (`Company`): at most
`wait_s`, and only while items arrive less than `wait_s` apart and recent waits did bring
company. It starts as soon as one more item joins. A client that sends one order after
another (each waits for the last) never brings company, so its orders never wait (one wait
in `PROBE_EVERY` chances checks again); nor does a busy engine's batch, never alone.

The owner decides how a batch gets run (a pykka actor tells itself a message, the web
hands it to its intake thread): `Gatherer` only answers "start one now?" and "what is
in it?". It is not thread-safe; each owner uses it from one thread.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

BRINGS = 0.25  # waits that brought fewer items than this, on average, stop (but for probes)
PROBE_EVERY = 128  # when waits stopped bringing company: wait once in this many chances anyway
ENOUGH = 2  # a batch waiting for company starts as soon as this many more items joined it
GAP_SMOOTHING = 0.05  # weight of the newest gap: the rate over the last ~20 arrivals
SMOOTHING = 0.25  # weight of the newest figure in the moving averages


class Company:
    """Whether a lone item should wait for the next: the recent time between arrivals, and
    how much company recent waits brought (both moving averages)."""

    def __init__(self, wait_s: float, clock: Callable[[], float] = time.monotonic):
        self.wait_s = wait_s
        self._clock = clock
        self.gap = math.inf  # seconds between arrivals, recently
        self._last = -math.inf
        self.brought = 0.0  # items that joined a waiting batch, recently (0 until a wait shows more)
        self._chances = 0

    def arrived(self, count: int = 1) -> None:
        """`count` items arrived now."""
        now = self._clock()
        if self._last > -math.inf:
            gap = (now - self._last) / count
            self.gap = gap if self.gap == math.inf else self.gap + GAP_SMOOTHING * (gap - self.gap)
        self._last = now

    def wait(self) -> float:
        """How long a batch of one should wait for company now (0: start at once)."""
        if not self.wait_s or self.gap > self.wait_s:
            return 0.0
        self._chances += 1
        if self.brought < BRINGS and self._chances % PROBE_EVERY:
            return 0.0
        return self.wait_s

    def waited(self, joined: int) -> None:
        """A wait ended with `joined` more items than it started with."""
        self.brought += SMOOTHING * (joined - self.brought)


class Gatherer(Generic[T]):
    """Items waiting for the next batch, and whether a batch is in flight."""

    def __init__(self, max_batch: int, wait_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._items: list[T] = []
        self._busy = False
        self._scheduled = False
        self.company = Company(wait_s, clock) if wait_s > 0 else None
        self._waiting_with = 0  # the items a batch waiting for company started with (0: not waiting)

    def add(self, item: T) -> bool:
        """Queue `item`; True when the owner should start a batch now: none was scheduled or in
        flight, or the one waiting for company has it now."""
        if self.company is not None:
            self.company.arrived()
        self._items.append(item)
        if self._waiting_with and len(self._items) >= self._waiting_with + ENOUGH:
            # company came: start now (the owner's timer then finds it started)
            self.company.waited(len(self._items) - self._waiting_with)
            self._waiting_with = 0
            return True
        return self._schedule()

    def wait(self) -> float:
        """Called when `add` or `done` said to schedule a batch: how long it should wait for
        company first (0: start it now). The owner then starts it when `add` says so or its
        timer fires, whichever comes first, through `due`."""
        if self.company is None or len(self._items) != 1:
            return 0.0
        wait = self.company.wait()
        self._waiting_with = 1 if wait else 0
        return wait

    def due(self) -> bool:
        """Whether a scheduled start (a timer's, or an early one) should take a batch now: False
        when that batch already started."""
        return self._scheduled and not self._busy

    def take(self) -> list[T]:
        """The scheduled batch is starting: the items it holds (at most `max_batch`, oldest first)."""
        if self._waiting_with:
            self.company.waited(len(self._items) - self._waiting_with)
            self._waiting_with = 0
        self._scheduled = False
        self._busy = True
        batch, self._items = self._items[:self.max_batch], self._items[self.max_batch:]
        return batch

    def done(self) -> bool:
        """The batch in flight has finished; True when the owner should schedule the next one."""
        self._busy = False
        return self._schedule()

    def drain(self) -> list[T]:
        """Every item not yet taken into a batch (the owner is going away)."""
        items, self._items = self._items, []
        return items

    def failed(self, batch: list[T]) -> None:
        """The batch could not be processed: its items go back to the front, and the owner must
        schedule the retry itself (on a timer, with backoff); `add` schedules nothing meanwhile."""
        self._items[:0] = batch
        self._busy = False
        self._scheduled = True

    def _schedule(self) -> bool:
        if self._busy or self._scheduled or not self._items:
            return False
        self._scheduled = True
        return True

    @property
    def waiting(self) -> int:
        """Items not yet taken into a batch."""
        return len(self._items)

    @property
    def busy(self) -> bool:
        """A batch is in flight."""
        return self._busy
