"""`/metrics` after known events: every figure an operator graphs, on SQLite with the in-process
bus and on Postgres with Redis. No worker runs: the test plays its part by storing and
publishing events (as tests/integration/test_web.py does), and the queued jobs stay waiting."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.testing import gen_test

from storage.records import EventDraft
from tests.integration.test_web import WebTestCase, _OnPostgresAndRedis
from web.metrics import ANSWER_CODES, ERROR_CODES

QUOTES = {"raydium": {"amountOut": "150", "feeRate": "0.0025", "feeAmount": "0.01", "priceImpactBps": 1,
                      "latencyMs": 12.5},
          "meteora": {"amountOut": "149", "feeRate": "0.002", "feeAmount": "0.01", "priceImpactBps": 1,
                      "latencyMs": 250}}


def route(*dexes):
    return {"legs": [{"dex": dex, "amountIn": "1", "amountOut": "1"} for dex in dexes],
            "amountOut": "2", "minAmountOut": "1"}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels) -> float:
    return found[(name, frozenset(labels.items()))]


class MetricsTest(WebTestCase):
    closed_bus_fails_reads = False  # the embedded bus lives in the process: its queue still reads when closed

    def store(self, order_id, *steps):
        """Play the worker: store (status, attempt, meta) events and publish them."""
        oid = uuid.UUID(order_id)
        records = self.storage.orders.append_events([EventDraft(oid, s, a, m) for s, a, m in steps])
        assert not any(isinstance(r, Exception) for r in records), records
        self.storage.bus.publish([r.published() for r in records])

    async def scrape(self) -> dict:
        response = await self.http_client.fetch(self.get_url("/metrics"))
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples(response.body.decode())

    async def play_three_orders(self):
        """An order routed whole to raydium and confirmed; one split and confirmed on both venues;
        one retried twice (a known and an unknown reason) after failed swaps, then failed. Returns
        the all-orders listener that waited for them, still open."""
        probe = await self.connect("/ws")  # the hub has seen an event once the probe gets it
        whole, split, failing = [(await self.submit())[1]["orderId"] for _ in range(3)]
        lifecycle = [("building", 1, {"minAmountOut": "1"}), ("submitted", 1, {"txHash": "t"})]
        self.store(whole, ("routing", 1, {"bestDex": "raydium", "quotes": QUOTES, "route": route("raydium")}),
                   *lifecycle, ("confirmed", 1, {"txHash": "t", "dex": "raydium", "latencyMs": 40}))
        self.store(split, ("routing", 1, {"bestDex": "raydium", "quotes": QUOTES,
                                          "route": route("raydium", "meteora")}), *lifecycle,
                   ("confirmed", 1, {"txHash": "t", "dex": "raydium", "latencyMs": 60,
                                     "legs": [{"dex": "raydium", "txHash": "t"}, {"dex": "meteora", "txHash": "u"}]}))
        self.store(failing, ("routing", 1, {"bestDex": "meteora", "quotes": QUOTES, "route": route("meteora")}),
                   *lifecycle,
                   ("routing", 2, {"bestDex": "meteora", "quotes": {"meteora": QUOTES["meteora"]},
                                   "route": route("meteora"), "retryReason": "slippage_exceeded: below the minimum",
                                   "failedSwaps": [{"dex": "meteora", "code": "slippage_exceeded", "txHash": "t"}]}),
                   ("routing", 3, {"bestDex": "orca", "quotes": {"orca": {"latencyMs": 5}}, "route": route("orca"),
                                   "retryReason": "a message of the venue's own: nothing like a code"}),
                   ("failed", 3, {"error": {"code": "swap_failed", "message": "no"}, "attempts": 3, "latencyMs": 900,
                                  "failedSwaps": [{"dex": "orca", "code": "rug_pulled", "txHash": "v"}]}))
        seen = 0
        while seen < 3:
            frame = await self.frame_of(probe, {whole, split, failing})
            seen += frame["status"] in ("confirmed", "failed")
        return probe

    @gen_test
    async def test_metrics_show_routes_quotes_retries_swaps_and_events_after_known_events(self):
        probe = await self.play_three_orders()
        found = await self.scrape()
        probe.close()

        assert value(found, "engine_events_total", status="pending") == 3
        assert value(found, "engine_events_total", status="routing") == 5
        assert value(found, "engine_events_total", status="confirmed") == 2
        assert value(found, "engine_events_total", status="failed") == 1
        assert value(found, "engine_routes_won_total", venue="raydium", kind="single") == 1
        assert value(found, "engine_routes_won_total", venue="raydium", kind="split") == 1
        assert value(found, "engine_routes_won_total", venue="meteora", kind="split") == 1
        assert value(found, "engine_routes_won_total", venue="meteora", kind="single") == 2
        assert value(found, "engine_routes_won_total", venue="other", kind="single") == 1
        assert value(found, "engine_quote_latency_seconds_count", venue="raydium") == 3
        assert value(found, "engine_quote_latency_seconds_sum", venue="raydium") == pytest.approx(3 * 0.0125)
        assert value(found, "engine_quote_latency_seconds_count", venue="meteora") == 4
        assert value(found, "engine_quote_latency_seconds_bucket", venue="meteora", le="0.2") == 0
        assert value(found, "engine_quote_latency_seconds_bucket", venue="meteora", le="0.25") == 4
        assert value(found, "engine_retries_total", reason="slippage_exceeded") == 1
        assert value(found, "engine_retries_total", reason="other") == 1
        assert value(found, "engine_swaps_total", venue="raydium", outcome="confirmed") == 2
        assert value(found, "engine_swaps_total", venue="meteora", outcome="confirmed") == 1
        assert value(found, "engine_swaps_total", venue="meteora", outcome="slippage_exceeded") == 1
        assert value(found, "engine_swaps_total", venue="other", outcome="other") == 1
        assert value(found, "engine_orders_failed_total", code="swap_failed") == 1
        assert value(found, "engine_order_latency_seconds_count", status="confirmed") == 2
        assert value(found, "engine_order_latency_seconds_sum", status="failed") == pytest.approx(0.9)
        assert value(found, "engine_orders", status="confirmed") == 2
        assert value(found, "engine_websocket_connections") == 1  # the probe

    @gen_test
    async def test_label_values_stay_within_the_venues_statuses_and_the_engines_codes(self):
        (await self.play_three_orders()).close()
        allowed = {"venue": {"raydium", "meteora", "other"}, "kind": {"single", "split", "hop"},
                   "reason": ERROR_CODES | {"other"}, "code": ERROR_CODES | ANSWER_CODES | {"other"},
                   "check": {"database", "bus"},
                   "outcome": ERROR_CODES | {"confirmed", "other"},
                   "status": {"pending", "waiting", "routing", "building", "submitted", "confirmed", "failed",
                              "cancelled", "expired", "scheduled", "completed", "other"}}
        for (name, labels) in await self.scrape():
            for label, label_value in labels:
                if label != "le" and name.startswith("engine_"):
                    assert label_value in allowed[label], (name, label, label_value)

    @gen_test
    async def test_the_queue_shows_its_depth_and_how_long_its_oldest_job_has_waited(self):
        started = time.monotonic()
        for _ in range(2):  # no worker runs: both jobs wait
            assert (await self.submit())[0] == 202
        while self.storage.bus.queue_stats().oldest_age_s < 0.3:
            await asyncio.sleep(0.02)
        found = await self.scrape()
        assert value(found, "engine_queue_depth") == 2
        assert 0.3 <= value(found, "engine_queue_oldest_age_seconds") <= time.monotonic() - started + 0.01

    @gen_test
    async def test_error_answers_are_counted_by_code_and_the_hub_shows_its_dispatch_lag(self):
        probe = await self.play_three_orders()
        assert (await self.call("/api/orders/" + str(uuid.uuid4())))[0] == 404
        assert (await self.call("/api/nowhere"))[0] == 404
        assert (await self.submit(amount="-1"))[0] == 400
        probe.write_message('{"subscribe": "not an order id"}')  # an error frame, the connection stays
        assert (await self.frame(probe))["error"]["code"] == "not_found"
        found = await self.scrape()
        probe.close()
        assert value(found, "engine_error_answers_total", code="not_found") == 3
        assert value(found, "engine_error_answers_total", code="invalid_amount") == 1
        assert sum(v for (name, labels), v in found.items() if name == "engine_error_answers_total") == 4
        assert value(found, "engine_event_dispatch_lag_seconds_count") >= 1, "every batch fanned out is timed"
        assert value(found, "engine_listener_gaps_total") >= 0
        assert value(found, "engine_listeners_too_slow_total") == 0

    @gen_test
    async def test_readiness_shows_on_metrics_and_no_halt_is_in_force_until_halts_are_wired(self):
        assert (await self.call("/readyz"))[0] == 200
        found = await self.scrape()
        assert value(found, "engine_ready", check="database") == 1
        assert value(found, "engine_ready", check="bus") == 1
        assert value(found, "engine_halts_active") == 0
        self.storage.bus.close()
        with self.assertLogs(level="WARNING"):  # one line for the 503
            assert (await self.call("/readyz"))[0] == 503
        found = await self.scrape()  # within a second of the last: the gauges /readyz set
        assert value(found, "engine_ready", check="bus") == 0
        assert value(found, "engine_ready", check="database") == 1
        if self.closed_bus_fails_reads:
            self.services.metrics._refreshed_at = None  # the next scrape reads storage itself
            with self.assertLogs("web.ops", level="WARNING"):
                found = await self.scrape()
            assert (value(found, "engine_ready", check="bus"), value(found, "engine_ready", check="database")) == (0, 1)


class MetricsOnPostgresAndRedisTest(_OnPostgresAndRedis, MetricsTest):
    closed_bus_fails_reads = True
