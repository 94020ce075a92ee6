"""One Redis event subscription: a daemon thread that outlives dropped connections.

After a Redis restart or a killed connection the thread subscribes again, waiting
between attempts with backoff's exponential sequence and full jitter. Whatever was
published while it was away is lost (pub/sub keeps nothing); listeners fill gaps
from the database, so a reconnect only has to be logged.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import backoff
import redis

from storage.bus import Subscription, decode_events

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how long one get_message waits: bounds how late close() is noticed
_SUBSCRIBE_TIMEOUT_S = 5.0
_RECONNECT_FACTOR_S = 0.05
_RECONNECT_MAX_S = 5.0


def open_pubsub(client: redis.Redis, channel: str) -> redis.client.PubSub:
    """SUBSCRIBE on a new connection and wait for Redis to confirm it.

    Once this returns, every later PUBLISH on `channel` reaches this connection.
    Raises a redis error when Redis is unreachable or does not confirm in time.
    """
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {channel}")
            message = pubsub.get_message(timeout=remaining)
            if message and message["type"] in ("subscribe", b"subscribe"):
                return pubsub
    except BaseException:
        _close_quietly(pubsub)
        raise


def _close_quietly(pubsub: redis.client.PubSub | None) -> None:
    if pubsub is None:
        return
    try:
        pubsub.close()
    except redis.RedisError:
        pass  # the connection is already broken; nothing left to release


def _reconnect_delays():
    """Full-jitter waits over backoff's exponential sequence (interruptible, unlike its decorator)."""
    delays = backoff.expo(factor=_RECONNECT_FACTOR_S, max_value=_RECONNECT_MAX_S)
    next(delays)  # backoff's generators start with a priming yield
    for delay in delays:
        yield backoff.full_jitter(delay)


class RedisSubscription(Subscription):
    """Delivers each batch published on `channel` to `handler`, on its own thread."""

    def __init__(self, client: redis.Redis, channel: str, pubsub: redis.client.PubSub,
                 handler: Callable, on_close: Callable[[RedisSubscription], None],
                 decode: Callable[[bytes], object] = decode_events):
        self._client = client
        self._channel = channel
        self._pubsub = pubsub
        self._handler = handler
        self._decode = decode  # a message's payload to what the handler takes (a batch of events)
        self._on_close = on_close
        self._stop = threading.Event()
        # Held while the handler runs, so close() from another thread returns only after
        # any delivery in progress; re-entrant so a handler may close its own subscription.
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, name=f"bus-subscriber:{channel}", daemon=True)

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop delivery; after this returns the handler is not called again (idempotent)."""
        with self._lock:
            self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=_POLL_S * 10)
        self._on_close(self)

    def _run(self) -> None:
        """The delivery thread: read, deliver, and resubscribe whenever the connection drops."""
        pubsub, delays = self._pubsub, None
        try:
            while not self._stop.is_set():
                if pubsub is None:
                    try:
                        pubsub = open_pubsub(self._client, self._channel)
                    except redis.RedisError as exc:
                        delays = delays or _reconnect_delays()
                        wait = next(delays)
                        log.warning("resubscribing to %s failed (%s); next try in %.2fs",
                                    self._channel, exc, wait)
                        self._stop.wait(wait)
                        continue
                    log.info("resubscribed to %s; events published meanwhile are lost", self._channel)
                    delays = None
                try:
                    message = pubsub.get_message(timeout=_POLL_S)
                except (redis.RedisError, OSError) as exc:
                    log.warning("subscription to %s dropped (%s); reconnecting", self._channel, exc)
                    _close_quietly(pubsub)
                    pubsub = None
                    continue
                if message and message["type"] in ("message", b"message"):
                    self._deliver(message["data"])
        finally:
            _close_quietly(pubsub)

    def _deliver(self, data: bytes) -> None:
        try:
            batch = self._decode(data)
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring a message on %s that is not what the channel carries", self._channel)
            return
        with self._lock:
            if self._stop.is_set():
                return
            try:
                self._handler(batch)
            except Exception:
                log.exception("bus subscriber failed on a message; it stays subscribed")
