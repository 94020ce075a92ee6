"""What every handler receives through `initialize`: storage, settings, the executor hop, the
key ring, the submission and per-caller rate limiters, metrics, the event hub and the intake.

Database and bus calls block, so handlers never make them on the IOLoop: `run` hands
them to a small thread pool (Pony keeps one connection per thread, so few threads)
with a bounded queue: past it a request answers 503 at once instead of waiting in memory.

A module of its own, below the handlers: it imports the parts it wires together and none of
the handler modules, so `web/` has no import circle (tests/unit/test_web_imports.py checks).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from tornado import websocket

from config import Settings
from storage.risk import KeyLimits, LimitsProvider, default_limits
from storage.halt_watch import HaltWatch
from storage.runtime import Storage
from storage.secrets import shared_secret
from web.access import KeyRing
from web.callbacks import CallbackDefaults
from web.errors import ApiError
from web.hub import EventHub
from web.intake import OrderIntake
from web.key_watch import KeyWatch
from web.managed_keys import ManagedKeys
from web.metrics import WebMetrics
from web.quote_stream import QuoteStream
from web.rate_limits import CallerLimits
from web.submit_limit import SubmissionLimiter

T = TypeVar("T")

EXECUTOR_THREADS = 8
EXECUTOR_QUEUE_MAX = 1000  # calls waiting for an executor thread; beyond, 503 at once


def key_id_secret(storage: Storage, settings: Settings) -> bytes:
    """The secret API keys become owner ids under: KEY_ID_SECRET, the same in every web
    process's environment (kept off the database, so a copy of it reverses no id); else one the
    engine keeps in its database (every process reads the same one)."""
    if settings.key_id_secret:
        return settings.key_id_secret.encode()
    return shared_secret(storage.db)


class Services:
    """The dependencies handlers receive through `initialize`: storage, settings, hub, intake, metrics.

    `limits_for` gives an owner's risk limits (default: the settings', each replaced by its
    managed key's own where keys are managed). `hub_options` tune the EventHub (tests shorten its sweep interval and idle time).
    """

    def __init__(self, storage: Storage, settings: Settings, executor: ThreadPoolExecutor | None = None,
                 limits_for: LimitsProvider | None = None, **hub_options: Any):
        self.storage = storage
        self.settings = settings
        self.executor = executor or ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="web-io")
        self._queued = 0  # calls handed to the executor and not finished
        # Managed keys (created by operators) need the operator API, or ones created before.
        managed = bool(settings.admin_keys) or storage.operators.has_keys()
        keyed = settings.api_keys or settings.admin_keys or managed
        self.keys = KeyRing(settings.api_keys, key_id_secret(storage, settings) if keyed else b"",
                            admin_keys=settings.admin_keys, enabled=managed,
                            managed=ManagedKeys(storage.operators.live_keys_by_digest) if managed else None)
        self.key_watch = KeyWatch(self) if managed else None
        # KEY_RATE_LIMIT applies where keys are configured (it counts per key).
        self.limiter = (SubmissionLimiter(storage.bus, settings.key_rate_limit, settings.rate_window_s)
                        if self.keys.enabled else None)
        # Quotes, lists, subscribe frames, WebSocket handshakes: per key, else per address.
        self.rate_limits = CallerLimits(storage.bus, settings, keyed=self.keys.enabled)
        self.metrics = WebMetrics(halts=lambda: len(self.halts.current.halts))  # read when scraped
        self.hub = EventHub(storage.orders, storage.bus, self.run, self.metrics, **hub_options)
        self.intake = OrderIntake(storage, settings.queue_max_depth,
                                  on_pending=lambda events: self.hub.remember([e.published() for e in events]),
                                  queue_max_wait_s=settings.queue_max_wait_s,
                                  limits_for=limits_for or self._limits_provider(managed),
                                  batch_wait_s=settings.batch_wait_ms / 1000)
        self.sockets: set[websocket.WebSocketHandler] = set()  # open WebSockets, closed on stop
        self.quotes: QuoteStream | None = None  # streamed quotes: make_app gives it the quote function
        # The active halts (checked on every submit: a lookup in memory), kept current from the bus.
        self.halts = HaltWatch(storage.halts, storage.bus, settings.halt_refresh_s)
        self.callback_defaults = CallbackDefaults(self)  # webhooks: an owner's default callbackUrl

    def _limits_provider(self, managed: bool) -> LimitsProvider:
        """The settings' limits for everyone; where keys are managed, a managed key's own limits
        replace them for its owner (read again at most every 2 s)."""
        defaults = default_limits(self.settings)
        if not managed:
            return defaults
        return KeyLimits(self.storage.operators.limits_of, defaults(""))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call on the executor and await its result (IOLoop thread only);
        a 503 `not_ready` when EXECUTOR_QUEUE_MAX calls are already waiting."""
        if self._queued >= EXECUTOR_QUEUE_MAX:
            raise ApiError(503, "not_ready", "the server is waiting on its database; retry later")
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self._queued -= 1

    def stream_quotes(self, quote: Callable[..., dict]) -> QuoteStream:
        """Serve streamed quotes computed by `quote` (a QuoteRequest -> the body of GET /api/quote;
        the handlers' module has it, and this one may not import it)."""
        settings = self.settings
        self.quotes = QuoteStream(quote, self.run, self.storage.bus, settings.quote_stream_interval_ms / 1000,
                                  settings.quote_stream_refresh_ms / 1000, metrics=self.metrics)
        self.metrics.quote_subscriptions.set_function(lambda: self.quotes.subscription_count)
        return self.quotes

    def start(self) -> None:
        """Subscribe the event hub to the bus and start its sweeper, follow the changes of
        managed keys (on the IOLoop thread); read the active halts (before the first submit is
        served) and keep them current; start the quote stream's ticker."""
        self.hub.start()
        if self.quotes is not None:
            self.quotes.start()
        if self.key_watch is not None:
            self.key_watch.start()
        self.halts.start()

    def stop(self) -> None:
        """Close open WebSockets (1001), unsubscribe the hub, release the executor's threads."""
        if self.key_watch is not None:
            self.key_watch.stop()
        for socket in list(self.sockets):
            socket.close(1001, "server shutting down")
        self.hub.stop()
        if self.quotes is not None:
            self.quotes.stop()
        self.halts.stop()
        self.intake.close()
        if self.limiter is not None:
            self.limiter.close()
        self.rate_limits.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
