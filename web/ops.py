"""Operations endpoints: `/healthz`, `/readyz` and `/metrics` (no API key needed)."""
from __future__ import annotations

import logging

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
    """`GET /readyz`: the database and the bus both answer; 503 `not_ready` otherwise."""

    public = True

    async def get(self) -> None:
        storage = self.storage
        checks = {"database": storage.orders.ping, "bus": storage.bus.ping}
        failed = []
        for name, ping in checks.items():
            try:
                await self.services.run(ping)
            except Exception as exc:  # any failure to answer means not ready
                log.warning("readiness: %s does not answer: %r", name, exc)
                failed.append(name)
        if failed:
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
        """Executor thread: read the gauges that live in storage; a failing store keeps old values."""
        storage, metrics = self.storage, self.services.metrics
        try:
            counts = storage.orders.counts_by_status()
        except Exception:
            log.warning("metrics: cannot count orders", exc_info=True)
            return
        try:
            depth = storage.bus.queue_depth()
        except Exception:
            log.warning("metrics: cannot read the queue depth", exc_info=True)
            depth = None
        metrics.refresh(counts, depth)
