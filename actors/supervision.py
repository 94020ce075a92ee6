"""Supervision, written once: how a child reports its death, and how often it may be restarted.

pykka has no supervision of its own (STACK-FACTS): an exception in a `tell` handler kills
the actor and calls its `on_failure`. Every child of the RootSupervisor derives from
`SupervisedActor`, whose `on_failure` tells the root `ChildDied` with whatever the child
was holding that a successor must take over (its `leftovers()`: messages it had accepted
and not yet handled). The root restarts a child at most `RestartIntensity` allows, as an
Erlang/OTP supervisor does, and escalates past that: it stops the worker, the process
manager restarts the process, and other workers take over its jobs meanwhile.
"""
from __future__ import annotations

import logging
import queue
import time
from collections import deque
from typing import Any, Callable

import pykka

from actors.messages import ChildDied

log = logging.getLogger(__name__)


class SupervisedActor(pykka.ThreadingActor):
    """An actor whose death its supervisor hears of, with what it leaves behind."""

    child_name = "child"

    def __init__(self, supervisor=None):
        super().__init__()
        self.supervisor = supervisor

    def leftovers(self) -> list[Any]:
        """Messages this actor accepted and had not handled yet, for its successor (actor's thread)."""
        return []

    def drain_inbox(self) -> list[Any]:
        """The messages still in the inbox of this dead actor (nobody else will handle them)."""
        found = []
        while True:
            try:
                found.append(self.actor_inbox.get_nowait().message)
            except queue.Empty:
                return found

    def on_failure(self, exception_type, exception_value, traceback):
        """Runs on this actor's thread as it dies: tell the supervisor, handing over the leftovers."""
        try:
            left = self.leftovers()
        except Exception:  # a broken cleanup must not hide the death itself
            log.exception("%s: collecting what it held failed", self.child_name)
            left = []
        if self.supervisor is not None:
            self.supervisor.tell(ChildDied(self.child_name, repr(exception_value), tuple(left)))


class RestartIntensity:
    """At most `max_restarts` restarts in any `period_s` seconds (OTP's intensity and period)."""

    def __init__(self, max_restarts: int = 3, period_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.max_restarts = max_restarts
        self.period_s = period_s
        self._clock = clock
        self._restarts: deque[float] = deque()

    def allow(self) -> bool:
        """Count a restart now if the intensity allows it; False means escalate."""
        now = self._clock()
        while self._restarts and self._restarts[0] <= now - self.period_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return False
        self._restarts.append(now)
        return True
