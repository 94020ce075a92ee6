"""One Redis event subscription: a daemon thread that outlives dropped connections.

After a Redis restart or a killed connection the thread subscribes again, waiting
between attempts with backoff's exponential sequence and full jitter. Whatever was
published while it was away is lost (pub/sub keeps nothing); listeners fill gaps
from the database, so a reconnect only has to be logged.

On a Redis Cluster a subscription is to one sharded channel (SSUBSCRIBE, Redis 7): it is
opened on the master that owns the channel's slot, found afresh at each reconnect, so after a
failover it follows the slot to the promoted replica. A master that gives a slot away
unsubscribes its clients from it (`sunsubscribe`): that is a reconnect too.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import backoff
import redis

from storage.bus import EventBatchHandler, Subscription, decode_events

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how long one get_message waits: bounds how late close() is noticed
_SUBSCRIBE_TIMEOUT_S = 5.0
_RECONNECT_FACTOR_S = 0.05
_RECONNECT_MAX_S = 5.0


# What a lost connection or a cluster in transition raises (a cluster's slot trouble is no RedisError).
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
_DELIVERED = ("message", b"message", "smessage", b"smessage")
_UNSUBSCRIBED = ("unsubscribe", b"unsubscribe", "sunsubscribe", b"sunsubscribe")


def open_pubsub(client: redis.Redis, channel: str, sharded: bool = False) -> redis.client.PubSub:
    """SUBSCRIBE (SSUBSCRIBE when `sharded`) on a new connection and wait for Redis to confirm it.

    Once this returns, every later PUBLISH (SPUBLISH) on `channel` reaches this connection.
    Raises a redis error when Redis is unreachable or does not confirm in time.
    """
    pubsub = client.pubsub()
    confirmed = ("ssubscribe", b"ssubscribe") if sharded else ("subscribe", b"subscribe")
    try:
        (pubsub.ssubscribe if sharded else pubsub.subscribe)(channel)
        deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {channel}")
            message = pubsub.get_message(timeout=remaining)
            if message and message["type"] in confirmed:
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
    """Delivers each batch published on `channel` to `handler`, on its own thread (`decode`
    turns a message into what the handler takes: a batch of events unless told otherwise);
    `reopen()` subscribes again on a new connection after one dropped."""

    def __init__(self, reopen: Callable[[], redis.client.PubSub], channel: str, pubsub: redis.client.PubSub,
                 handler: EventBatchHandler | Callable[[Any], None],
                 on_close: Callable[[RedisSubscription], None],
                 decode: Callable[[bytes], Any] = decode_events):
        self._reopen = reopen
        self._channel = channel
        self._pubsub = pubsub
        self._handler = handler
        self._decode = decode
        self._on_close = on_close
        self._stop = threading.Event()
        # Held while the handler runs, so close() from another thread returns only after
        # any delivery in progress; re-entrant so a handler may close its own subscription.
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, name=f"bus-subscriber:{channel}", daemon=True)

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread.start()

    def stop_soon(self) -> None:
        """Ask the thread to stop without waiting for it (`close` then waits less)."""
        self._stop.set()

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
                        pubsub = self._reopen()
                    except REDIS_ERRORS as exc:
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
                if message and message["type"] in _DELIVERED:
                    self._deliver(message["data"])
                elif message and message["type"] in _UNSUBSCRIBED:  # the slot moved to another master
                    log.warning("unsubscribed from %s by the server; subscribing again", self._channel)
                    _close_quietly(pubsub)
                    pubsub = None
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
                log.exception("event subscriber failed on a batch; it stays subscribed")


class Subscriptions(Subscription):
    """Several subscriptions closed as one (a cluster's subscription: one per shard's channel)."""

    def __init__(self, parts: list[RedisSubscription]):
        self._parts = parts

    def close(self) -> None:
        """Close every part (idempotent): all asked to stop first, so they stop together."""
        for part in self._parts:
            part.stop_soon()
        for part in self._parts:
            part.close()


def open_sharded(cluster: redis.RedisCluster, client_for: Callable[[str, int], redis.Redis],
                 channel: str) -> redis.client.PubSub:
    """SSUBSCRIBE to `channel` on the master that owns its slot now, on a connection of its own
    from `client_for(host, port)` (a client the caller keeps: a client garbage-collected closes
    its pool, the subscription's connection with it).

    When that fails (the master died, or the slot moved), the cluster client's slot map is
    read again before the caller's next try, so a reconnect finds the promoted replica.
    """
    try:
        node = cluster.get_node_from_key(channel)
        return open_pubsub(client_for(node.host, node.port), channel, sharded=True)
    except REDIS_ERRORS:
        try:
            cluster.nodes_manager.initialize()
        except REDIS_ERRORS as exc:
            log.info("reading the cluster's slot map failed (%s); trying again later", exc)
        raise
