"""The web process's Prometheus metrics, on a registry of its own (not the global one)."""
from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from storage.records import BusEvent
from storage.status import STATUSES, TERMINAL

CONTENT_TYPE = CONTENT_TYPE_LATEST
REFRESH_S = 1.0  # scrapes within this long of the last one reuse its database counts
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)


class WebMetrics:
    """Orders by status, queue depth, WebSocket connections and submit-to-terminal latency."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry(auto_describe=True)
        self.orders = Gauge("engine_orders", "Orders by current status", ["status"], registry=self.registry)
        self.queue_depth = Gauge("engine_queue_depth", "Orders queued and not yet started", registry=self.registry)
        self.websockets = Gauge("engine_websocket_connections", "Open WebSocket connections",
                                registry=self.registry)
        self.latency = Histogram("engine_order_latency_seconds",
                                 "From submission (pending) to a terminal status, by terminal status",
                                 ["status"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        for status in STATUSES:
            self.orders.labels(status=status).set(0)
        self._clock = clock
        self._refreshed_at: float | None = None

    def observe_event(self, event: BusEvent) -> None:
        """Note a status event seen by the hub (IOLoop thread): a terminal one carries the
        order's submit-to-terminal time in `meta.latencyMs` (only those are parsed)."""
        if event.status not in TERMINAL:
            return
        latency_ms = (event.to_api().get("meta") or {}).get("latencyMs")
        if isinstance(latency_ms, (int, float)) and not isinstance(latency_ms, bool) and latency_ms >= 0:
            self.latency.labels(status=event.status).observe(latency_ms / 1000)

    def needs_refresh(self) -> bool:
        """True when the database-backed gauges are older than REFRESH_S."""
        return self._refreshed_at is None or self._clock() - self._refreshed_at >= REFRESH_S

    def refresh(self, counts: dict[str, int], queue_depth: int | None) -> None:
        """Set the gauges read from storage (counts by status; queue depth unless unknown)."""
        for status in STATUSES | set(counts):
            self.orders.labels(status=status).set(counts.get(status, 0))
        if queue_depth is not None:
            self.queue_depth.set(queue_depth)
        self._refreshed_at = self._clock()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
