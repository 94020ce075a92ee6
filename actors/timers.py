"""One timer thread for the whole worker: delays are scheduled, never slept in an actor.

pykka has no timers. An actor that must wait (simulated latency, a retry delay, a
watchdog) asks `Timers.call_later` to `tell` it a message later and goes on serving.

Most timers are watchdogs that are cancelled long before they are due, so the thread is
woken only when a new timer is due before every other one, and cancelled timers leave
the heap once they make up most of it (memory stays bounded under any load).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

import pykka

log = logging.getLogger(__name__)


class TimerHandle:
    """A scheduled call; `cancel()` keeps it from running."""

    __slots__ = ("due", "callback", "cancelled", "_timers")

    def __init__(self, due: float, callback: Callable[[], None], timers: "Timers"):
        self.due = due
        self.callback = callback
        self.cancelled = False
        self._timers = timers

    def cancel(self) -> None:
        """Keep the callback from running (idempotent; any thread)."""
        self._timers._cancel(self)


class Timers:
    """A heap of due callbacks served by one daemon thread; callbacks must be quick (a `tell`)."""

    def __init__(self, name: str = "timers"):
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._cancelled = 0  # cancelled handles still in the heap
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Timers":
        self._thread.start()
        return self

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` on the timer thread after `delay` seconds."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback, self)
        with self._cond:
            earliest = self._heap[0][0] if self._heap else float("inf")
            heapq.heappush(self._heap, (handle.due, next(self._counter), handle))
            if handle.due < earliest:  # the thread sleeps until `earliest`: wake it only if sooner
                self._cond.notify()
        return handle

    def tell(self, ref, message, delay: float) -> None:
        """Tell `ref` `message` now, or after `delay` seconds from the timer thread (a batch that
        waits for company: storage/batching.py)."""
        if delay > 0:
            self.call_later(delay, lambda: ref.tell(message))
        else:
            ref.tell(message)

    def _cancel(self, handle: TimerHandle) -> None:
        with self._cond:
            if handle.cancelled or handle.callback is None:  # cancelled already, or run
                return
            handle.cancelled = True
            handle.callback = None  # what it would have told is garbage now
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        """Timers in the heap that will still run."""
        with self._cond:
            return len(self._heap) - self._cancelled

    def stop(self) -> None:
        """Stop the thread; pending callbacks are dropped."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, handle = heapq.heappop(self._heap)
                if handle.cancelled:
                    self._cancelled -= 1
                    continue
                callback, handle.callback = handle.callback, None
            try:
                callback()
            except pykka.ActorDeadError:
                pass  # the actor it was meant for has finished: nothing to do
            except Exception:  # a dead recipient must not stop every other timer
                log.exception("timer callback failed")
