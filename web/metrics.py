"""The web process's Prometheus metrics, on a registry of its own (not the global one).

Two sources, and no read of its own per order or per event:
- the status events the hub receives from the bus (`EventFigures`). Every web process
  receives every event, so each one's figures describe the whole engine as seen since that
  process started. Only `routing` and terminal events are parsed (orjson, ~1.5 µs); the
  figures are plain ints, turned into metrics only when scraped: counting an event is a
  dict update, not a lock. Measured for a five-event order: 6.2 µs, both parses included
  (3.6 µs before these figures, 12.5 µs with prometheus_client's own counters and histograms);
- storage, read when /metrics is scraped (at most every REFRESH_S): orders by status and the
  queue, the same figures on every process; whether those reads (and /readyz's) reached the
  database and the bus (`engine_ready`);
- this process's own operations (`OpsFigures`): error answers by code, how late the hub fans a
  bus batch out, listeners' gaps and the ones closed for not reading; plain ints as well.

Label values are bounded: venues are the engine's two (anything else is "other"), statuses
are the lifecycle's, and error codes are the engine's own and its venues' (ERROR_CODES; any
other code is "other").
"""
from __future__ import annotations

import logging
import time
from bisect import bisect_left
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from config.logs import about_order
from storage.bus import QueueStats
from storage.records import BusEvent
from storage.status import FAILURE_CODES, STATUSES, TERMINAL
from storage.venues.base import VENUES
from web.openapi_schemas import ENGINE_ERROR_CODES, SPEC_ERROR_CODES

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
REFRESH_S = 1.0  # scrapes within this long of the last one reuse its storage reads
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)
# Instant venues answer within a millisecond or two, realistic ones in 150-250 ms.
QUOTE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1, 2.5, 5, 10)

# The codes an order's events may carry (meta.error.code, a retryReason's code, a failed
# swap's code): the order actor's and router's own, then the venues' (storage/venues: quotes,
# the simulated chain's swaps). Any other code is counted as "other".
ERROR_CODES = frozenset(FAILURE_CODES)
OTHER = "other"
# The codes of error answers (HTTP, WebSocket handshakes and error frames): the API's.
ANSWER_CODES = frozenset(SPEC_ERROR_CODES + ENGINE_ERROR_CODES)
READY_CHECKS = ("database", "bus")
# From the bus thread to the IOLoop fanning a batch out: well under a millisecond when idle.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def error_code(code: Any) -> str:
    """`code` as a label value: one of ERROR_CODES, else "other"."""
    return code if isinstance(code, str) and code in ERROR_CODES else OTHER


def retry_code(reason: Any) -> str:
    """The code of a `retryReason` ("slippage_exceeded: the output ...") as a label value."""
    return error_code(reason.split(":", 1)[0].strip()) if isinstance(reason, str) else OTHER


def _venue(name: Any) -> str:
    return name if isinstance(name, str) and name in VENUES else OTHER


def _seconds(milliseconds: Any) -> float | None:
    if isinstance(milliseconds, (int, float)) and not isinstance(milliseconds, bool) and milliseconds >= 0:
        return milliseconds / 1000
    return None


class _Histogram:
    """One histogram series in plain numbers: a count per bucket (the last one +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative counts by upper bound, as the exposition wants them."""
        total, rows = 0, []
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            total += count
            rows.append((floatToGoString(bound), total))
        return rows


def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(key if isinstance(key, tuple) else (key,), value)
    return family


