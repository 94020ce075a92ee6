"""Gathering work into batches: the one policy the web's intake, the event writer and the
simulated chain share ("group commit", the way a chain lands a block).

A batch starts as soon as the first item arrives and no batch is in flight; whatever
arrives while a batch is being processed waits and forms the next one, up to
`max_batch` items. Nothing ever waits on a timer: an idle system processes each item
at once (latency of one), a busy one processes many per transaction (throughput).

The owner decides how a batch gets run (a pykka actor tells itself a message, the web
hands it to its intake thread): `Gatherer` only answers "start one now?" and "what is
in it?". It is not thread-safe; each owner uses it from one thread.
"""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Gatherer(Generic[T]):
    """Items waiting for the next batch, and whether a batch is in flight."""

    def __init__(self, max_batch: int):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._items: list[T] = []
        self._busy = False
        self._scheduled = False

    def add(self, item: T) -> bool:
        """Queue `item`; True when the owner should schedule a batch now (none scheduled or in flight)."""
        self._items.append(item)
        return self._schedule()

    def take(self) -> list[T]:
        """The scheduled batch is starting: the items it holds (at most `max_batch`, oldest first)."""
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
