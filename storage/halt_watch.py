"""HaltWatch: one process's view of the active halts, kept current.

The database holds the halts; every web process and every worker keeps a `HaltSet` of the
active ones in memory, so that checking an order is a lookup, never a round trip. The view is
reloaded from the database (one small query) when:
- the bus broadcasts that the halts changed (a control message, sent by the web process that
  made the change, after its commit): every process hears it within a pub/sub hop;
- every HALT_REFRESH_SECONDS, the backstop for a control message pub/sub lost (a Redis
  restart, a process that was reconnecting), so a missed message costs at most that long;
- the process that made the change reloads at once, before it answers the operator.

Listeners (the worker's trigger book) are told of each change, on the watch's thread, after
`current` was replaced: whoever reads `current` when told sees the new set.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from storage.errors import StorageError
from storage.halts import NOTHING_HALTED, HaltSet, HaltStore

log = logging.getLogger(__name__)

CONTROL_HALTS = {"topic": "halts"}  # the control message: the active halts changed, read them again
RETRY_S = 0.5  # until the first load succeeds, try again this often


class HaltWatch:
    """Keeps `current` (a HaltSet) equal to the database's active halts, give or take a bus hop."""

    def __init__(self, store: HaltStore, bus, refresh_s: float):
        self.store = store
        self.bus = bus
        self.refresh_s = refresh_s
        self.current: HaltSet = NOTHING_HALTED  # replaced whole; read from any thread
        self.loaded = False
        self._listeners: list[Callable[[HaltSet], None]] = []
        self._lock = threading.Lock()  # one load at a time
        self._wake = threading.Event()
        self._stopped = False
        self._subscription = None
        self._thread = threading.Thread(target=self._run, name="halt-watch", daemon=True)

    def listen(self, listener: Callable[[HaltSet], None]) -> None:
        """Call `listener(new_set)` after each change (on the watch's thread)."""
        self._listeners.append(listener)

    def start(self) -> HaltWatch:
        """Subscribe to control messages, load the halts once (if the database answers), then
        keep them current on a thread of its own."""
        try:
            self._subscription = self.bus.subscribe_control(self._heard)
        except StorageError as exc:  # the periodic reload stands in until the bus is back
            log.warning("halts: cannot subscribe to control messages (%s); reloading every %.1fs only",
                        exc, self.refresh_s)
        self.reload()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and reloading (idempotent)."""
        self._stopped = True
        self._wake.set()
        if self._subscription is not None:
            self._subscription.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def announce(self) -> None:
        """The halts changed here (committed): reload now, then tell every other process."""
        self.reload()
        try:
            self.bus.publish_control(CONTROL_HALTS)
        except StorageError as exc:  # the others see it at their next periodic reload
            log.warning("halts: could not broadcast a change (%s); other processes see it within %.1fs",
                        exc, self.refresh_s)

    def reload(self) -> bool:
        """Read the active halts now; True if the read succeeded."""
        with self._lock:
            try:
                halts = HaltSet.of(self.store.active())
            except StorageError as exc:
                log.warning("halts: cannot read the active halts (%s); keeping the last ones read", exc)
                return False
            self.loaded = True
            if halts == self.current:
                return True
            self.current = halts
            what = ", ".join(f"{h.describe()} ({h.reason})" for h in halts.halts) if halts else "none"
            log.warning("halts: now halted: %s", what)
        for listener in self._listeners:
            try:
                listener(halts)
            except Exception:  # noqa: BLE001 - one listener's failure must not stop the watch
                log.exception("halts: a listener failed")
        return True

    def _heard(self, message: dict) -> None:
        """Bus thread: a control message. The reload runs on the watch's thread."""
        if message.get("topic") == CONTROL_HALTS["topic"]:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.refresh_s if self.loaded else min(self.refresh_s, RETRY_S))
            self._wake.clear()
            if not self._stopped:
                self.reload()
