"""Directory: the current ActorRef of each restartable child, so a restart needs no re-wiring."""
from __future__ import annotations

import threading


class Directory:
    """Thread-safe name -> ActorRef map; the root supervisor replaces an entry when it restarts a child."""

    def __init__(self):
        self._refs = {}
        self._lock = threading.Lock()

    def get(self, name: str):
        """The live ref registered under `name` (KeyError if none)."""
        with self._lock:
            return self._refs[name]

    def put(self, name: str, ref) -> None:
        """Register or replace `name`."""
        with self._lock:
            self._refs[name] = ref

    def remove(self, name: str):
        """Forget `name`, returning its ref (or None)."""
        with self._lock:
            return self._refs.pop(name, None)
