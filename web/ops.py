"""Operations endpoints: `/healthz`, `/readyz` and `/metrics` (no API key needed)."""
from __future__ import annotations

import logging

from storage.errors import StorageError
from web.base import ApiHandler
from web.errors import ApiError
from web.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


class HealthHandler(ApiHandler):
    """`GET /healthz`: the process is alive (answers without touching storage)."""

    public = True

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(ApiHandler):
    """`GET /readyz`: the database and the bus both answer; 503 `not_ready` otherwise (the
    causes go to the request's one access-log line)."""

    public = True

    async def get(self) -> None:
        storage = self.storage
        checks = {"database": storage.orders.ping, "bus": storage.bus.ping}
        failed, causes = [], []
        for name, ping in checks.items():
            try:
                await self.services.run(ping)
            except Exception as exc:  # any failure to answer means not ready
                failed.append(name)
                causes.append(f"{name}: {exc!r}")
            self.services.metrics.set_ready(name, name not in failed)
        if failed:
            self.log_reason = "; ".join(causes)
            raise ApiError(503, "not_ready", f"cannot reach: {', '.join(failed)}")
        self.write_json({"status": "ready"})


class MetricsHandler(ApiHandler):
    """`GET /metrics`: Prometheus text format from this process's own registry."""

    public = True

    async def get(self) -> None:
        metrics = self.services.metrics
        if metrics.needs_refresh():
            await self.services.run(self._refresh)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(metrics.render())

    def _refresh(self) -> None:
        """Executor thread: read the gauges that live in storage; a failing store keeps old values
        (and `engine_ready` says which one failed)."""
        storage, metrics = self.storage, self.services.metrics
        try:
            counts = storage.orders.counts_by_status()
        except StorageError as exc:  # an outage: one line, the gauges keep their values
            log.warning("metrics: cannot count orders: %s", exc)
            counts = None
        try:
            queue = storage.bus.queue_stats()
        except StorageError as exc:
            log.warning("metrics: cannot read the queue: %s", exc)
            queue = None
        metrics.refresh(counts, queue)
