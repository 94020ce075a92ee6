"""Streamed quotes: `subscribeQuote` on `/ws`, one computation per quote per tick for all its subscribers.

A quote is keyed by what it depends on (tokenIn, tokenOut, amount, slippageBps): a `_Topic`.
Every subscription of a web process to the same key shares its topic, so one price move
costs one computation and one JSON encoding per topic, whatever its number of subscribers;
each subscriber's frame is that encoding with its own `subscriptionId` spliced in front.

When a topic is computed again (one ticker per process, at most every QUOTE_STREAM_INTERVAL_MS,
so at most one frame per subscription per interval and pool changes are coalesced; it runs
when something is due, so a notice after a quiet spell is answered without waiting for a
fixed beat):
- a "pools changed" notice names one of its tokens (storage/pool_notices.py: workers send
  it on the bus's control channel after a block of swaps lands); the topic is computed at the
  first tick NOTICE_SETTLE_S after the notice, so the simulator's quote cache (rows up to
  that old) has seen the swap;
- QUOTE_STREAM_REFRESH_MS has passed since its last computation (the pools drift with time);
- it is new.
All due topics are computed in one executor call (off the IOLoop), one tick at a time; a
frame goes out only when the topic's answer changed. A new subscriber of a topic already
computed gets its last answer at once.

Bounds: MAX_QUOTE_SUBSCRIPTIONS per connection; subscribe frames count against
SUBSCRIBE_RATE_LIMIT (web/sockets.py); a reader too slow for its frames is closed (1008) by
`SocketHandler.send_text`, like any listener.

Threads: the bus calls `_on_control` on its thread (handed to the IOLoop); the computation
runs on the executor; everything else on the IOLoop thread.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Protocol

from tornado.ioloop import IOLoop

from storage import codec
from storage.bus import Bus, Subscription
from storage.errors import StorageError
from storage.pool_notices import changed_tokens
from web.errors import ValidationError, to_api_error
from web.validation import QuoteRequest

log = logging.getLogger(__name__)

MAX_QUOTE_SUBSCRIPTIONS = 20  # quote subscriptions one connection holds at once
NOTICE_SETTLE_S = 0.05  # storage/venues/sim/world.py QUOTE_STALENESS_S: how old a quote's pool row may be

Key = tuple[str, str, int, int]  # tokenIn, tokenOut, amount in base units, slippageBps
Answer = tuple[str, bytes]  # ("quote", the JSON body of GET /api/quote) or ("error", the error object's JSON)


class QuoteListener(Protocol):
    """A connection that receives quote frames (a WebSocket handler). Called on the IOLoop thread."""

    def send_text(self, text: bytes) -> None:
        """Send one text frame (closing the connection, 1008, if it does not read)."""


def key_of(request: QuoteRequest) -> Key:
    """What a quote depends on."""
    return request.token_in.symbol, request.token_out.symbol, request.amount_base, request.slippage_bps


def frame(kind: str, subscription_id: str, payload: bytes) -> bytes:
    """One subscriber's frame: `{"type": "quote", "subscriptionId": ID, ...the body}` or
    `{"type": "error", "subscriptionId": ID, "error": {...}}`, from the payload encoded once."""
    head = b'{"type":"%s","subscriptionId":"%s"' % (kind.encode(), subscription_id.encode())
    if kind == "quote":
        return head + b"," + payload[1:] if len(payload) > 2 else head + b"}"
    return head + b',"error":' + payload + b"}"


def compute_all(quote: Callable[[QuoteRequest], dict], requests: list[QuoteRequest]) -> list[Answer]:
    """Executor thread: each request's answer, encoded once; a refusal or an outage is an error answer."""
    answers: list[Answer] = []
    for request in requests:
        try:
            answers.append(("quote", codec.dumps(quote(request))))
        except Exception as exc:  # noqa: BLE001 - every failure is that topic's error frame
            error = to_api_error(exc)
            if error.code == "internal_error":
                log.error("unexpected error computing a streamed quote", exc_info=True)
            answers.append(("error", codec.dumps(error.to_api())))
    return answers


