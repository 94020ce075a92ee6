"""Running the web layer: an HTTP server on `settings.port`, with the event hub subscribed.

The caller (the `engine web` / `engine run` command) owns the IOLoop and the signals, and
binds the port before it starts anything else, so a port in use stops the process before
a worker or a migration has run:

    sockets = bind_port(settings.port)   # PortUnavailable: say so and exit 2
    server = WebServer(storage, settings)
    server.start(sockets=sockets)        # on the IOLoop thread, before or after IOLoop.start()
    ...                                  # IOLoop.current().start()
    await server.stop()
"""
from __future__ import annotations

import errno
import logging
import socket

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from config import Settings
from storage.runtime import Storage
from web.app import make_app
from web.base import DRAIN_LIMIT_BYTES
from web.errors import WebError

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0


class PortUnavailable(WebError):
    """The HTTP port cannot be listened on (in use, or not allowed)."""


def bind_port(port: int, address: str = "") -> list[socket.socket]:
    """Listening sockets on `port` (0: a free one); PortUnavailable, in one sentence, if not."""
    try:
        return bind_sockets(port, address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(f"port {port} is already in use; stop what listens there or set PORT") from None
        raise PortUnavailable(f"cannot listen on port {port}: {exc.strerror or exc}") from None


class WebServer:
    """The Tornado application bound to a port, and its event hub."""

    def __init__(self, storage: Storage, settings: Settings):
        self.storage = storage
        self.settings = settings
        self.app = make_app(storage, settings)
        self.services = self.app.services
        self._http: HTTPServer | None = None
        self.port: int | None = None

    def start(self, port: int | None = None, address: str = "",
              sockets: list[socket.socket] | None = None) -> int:
        """Listen on `sockets` (else bind `port`, 0 picks a free one) and subscribe the hub;
        return the bound port."""
        # No xheaders: the engine uses neither the client address nor the scheme, and checking
        # X-Forwarded-For/X-Real-Ip (getaddrinfo on every request) measured ~8% of the web's CPU.
        self._http = HTTPServer(self.app, max_body_size=DRAIN_LIMIT_BYTES)
        if sockets is None:
            sockets = bind_port(self.settings.port if port is None else port, address)
        self._http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self.services.start()
        log.info("web listening on port %s", self.port)
        if not self.services.keys.enabled:
            log.warning("API_KEYS is not set: the API is open to anyone who can reach port %s", self.port)
        elif not self.services.settings.key_id_secret:
            log.info("KEY_ID_SECRET is not set: owner ids are derived under a secret kept in the database")
        return self.port

    async def stop(self) -> None:
        """Stop accepting, close open connections (WebSockets get 1001), release the hub."""
        if self._http is None:
            return
        http, self._http = self._http, None
        http.stop()
        self.services.stop()
        try:
            await http.close_all_connections()
        except Exception:  # shutting down anyway
            log.warning("error while closing connections", exc_info=True)
        log.info("web stopped")
