"""A web process's watch on managed keys: it hears every creation and revocation on the bus
(a "keys" control message, sent by the web process that made the change) and then forgets
what its key cache held about that key and closes the WebSockets opened with a revoked one
(1008, "key revoked").

A lost message must not keep a revoked key working: the cache trusts a key for at most
`web.managed_keys.POSITIVE_TTL_S`, and every SWEEP_S this watch asks the database (one query,
only while WebSockets opened with managed keys are open) whether any of their keys were
revoked. All of it runs on the IOLoop thread (the bus's thread hands each message over).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from web.managed_keys import POSITIVE_TTL_S

log = logging.getLogger(__name__)

TOPIC = "keys"
SWEEP_S = POSITIVE_TTL_S
REVOKED_CLOSE_CODE = 1008
REVOKED_REASON = "key revoked"


def keys_changed(key_id: str, change: str) -> dict:
    """The control message telling every web process that a managed key was created or revoked."""
    return {"topic": TOPIC, "keyId": key_id, "change": change}


class KeyWatch:
    """Follows the "keys" control messages and sweeps the sockets of revoked keys."""

    def __init__(self, services: Any):
        self._services = services
        self._subscription = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: PeriodicCallback | None = None
        self._sweeping = False

    def start(self) -> None:
        """Subscribe to the control channel and start the sweeper (IOLoop thread)."""
        self._loop = IOLoop.current().asyncio_loop
        self._subscription = self._services.storage.bus.subscribe_control(self._on_message)
        self._sweeper = PeriodicCallback(self._sweep, SWEEP_S * 1000)
        self._sweeper.start()

    def stop(self) -> None:
        """Unsubscribe and stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.stop()
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self._services.keys.managed.close()

    def _on_message(self, message: dict) -> None:
        """Bus thread: hand a "keys" message to the IOLoop."""
        if message.get("topic") != TOPIC or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self.changed, message.get("keyId"), message.get("change"))
        except RuntimeError:  # the loop is closed: we are shutting down
            pass

    def changed(self, key_id: str | None, change: str | None) -> None:
        """A key was created or revoked (here or in another web process)."""
        self._services.keys.managed.changed(key_id)
        if change == "revoked" and key_id:
            self.close_sockets({key_id})

    def close_sockets(self, key_ids: set[str]) -> None:
        """Close every open WebSocket that authenticated with one of these keys."""
        for socket in list(self._services.sockets):
            if socket.key_id in key_ids:
                log.info("closing a WebSocket of revoked key %s", socket.key_id)
                socket.close(REVOKED_CLOSE_CODE, REVOKED_REASON)

    async def _sweep(self) -> None:
        if self._sweeping:
            return
        keys = self._services.keys
        managed = {s.key_id for s in self._services.sockets if s.key_id is not None} \
            - set(keys.environment_ids) - keys.operator_ids
        if not managed:
            return
        self._sweeping = True
        try:
            revoked = await self._services.run(self._services.storage.operators.revoked_among, sorted(managed))
        except Exception as exc:  # an outage, a full executor: the next sweep tries again
            log.warning("could not check the keys of open WebSockets: %s", exc)
            return
        finally:
            self._sweeping = False
        if revoked:
            for key_id in revoked:
                keys.managed.changed(key_id)
            self.close_sockets(revoked)