def _histogram(name: str, doc: str, label: str, series: dict[str, _Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, histogram in series.items():
        family.add_metric([key], histogram.buckets(), histogram.sum)
    return family


class EventFigures:
    """What the events seen by the hub say, as a Prometheus collector. `observe` runs on the
    IOLoop thread, and so does `collect` (through `WebMetrics.render`): no lock is needed."""

    def __init__(self):
        self.events = dict.fromkeys(sorted(STATUSES), 0)
        self.routes = {(venue, kind): 0 for venue in VENUES for kind in ("single", "split", "hop")}
        self.quote_latency = {venue: _Histogram(QUOTE_BUCKETS) for venue in VENUES}
        self.skipped = dict.fromkeys(VENUES, 0)  # quotes a venue refused with its breaker open
        self.retries: dict[str, int] = {}
        self.swaps: dict[tuple[str, str], int] = {(venue, "confirmed"): 0 for venue in VENUES}
        self.failures: dict[str, int] = {}
        self.latency = {status: _Histogram(LATENCY_BUCKETS) for status in sorted(TERMINAL)}
        self._warned = False

    def observe(self, event: BusEvent) -> None:
        """Count a status event; parse it only if it is `routing` or terminal. Never raises: a
        metrics bug must not cost listeners their events."""
        status = event.status
        if status in self.events:
            self.events[status] += 1
        else:
            self.events[OTHER] = self.events.get(OTHER, 0) + 1
        if status != "routing" and status not in TERMINAL:
            return
        try:
            meta = event.to_api().get("meta") or {}
            if status == "routing":
                self._routing(meta)
            else:
                self._terminal(status, meta)
        except Exception:  # a malformed event: skipped, said once
            if not self._warned:
                self._warned = True
                log.warning("metrics: cannot read a %s event of order %s; such events are skipped",
                            status, event.order_id, exc_info=True, extra=about_order(event.order_id))

    def _routing(self, meta: dict) -> None:
        for venue, quote in (meta.get("quotes") or {}).items():
            seconds = _seconds(quote.get("latencyMs"))
            if seconds is not None and venue in self.quote_latency:
                self.quote_latency[venue].observe(seconds)
            if (quote.get("error") or {}).get("code") == "circuit_open":
                self.skipped[_venue(venue)] = self.skipped.get(_venue(venue), 0) + 1
        route = meta.get("route") or {}
        legs = route.get("legs") or ()
        kind = "split" if len(legs) > 1 else "single"
        if route.get("hops"):  # a route through an intermediate token: each venue of each hop
            legs, kind = [leg for hop in route["hops"] for leg in hop.get("legs") or ()], "hop"
        for leg in legs:
            key = (_venue(leg.get("dex")), kind)
            self.routes[key] = self.routes.get(key, 0) + 1
        if "retryReason" in meta:
            code = retry_code(meta["retryReason"])
            self.retries[code] = self.retries.get(code, 0) + 1
        self._failed_swaps(meta)

    def _terminal(self, status: str, meta: dict) -> None:
        if status == "confirmed":
            for fill in meta.get("legs") or (meta,):  # an unsplit order: its one swap is the event's dex
                self._swap(fill.get("dex"), "confirmed")
        elif status == "failed":
            code = error_code((meta.get("error") or {}).get("code"))
            self.failures[code] = self.failures.get(code, 0) + 1
            self._failed_swaps(meta)
        seconds = _seconds(meta.get("latencyMs"))
        if seconds is not None:
            self.latency[status].observe(seconds)

    def _failed_swaps(self, meta: dict) -> None:
        for swap in meta.get("failedSwaps") or ():
            self._swap(swap.get("dex"), error_code(swap.get("code")))

    def _swap(self, dex: Any, outcome: str) -> None:
        key = (_venue(dex), outcome)
        self.swaps[key] = self.swaps.get(key, 0) + 1

    def collect(self):
        """The metric families, built from the figures (called by the registry when scraped)."""
        yield _counter("engine_events", "Status events received from the bus, by status", ["status"], self.events)
        yield _counter("engine_routes_won", "Routes chosen (routing events), by venue given a leg: kind single "
                       "(the venue takes the whole order), split (it takes a part) or hop (a part of a route through an "
                       "intermediate token)", ["venue", "kind"], self.routes)
        yield _histogram("engine_quote_latency_seconds", "A venue's quote round trip, from the routing events' "
                         "quotes", "venue", self.quote_latency)
        yield _counter("engine_venue_skipped", "Quotes a venue refused because its circuit breaker was open "
                       "(it failed most of its recent swaps), from the routing events", ["venue"], self.skipped)
        yield _counter("engine_retries", "New attempts of orders (routing events with a retryReason), by the "
                       "code of that reason", ["reason"], self.retries)
        yield _counter("engine_swaps", "Swaps by venue and outcome: confirmed, or the code the swap failed with",
                       ["venue", "outcome"], self.swaps)
        yield _counter("engine_orders_failed", "Orders that failed, by error code", ["code"], self.failures)
        yield _histogram("engine_order_latency_seconds", "From submission (pending) to a terminal status, by "
                         "terminal status", "status", self.latency)


class OpsFigures:
    """What this web process itself answers and delivers, as a Prometheus collector (IOLoop
    thread, like `EventFigures`): error answers by code, the hub's dispatch lag, listeners'
    gaps and the listeners closed because they did not read."""

    def __init__(self):
        self.error_answers: dict[str, int] = {}
        self.dispatch_lag = _Histogram(LAG_BUCKETS)
        self.gaps = 0
        self.too_slow = 0

    def answered_error(self, code: Any) -> None:
        """Count one error answered (an HTTP error, a refused handshake, an error frame)."""
        code = code if isinstance(code, str) and code in ANSWER_CODES else OTHER
        self.error_answers[code] = self.error_answers.get(code, 0) + 1

    def collect(self):
        """The metric families (called by the registry when scraped)."""
        yield _counter("engine_error_answers", "Error answers of this process (HTTP, WebSocket handshakes, error "
                       "frames), by error code: rate_limited, unauthorized, queue_full, overloaded ...", ["code"],
                       self.error_answers)
        lag = HistogramMetricFamily("engine_event_dispatch_lag_seconds", "How long a batch of bus events waited "
                                    "between the bus thread and the hub's fan-out to listeners (this process)")
        lag.add_metric([], self.dispatch_lag.buckets(), self.dispatch_lag.sum)
        yield lag
        yield CounterMetricFamily("engine_listener_gaps", "Events that reached a listener's feed ahead of an "
                                  "earlier one the bus lost or had not yet brought: the feed reads the database",
                                  value=self.gaps)
        yield CounterMetricFamily("engine_listeners_too_slow", "WebSockets closed (1008) because the client "
                                  "stopped reading its events (too much unsent)", value=self.too_slow)


class WebMetrics:
    """What an operator graphs: the event figures, the storage-backed gauges and this process's
    WebSocket connections (`refresh` reads the storage on an executor thread; the metrics are
    thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, halts: Callable[[], float] = lambda: 0):
        """`halts`: how many halts are in force, read when scraped (the web's HaltWatch; 0 by default)."""
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.orders = Gauge("engine_orders", "Orders by current status (from the database)", ["status"],
                            registry=registry)
        self.queue_depth = Gauge("engine_queue_depth", "Orders queued and not yet started (from the bus)",
                                 registry=registry)
        self.queue_oldest_age = Gauge("engine_queue_oldest_age_seconds", "How long the oldest order waiting to "
                                      "start has waited, 0 when none waits (from the bus)", registry=registry)
        self.websockets = Gauge("engine_websocket_connections", "Open WebSocket connections of this process",
                                registry=registry)
        self.ready = Gauge("engine_ready", "1 when the last check (a /readyz or a /metrics scrape's reads) "
                           "reached it, else 0", ["check"], registry=registry)
        for check in READY_CHECKS:
            self.ready.labels(check=check).set(0)
        self.quote_subscriptions = Gauge("engine_quote_subscriptions", "Quote subscriptions (subscribeQuote) "
                                         "open on this process", registry=registry)
        self.quote_computations = Counter("engine_quote_computations", "Streamed quotes computed: one per "
                                          "distinct quote and tick, whatever its subscribers", registry=registry)
        self.halts_active = Gauge("engine_halts_active", "Halts in force (trading stopped by an operator)",
                                  registry=registry)
        self.halts_active.set_function(halts)
        self.figures = EventFigures()
        registry.register(self.figures)
        self.observe_event: Callable[[BusEvent], None] = self.figures.observe  # the hub's, once per event
        self.ops = OpsFigures()
        registry.register(self.ops)
        self.answered_error = self.ops.answered_error
        for status in STATUSES:
            self.orders.labels(status=status).set(0)
        self._clock = clock
        self._refreshed_at: float | None = None

    def needs_refresh(self) -> bool:
        """True when the storage-backed gauges are older than REFRESH_S."""
        return self._refreshed_at is None or self._clock() - self._refreshed_at >= REFRESH_S

    def refresh(self, counts: dict[str, int] | None, queue: QueueStats | None) -> None:
        """Set the gauges read from storage (None: that read failed, the old values stay and
        `engine_ready` says the database or the bus was not reached)."""
        if counts is not None:
            for status in STATUSES | set(counts):
                self.orders.labels(status=status).set(counts.get(status, 0))
        if queue is not None:
            self.queue_depth.set(queue.depth)
            self.queue_oldest_age.set(queue.oldest_age_s)
        self.set_ready("database", counts is not None)
        self.set_ready("bus", queue is not None)
        self._refreshed_at = self._clock()

    def set_ready(self, check: str, ok: bool) -> None:
        """Record whether `check` ("database" or "bus") answered its last read."""
        self.ready.labels(check=check).set(1 if ok else 0)

    def observe_dispatch_lag(self, seconds: float) -> None:
        """The hub fanned out a batch `seconds` after the bus handed it over (IOLoop thread)."""
        self.ops.dispatch_lag.observe(max(seconds, 0.0))

    def listener_gap(self) -> None:
        """A listener's feed met a gap and reads the database for it (IOLoop thread)."""
        self.ops.gaps += 1

    def quotes_computed(self, count: int) -> None:
        """The quote stream computed `count` quotes in one tick (IOLoop thread)."""
        self.quote_computations.inc(count)

    def listener_too_slow(self) -> None:
        """A WebSocket was closed because its client did not read (IOLoop thread)."""
        self.ops.too_slow += 1

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
