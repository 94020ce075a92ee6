"""The bus: job distribution to workers and status-event broadcast to web processes.

One small interface, two implementations: `storage.bus_memory.InProcessBus` for the
embedded default (one process) and `storage.bus_redis.RedisBus` for production (a
stream with a consumer group for jobs, pub/sub for events). The same tests run on both.

Delivery guarantees callers rely on:
- a job stays owned by the consumer that fetched it until `ack`; jobs of a consumer
  whose heartbeat stopped can be taken over with `claim_abandoned`;
- events are best-effort broadcast (pub/sub can lose them); every event is in the
  database first, and listeners fill gaps in `seq` from there. A batch of events travels
  as one message; each event carries its JSON text, encoded once by the writer and sent
  to listeners as is, and what a web process routes it by (order, seq, status, owner).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from storage.records import BusEvent

EventBatchHandler = Callable[[list[BusEvent]], None]
ControlHandler = Callable[[dict], None]


def encode_events(events: list[BusEvent]) -> bytes:
    """One bus message for a batch: a line per event, `order seq status owner` then its JSON,
    tab-separated (JSON text never holds a raw tab or newline)."""
    return b"\n".join(b"%s\t%d\t%s\t%s\t%s" % (e.order_id.encode(), e.seq, e.status.encode(),
                                                  e.owner.encode(), e.text) for e in events)


def decode_events(payload: bytes) -> list[BusEvent]:
    """The events of one bus message; raises ValueError for a message that is not one."""
    events = []
    for line in payload.split(b"\n"):
        order_id, seq, status, owner, text = line.split(b"\t", 4)
        events.append(BusEvent(order_id.decode(), int(seq), status.decode(), owner.decode(), text))
    return events


@dataclass(frozen=True)
class Accepted:
    """What `Bus.accept` did: the job ids (in order), and the queue depth and its oldest
    waiting job's age right after."""

    job_ids: list[str]
    queue_depth: int
    oldest_age_s: float = 0.0


@dataclass(frozen=True)
class QueueStats:
    """The queue as an operator graphs it: jobs waiting to start, and how long the oldest of
    them has waited (0.0 when none waits)."""

    depth: int
    oldest_age_s: float


@dataclass(frozen=True)
class Job:
    """One queued order to execute; `job_id` is the bus's handle for `ack`."""

    job_id: str
    order_id: str


class Subscription(ABC):
    """A live event subscription; `close()` stops the handler being called."""

    @abstractmethod
    def close(self) -> None:
        """Stop delivering events (idempotent)."""


class Bus(ABC):
    """Jobs for workers, events for web processes, and the shared rate limits (order starts,
    submissions per API key)."""

    # ---- jobs ----------------------------------------------------------------------------
    @abstractmethod
    def enqueue(self, order_id: str) -> str:
        """Queue an order for execution; return its job id."""

    @abstractmethod
    def accept(self, order_ids: list[str], events: list[BusEvent]) -> Accepted:
        """Queue these orders and publish their `pending` events, in one round trip; the queue
        depth comes back with it, so the web's depth check costs no round trip of its own."""

    @abstractmethod
    def queue_depth(self) -> int:
        """Jobs waiting to start (queued, not yet fetched by any worker)."""

    @abstractmethod
    def queue_stats(self) -> QueueStats:
        """The queue depth and the age of the oldest waiting job, read together (for /metrics)."""

    @abstractmethod
    def fetch(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """Take up to `count` waiting jobs, oldest first, waiting at most `block_ms` for one."""

    @abstractmethod
    def ack(self, *jobs: Job) -> None:
        """These jobs are finished (their orders are terminal): forget them (one round trip)."""

    @abstractmethod
    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        """Declare `consumer` alive for the next `ttl_s` seconds."""

    @abstractmethod
    def retire(self, consumer: str) -> None:
        """`consumer` has stopped for good: it is dead from now on, and others may take its jobs."""

    @abstractmethod
    def queued_order_ids(self) -> set[str]:
        """The orders that have a job in the queue, waiting or held by a consumer."""

    @abstractmethod
    def waiting_order_ids(self) -> set[str]:
        """The orders that have a job waiting in the queue (not yet fetched by any consumer)."""

    @abstractmethod
    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take the lock `name` for `ttl_s` seconds unless someone else holds it."""

    @abstractmethod
    def unlock(self, name: str, owner: str) -> None:
        """Release the lock `name` if `owner` holds it."""

    @abstractmethod
    def claim_abandoned(self, consumer: str, count: int) -> list[Job]:
        """Take over jobs held by consumers whose heartbeat has expired."""

    @abstractmethod
    def live_consumers(self) -> set[str]:
        """Consumers whose heartbeat has not expired."""

    @abstractmethod
    def ensure_epoch(self) -> tuple[str, bool]:
        """The bus's data epoch, and whether this call created it.

        A new epoch means the bus's data is new: first start, or a Redis that restarted
        without persistence and lost its queued jobs. Whoever creates it reconciles.
        """

    # ---- rate ----------------------------------------------------------------------------
    @abstractmethod
    def try_start(self, limit: int, window_s: float, count: int = 1) -> tuple[int, float]:
        """Count up to `count` order starts against `limit` per `window_s`, all workers together.

        Returns (starts allowed and counted, seconds until the next slot frees: 0.0 when all
        `count` were allowed). One round trip for a whole fetched batch.
        """

    @abstractmethod
    def try_submit(self, owners: list[str], limit: int, window_s: float, kind: str = "submits") -> list[float]:
        """Count one request of each of `owners` (repeats allowed) against `limit` per `window_s`
        in `kind`'s sliding windows, all web processes together: 0.0 for each request counted,
        else the seconds until its owner's window has room (a refused request is not counted).

        Each `kind` (`submits` for KEY_RATE_LIMIT, the web's other per-caller limits) keeps its
        own windows; one round trip for the whole batch.
        """

    # ---- events --------------------------------------------------------------------------
    @abstractmethod
    def publish(self, events: list[BusEvent]) -> None:
        """Broadcast a batch of stored events to every subscriber, as one message."""

    @abstractmethod
    def subscribe(self, handler: EventBatchHandler) -> Subscription:
        """Call `handler(batch)` for every published batch, from a bus thread."""

    # ---- control ---------------------------------------------------------------------------
    @abstractmethod
    def publish_control(self, message: dict) -> None:
        """Broadcast one control message (a JSON object with a `topic`) to every control
        subscriber, best effort, as events are."""

    @abstractmethod
    def subscribe_control(self, handler: ControlHandler) -> Subscription:
        """Call `handler(message)` for every later control message, from a bus thread."""

    # ---- lifecycle -----------------------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Raise BusError unless the bus answers."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads (idempotent)."""
