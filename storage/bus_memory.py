"""The in-process bus: the embedded default, for one process with many threads.

Semantics match `storage.bus_redis.RedisBus` so the same tests run on both:
- jobs wait in a FIFO; a fetched job is pending for its consumer until `ack`;
- a consumer is alive while its last `heartbeat` has not expired. A consumer holding
  jobs that never sent a heartbeat counts as dead too (as on Redis, where its
  heartbeat key is simply absent): workers heartbeat before their first fetch;
- event batches (immutable BusEvents) and control messages reach subscribers on one
  dispatcher thread, in publish order, so a publisher never runs subscriber code inline.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections import deque
from typing import Callable

from storage import codec
from storage.bus import Accepted, Bus, ControlHandler, EventBatchHandler, Job, QueueStats, Subscription
from storage.errors import BusError
from storage.records import BusEvent

log = logging.getLogger(__name__)

_STOP = object()  # tells the dispatcher thread to exit


class _MemorySubscription(Subscription):
    """One handler registered on an `InProcessBus`."""

    def __init__(self, bus: InProcessBus, handler: EventBatchHandler | ControlHandler, control: bool = False):
        self._bus = bus
        self._handler = handler
        self.control = control  # a control subscriber (messages) rather than an event one (batches)
        # Held while the handler runs, so close() from another thread returns only
        # after any delivery in progress; re-entrant so a handler may close itself.
        self._lock = threading.RLock()
        self._closed = False

    def deliver(self, batch: list[BusEvent] | dict) -> None:
        """Run the handler on one batch or control message (dispatcher thread); its errors are
        logged, not raised."""
        with self._lock:
            if self._closed:
                return
            try:
                self._handler(list(batch) if not self.control else batch)
            except Exception:
                log.exception("event subscriber failed on a batch; it stays subscribed")

    def close(self) -> None:
        """Stop delivery; after this returns the handler is not called again."""
        with self._lock:
            self._closed = True
        self._bus._forget(self)


class InProcessBus(Bus):
    """Jobs, rate limit and events for a single process; thread-safe.

    `clock` (monotonic seconds) is injectable so unit tests can move time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._waiting: deque[Job] = deque()
        self._queued_at: dict[str, float] = {}  # job_id -> when it was queued, while it waits
        self._pending: dict[str, dict[str, Job]] = {}  # consumer -> job_id -> job, oldest first
        self._owner: dict[str, str] = {}  # job_id -> consumer holding it
        self._alive_until: dict[str, float] = {}
        self._locks: dict[str, tuple[str, float]] = {}  # name -> (owner, expires at)
        self._epoch: str | None = None
        self._starts: deque[float] = deque()
        self._submits: dict[tuple[str, str], deque[float]] = {}  # (kind, owner) -> times of its counted requests
        self._subscribers: list[_MemorySubscription] = []
        self._batches: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="bus-dispatcher", daemon=True)
        self._dispatcher.start()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    # ---- jobs ----------------------------------------------------------------------------
    def enqueue(self, order_id: str) -> str:
        """Queue an order at the back of the FIFO; return its job id."""
        with self._cond:
            self._check_open()
            job = Job(job_id=str(next(self._ids)), order_id=order_id)
            self._waiting.append(job)
            self._queued_at[job.job_id] = self._clock()
            self._cond.notify()
            return job.job_id

    def accept(self, order_ids: list[str], events: list[BusEvent]) -> Accepted:
        """Queue the orders and publish their events; the depth right after."""
        job_ids = [self.enqueue(order_id) for order_id in order_ids]
        if events:
            self.publish(events)
        stats = self.queue_stats()
        return Accepted(job_ids, stats.depth, stats.oldest_age_s)

    def queue_depth(self) -> int:
        """Jobs not yet fetched by any consumer."""
        with self._cond:
            return len(self._waiting)

    def queue_stats(self) -> QueueStats:
        """Jobs not yet fetched, and how long the first of them has waited."""
        with self._cond:
            if not self._waiting:
                return QueueStats(0, 0.0)
            oldest = self._queued_at[self._waiting[0].job_id]
            return QueueStats(len(self._waiting), max(self._clock() - oldest, 0.0))

    def fetch(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """Take up to `count` jobs, oldest first, waiting up to `block_ms` (0: no wait)."""
        deadline = self._clock() + max(block_ms, 0) / 1000.0
        with self._cond:
            self._check_open()
            while not self._waiting and not self._closed:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if self._closed:  # closed while we waited: shutting down, nothing to hand out
                return []
            taken = [self._waiting.popleft() for _ in range(min(count, len(self._waiting)))]
            held = self._pending.setdefault(consumer, {})
            for job in taken:
                held[job.job_id] = job
                self._owner[job.job_id] = consumer
                del self._queued_at[job.job_id]
            return taken

    def ack(self, *jobs: Job) -> None:
        """Forget finished jobs (unknown or already acknowledged jobs are ignored)."""
        with self._cond:
            for job in jobs:
                consumer = self._owner.pop(job.job_id, None)
                if consumer is not None:
                    self._pending[consumer].pop(job.job_id, None)

    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        """Mark `consumer` alive for `ttl_s` seconds from now."""
        with self._cond:
            self._alive_until[consumer] = self._clock() + ttl_s

    def retire(self, consumer: str) -> None:
        """Forget `consumer`'s heartbeat: it counts as dead at once."""
        with self._cond:
            self._alive_until.pop(consumer, None)

    def queued_order_ids(self) -> set[str]:
        """Orders of the waiting jobs and of the jobs consumers hold."""
        with self._cond:
            held = [job for jobs in self._pending.values() for job in jobs.values()]
            return {job.order_id for job in list(self._waiting) + held}

    def waiting_order_ids(self) -> set[str]:
        """Orders of the waiting jobs."""
        with self._cond:
            return {job.order_id for job in self._waiting}

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take `name` for `ttl_s` seconds unless another owner holds it."""
        with self._cond:
            now = self._clock()
            holder = self._locks.get(name)
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._locks[name] = (owner, now + ttl_s)
            return True

    def unlock(self, name: str, owner: str) -> None:
        """Release `name` if `owner` holds it."""
        with self._cond:
            if self._locks.get(name, (None,))[0] == owner:
                del self._locks[name]

    def live_consumers(self) -> set[str]:
        """Consumers whose last heartbeat has not expired."""
        now = self._clock()
        with self._cond:
            return {name for name, until in self._alive_until.items() if until > now}

    def ensure_epoch(self) -> tuple[str, bool]:
        """The first call creates the epoch: this process's queue starts empty."""
        with self._cond:
            created = self._epoch is None
            if created:
                self._epoch = uuid.uuid4().hex
            return self._epoch, created

    def claim_abandoned(self, consumer: str, count: int) -> list[Job]:
        """Move up to `count` jobs of dead consumers (heartbeat expired or never sent) to `consumer`."""
        with self._cond:
            self._check_open()
            now = self._clock()
            claimed: list[Job] = []
            mine = self._pending.setdefault(consumer, {})
            for other, held in list(self._pending.items()):
                if other == consumer or self._alive_until.get(other, float("-inf")) > now:
                    continue
                while held and len(claimed) < count:
                    job = held.pop(next(iter(held)))
                    mine[job.job_id] = job
                    self._owner[job.job_id] = consumer
                    claimed.append(job)
                if not held:  # a dead consumer with nothing left is forgotten
                    del self._pending[other]
            for other, until in list(self._alive_until.items()):
                if until <= now and other not in self._pending:
                    del self._alive_until[other]
            return claimed

    # ---- rate ----------------------------------------------------------------------------
    def try_start(self, limit: int, window_s: float, count: int = 1) -> tuple[int, float]:
        """Sliding-window limit on starts: how many of `count` are allowed (and counted), and
        the seconds until a slot frees when not all were."""
        with self._cond:
            now = self._clock()
            while self._starts and self._starts[0] <= now - window_s:
                self._starts.popleft()
            allowed = max(0, min(count, limit - len(self._starts)))
            self._starts.extend([now] * allowed)
            if allowed == count:
                return allowed, 0.0
            # Never 0.0 here: that value means "all allowed" to the caller.
            return allowed, max(self._starts[0] + window_s - now, 1e-6)

    def try_submit(self, owners: list[str], limit: int, window_s: float, kind: str = "submits") -> list[float]:
        """Sliding-window limit per owner of `kind`: 0.0 for each request counted, else the wait."""
        with self._cond:
            now = self._clock()
            for idle in [k for k, times in self._submits.items()
                         if k[0] == kind and (not times or times[-1] <= now - window_s)]:
                del self._submits[idle]  # idle owners are forgotten: the map holds only live windows
            waits = []
            for owner in owners:
                times = self._submits.setdefault((kind, owner), deque())
                while times and times[0] <= now - window_s:
                    times.popleft()
                if len(times) < limit:
                    times.append(now)
                    waits.append(0.0)
                else:
                    waits.append(max(times[0] + window_s - now, 1e-6))
            return waits

    # ---- events --------------------------------------------------------------------------
    def publish(self, events: list[BusEvent]) -> None:
        """Hand the batch to the dispatcher thread; returns without running any subscriber."""
        self._check_open()
        if not all(isinstance(e, BusEvent) for e in events):
            raise BusError("only stored events (BusEvent) can be published")
        self._batches.put(tuple(events))

    def subscribe(self, handler: EventBatchHandler) -> Subscription:
        """Register `handler`; it runs on the dispatcher thread for every later batch."""
        return self._subscribe(_MemorySubscription(self, handler))

    # ---- control -------------------------------------------------------------------------
    def publish_control(self, message: dict) -> None:
        """Hand a copy of the message (as Redis would carry it: JSON) to the dispatcher thread."""
        self._check_open()
        if not isinstance(message, dict):
            raise BusError("a control message is a JSON object")
        self._batches.put(codec.loads(codec.dumps(message)))

    def subscribe_control(self, handler: ControlHandler) -> Subscription:
        """Register `handler`; it runs on the dispatcher thread for every later control message."""
        return self._subscribe(_MemorySubscription(self, handler, control=True))

    def _subscribe(self, subscription: _MemorySubscription) -> Subscription:
        with self._cond:
            self._check_open()
            self._subscribers.append(subscription)
        return subscription

    def _forget(self, subscription: _MemorySubscription) -> None:
        with self._cond:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def _dispatch(self) -> None:
        while True:
            batch = self._batches.get()
            if batch is _STOP:
                return
            control = isinstance(batch, dict)
            with self._cond:
                targets = [s for s in self._subscribers if s.control == control]
            for subscription in targets:
                subscription.deliver(batch)

    # ---- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        """Raise BusError once the bus is closed."""
        self._check_open()

    def close(self) -> None:
        """Wake blocked fetchers, close subscriptions, stop the dispatcher (idempotent).

        Batches not yet delivered are dropped: events are best-effort by contract.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            subscribers = list(self._subscribers)
            self._cond.notify_all()
        for subscription in subscribers:
            subscription.close()
        self._batches.put(_STOP)
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(timeout=5)