class _Topic:
    """One quote key: its request, subscribers, last answer and when it is due again."""

    __slots__ = ("key", "request", "subscribers", "answer", "computed_at", "due_at")

    def __init__(self, key: Key, request: QuoteRequest):
        self.key = key
        self.request = request
        self.subscribers: dict[tuple[QuoteListener, str], None] = {}
        self.answer: Answer | None = None
        self.computed_at = float("-inf")
        self.due_at: float | None = float("-inf")  # new: computed at the next tick


class QuoteStream:
    """Quote subscriptions of one web process, grouped by key, computed once per tick per key."""

    def __init__(self, quote: Callable[[QuoteRequest], dict], run: Callable[..., Awaitable[Any]],
                 bus: Bus | None = None, interval_s: float = 0.25, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, metrics=None):
        self._quote = quote
        self._run = run
        self._bus = bus
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self._clock = clock
        self._metrics = metrics
        self._topics: dict[Key, _Topic] = {}
        self._by_token: dict[str, set[Key]] = {}
        self._by_listener: dict[QuoteListener, dict[str, _Topic]] = {}
        self._next_id: dict[QuoteListener, int] = {}
        self.computing = False
        self.computations = 0  # quotes computed since start (a topic per tick at most)
        self.frames = 0  # frames handed to subscribers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscription: Subscription | None = None
        self._started = False
        self._last_tick = float("-inf")
        self._timer: asyncio.TimerHandle | None = None  # the next tick, when one is scheduled
        self._timer_at = float("inf")
        self._task: asyncio.Task | None = None  # the running computation (a reference keeps it alive)

    # ---- lifecycle (IOLoop thread) -----------------------------------------------------

    def start(self) -> None:
        """Listen for pools notices and start ticking (idempotent)."""
        if self._started:
            return
        self._started = True
        self._loop = IOLoop.current().asyncio_loop
        if self._bus is not None:
            try:
                self._subscription = self._bus.subscribe_control(self._on_control)
            except StorageError as exc:  # the refresh stands in for the notices
                log.warning("streamed quotes: no pools notices (%s); refreshing every %.2fs only", exc,
                            self.refresh_s)
        self._wake(self._clock())

    def stop(self) -> None:
        """Stop ticking and listening; a running computation is cancelled."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._task is not None:
            self._task.cancel()

    def _on_control(self, message: dict) -> None:
        """Bus thread: hand a pools notice to the IOLoop."""
        tokens = changed_tokens(message)
        if tokens is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self.pools_changed, tokens)
        except RuntimeError:  # the loop is closed: we are shutting down
            pass

    # ---- subscriptions (IOLoop thread) -------------------------------------------------

    def subscribe(self, listener: QuoteListener, request: QuoteRequest) -> str:
        """Add a subscription; return its id (unique on the connection). Past
        MAX_QUOTE_SUBSCRIPTIONS on the connection: ValidationError. A new quote is computed at
        the next tick; a quote already streamed has its last answer (`send_last`)."""
        held = self._by_listener.setdefault(listener, {})
        if len(held) >= MAX_QUOTE_SUBSCRIPTIONS:
            raise ValidationError("invalid_field", f"a connection holds at most {MAX_QUOTE_SUBSCRIPTIONS} quote "
                                  "subscriptions; unsubscribe some first", "action")
        number = self._next_id.get(listener, 0) + 1
        self._next_id[listener] = number
        subscription_id = f"q{number}"
        key = key_of(request)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = _Topic(key, request)
            for token in key[:2]:
                self._by_token.setdefault(token, set()).add(key)
            self._wake(self._clock())
        topic.subscribers[(listener, subscription_id)] = None
        held[subscription_id] = topic
        return subscription_id

    def send_last(self, listener: QuoteListener, subscription_id: str) -> None:
        """Send the subscription's topic's last answer, if it has one (after the `quoteSubscribed` frame)."""
        topic = self._by_listener.get(listener, {}).get(subscription_id)
        if topic is not None and topic.answer is not None:
            self._send(listener, subscription_id, topic.answer)

    def unsubscribe(self, listener: QuoteListener, subscription_id: str) -> bool:
        """End one subscription; False when the connection holds none of that id."""
        topic = self._by_listener.get(listener, {}).pop(subscription_id, None)
        if topic is None:
            return False
        self._leave(topic, listener, subscription_id)
        return True

    def detach(self, listener: QuoteListener) -> None:
        """The connection has gone: end all its subscriptions."""
        self._next_id.pop(listener, None)
        for subscription_id, topic in self._by_listener.pop(listener, {}).items():
            self._leave(topic, listener, subscription_id)

    def _leave(self, topic: _Topic, listener: QuoteListener, subscription_id: str) -> None:
        topic.subscribers.pop((listener, subscription_id), None)
        if topic.subscribers:
            return
        del self._topics[topic.key]
        for token in topic.key[:2]:
            keys = self._by_token.get(token)
            if keys is not None:
                keys.discard(topic.key)
                if not keys:
                    del self._by_token[token]

    @property
    def subscription_count(self) -> int:
        """Quote subscriptions alive in this process."""
        return sum(len(held) for held in self._by_listener.values())

    @property
    def topic_count(self) -> int:
        """Distinct quotes being streamed (what a tick may compute)."""
        return len(self._topics)

    # ---- computation (IOLoop thread) ---------------------------------------------------

    def pools_changed(self, tokens: frozenset[str]) -> None:
        """Pools of these tokens moved (empty: any pool): their topics are due after NOTICE_SETTLE_S."""
        keys = (set(self._topics) if not tokens else
                {key for token in tokens for key in self._by_token.get(token, ())})
        at = self._clock() + NOTICE_SETTLE_S
        for key in keys:
            topic = self._topics[key]
            if topic.due_at is None or topic.due_at > at:
                topic.due_at = at
        if keys:
            self._wake(at)

    def due(self, now: float) -> list[_Topic]:
        """The topics to compute at `now`."""
        return [t for t in self._topics.values()
                if (t.due_at is not None and t.due_at <= now) or now - t.computed_at >= self.refresh_s]

    def _wake(self, at: float) -> None:
        """Tick at `at` (clock time), but not within QUOTE_STREAM_INTERVAL_MS of the last tick,
        unless a tick is already due sooner or a computation runs (it schedules the next)."""
        if not self._started or self.computing:
            return
        at = max(at, self._last_tick + self.interval_s)
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        self._timer_at = at
        self._timer = loop.call_later(max(at - self._clock(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        if self.tick() is None:
            self._wake_next()

    def _wake_next(self) -> None:
        """Schedule the tick for the topic due first (a notice, or its refresh)."""
        if self._topics:
            self._wake(min(t.computed_at + self.refresh_s if t.due_at is None else
                           min(t.due_at, t.computed_at + self.refresh_s) for t in self._topics.values()))

    def tick(self) -> asyncio.Task | None:
        """Compute every due topic in one executor call, then push what changed; nothing while
        the previous tick's computation still runs (its topics stay due)."""
        if self.computing:
            return None
        now = self._clock()
        topics = self.due(now)
        if not topics:
            return None
        self._last_tick = now
        for topic in topics:  # a notice from now on makes it due again
            topic.due_at = None
            topic.computed_at = now
        self.computing = True
        loop = self._loop or asyncio.get_running_loop()
        self._task = loop.create_task(self._compute(topics))
        return self._task

    async def _compute(self, topics: list[_Topic]) -> None:
        try:
            answers = await self._run(compute_all, self._quote, [t.request for t in topics])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the executor is full: these topics wait for the next tick
            log.warning("streamed quotes: could not compute %d quotes (%s); retrying", len(topics), exc)
            for topic in topics:
                topic.due_at = self._clock()
            return
        finally:
            self.computing = False
            self._wake_next()
        self.computations += len(topics)
        if self._metrics is not None:
            self._metrics.quotes_computed(len(topics))
        for topic, answer in zip(topics, answers):
            if answer == topic.answer:
                continue
            topic.answer = answer
            for listener, subscription_id in list(topic.subscribers):
                self._send(listener, subscription_id, answer)

    def _send(self, listener: QuoteListener, subscription_id: str, answer: Answer) -> None:
        self.frames += 1
        listener.send_text(frame(answer[0], subscription_id, answer[1]))
