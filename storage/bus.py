"""The bus: job distribution to workers and status-event broadcast to web processes.

One small interface, two implementations: `storage.bus_memory.InProcessBus` for the
embedded default (one process) and `storage.bus_redis.RedisBus` for production (a
stream with a consumer group for jobs, pub/sub for events). The same tests run on both.

Delivery guarantees callers rely on:
- a job stays owned by the consumer that fetched it until `ack`; jobs of a consumer
  whose heartbeat stopped can be taken over with `claim_abandoned`;
- events are best-effort broadcast (pub/sub can lose them); every event is in the
  database first, and listeners fill gaps in `seq` from there.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

EventBatchHandler = Callable[[list[dict[str, Any]]], None]


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
    """Jobs for workers, events for web processes, and the shared start-rate limit."""

    # ---- jobs ----------------------------------------------------------------------------
    @abstractmethod
    def enqueue(self, order_id: str) -> str:
        """Queue an order for execution; return its job id."""

    @abstractmethod
    def queue_depth(self) -> int:
        """Jobs waiting to start (queued, not yet fetched by any worker)."""

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
    def try_start(self, limit: int, window_s: float) -> float:
        """Count one order start against `limit` per `window_s`, all workers together.

        Returns 0.0 when the start is allowed (and counted), else the seconds to wait
        before a slot frees (nothing counted).
        """

    # ---- events --------------------------------------------------------------------------
    @abstractmethod
    def publish(self, events: list[dict[str, Any]]) -> None:
        """Broadcast a batch of stored events (their API form) to every subscriber."""

    @abstractmethod
    def subscribe(self, handler: EventBatchHandler) -> Subscription:
        """Call `handler(batch)` for every published batch, from a bus thread."""

    # ---- lifecycle -----------------------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Raise BusError unless the bus answers."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads (idempotent)."""
