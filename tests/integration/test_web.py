"""The web layer over the real embedded storage (SQLite + in-process bus): HTTP and WebSocket.

No worker runs here: where an order must move on, the test plays the worker's role by
appending events to the store and publishing them on the bus (or, to simulate loss,
by not publishing them).
"""
from __future__ import annotations

import asyncio
import gc
import http.client
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.websocket import websocket_connect

from config import load_settings
from storage.records import EventDraft
from storage.runtime import open_storage
from web.app import make_app
from web.services import Services

# Their Postgres databases (postgres_url) are put back as the template holds them and reused.

SOL_MINT = "So11111111111111111111111111111111111111112"
WAIT_S = 5.0


_MIGRATED_SQLITE: dict[str, bytes] = {}


def _migrated_sqlite(settings) -> None:
    """Put an embedded SQLite file holding the current schema and no rows where `settings` look
    for it: migrated once per test process, then copied (migrating costs ~15 ms of CPU a test;
    the test's own `open_storage(..., migrate=True)` then finds every migration applied)."""
    if settings.database_url:
        return
    if "file" not in _MIGRATED_SQLITE:
        from storage.database import open_database

        template = Path(tempfile.mkdtemp(prefix="web-test-template-"))
        db, _ = open_database(load_settings({"ENGINE_DATA_DIR": str(template)}, dotenv=None), migrate=True)
        db.disconnect()  # the last connection: SQLite checkpoints its WAL into the file
        _MIGRATED_SQLITE["file"] = (template / settings.sqlite_path.name).read_bytes()
        shutil.rmtree(template, ignore_errors=True)
    settings.sqlite_path.write_bytes(_MIGRATED_SQLITE["file"])


class WebTestCase(AsyncHTTPTestCase):
    """An app on a fresh embedded storage; the hub sweeps fast so lost events show up quickly."""

    env: dict[str, str] = {}

    def setUp(self):
        self.data_dir = Path(tempfile.mkdtemp(prefix="web-test-"))
        env = {"ENGINE_DATA_DIR": str(self.data_dir), "SIM_SEED": "7", "VENUE_PROFILE": "instant", **self.env}
        self.engine_settings = load_settings(env, dotenv=None)
        _migrated_sqlite(self.engine_settings)
        self.storage = open_storage(self.engine_settings, migrate=True)
        super().setUp()
        self.services.start()

    def tearDown(self):
        self.services.stop()
        super().tearDown()
        self.storage.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def get_app(self):
        self.services = Services(self.storage, self.engine_settings, sweep_interval_s=0.05, idle_s=0.3)
        return make_app(self.storage, self.engine_settings, self.services)

    # ---- helpers ------------------------------------------------------------------------

    async def call(self, path, method="GET", body=None, content_type="application/json", headers=None):
        """(status, parsed JSON body) of one request."""
        if isinstance(body, dict):
            body = json.dumps(body)
        all_headers = {"Content-Type": content_type} if body is not None else {}
        all_headers.update(headers or {})
        response = await self.http_client.fetch(HTTPRequest(
            self.get_url(path), method=method, body=body, headers=all_headers,
            allow_nonstandard_methods=True), raise_error=False)
        assert response.headers.get("Content-Type", "").startswith("application/json"), response.body[:200]
        return response.code, json.loads(response.body)

    async def submit(self, **fields):
        body = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", **fields}
        return await self.call("/api/orders/execute", "POST", body)

    def order_count(self) -> int:
        return sum(self.storage.orders.counts_by_status().values())

    def advance(self, order_id, *steps, publish=True):
        """Play the worker: append events (status, meta) and publish them unless told not to."""
        oid = uuid.UUID(order_id)
        attempt = self.storage.orders.get_order(oid, with_events=False).attempts or 1
        drafts = [EventDraft(oid, status, attempt, meta) for status, meta in steps]
        records = self.storage.orders.append_events(drafts)
        for record in records:
            assert not isinstance(record, Exception), record
        if publish:
            self.storage.bus.publish([r.published() for r in records])
        return records

    async def connect(self, path):
        return await websocket_connect(self.get_url(path).replace("http://", "ws://"))

    async def frame(self, conn):
        """The next frame as JSON, or None when the server closed the connection."""
        message = await asyncio.wait_for(conn.read_message(), WAIT_S)
        return None if message is None else json.loads(message)

    async def frame_of(self, conn, order_ids):
        """The next frame that is not an event of some other order (an all-orders stream sees
        every order, including those of other processes sharing the Redis channel)."""
        while True:
            message = await self.frame(conn)
            if message is None or "seq" not in message or message["orderId"] in order_ids:
                return message

    async def frames_until_close(self, conn):
        frames = []
        while (message := await self.frame(conn)) is not None:
            frames.append(message)
        return frames


LIFECYCLE = [("routing", {"bestDex": "raydium"}), ("building", {"minAmountOut": "1"}),
             ("submitted", {"txHash": "abc"})]
CONFIRMED = ("confirmed", {"txHash": "abc", "dex": "raydium", "amountIn": "1.5", "amountOut": "200", "latencyMs": 12})


class SubmitTest(WebTestCase):
    @gen_test
    async def test_submit_answers_202_and_stores_the_pending_event(self):
        status, body = await self.submit(clientOrderId="k-1")
        assert status == 202
        order_id = body["orderId"]
        assert body == {"orderId": order_id, "status": "pending", "clientOrderId": "k-1",
                        "links": {"self": f"/api/orders/{order_id}", "ws": f"/ws?orderId={order_id}"}}
        events = self.storage.orders.events_after(uuid.UUID(order_id))
        assert [(e.seq, e.status) for e in events] == [(1, "pending")]
        assert self.storage.bus.queue_depth() == 1

    @gen_test
    async def test_every_invalid_submit_answers_the_error_shape_and_stores_nothing(self):
        cases = [
            ({"tokenIn": "SOL", "tokenOut": "USDC"}, "missing_field", "amount"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "slipageBps": 5}, "unknown_field", "slipageBps"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0"}, "invalid_amount", "amount"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1e999999"}, "amount_too_large", "amount"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.0000000001"}, "too_many_decimals", "amount"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1_000"}, "invalid_field", "amount"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": True}, "invalid_field", "amount"),
            ({"tokenIn": "SOL", "tokenOut": SOL_MINT, "amount": "1"}, "same_token", "tokenOut"),
            ({"tokenIn": "DOGE", "tokenOut": "USDC", "amount": "1"}, "unknown_token", "tokenIn"),
            ({"tokenIn": "SOL", "tokenOut": "POPCAT", "amount": "1"}, "invalid_field", "tokenOut"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "type": "limit"}, "missing_field", "limitPrice"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "type": "limit", "limitPrice": "0"},
             "invalid_field", "limitPrice"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "type": "stop"}, "invalid_field", "type"),
            ({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "expiresInSeconds": 5}, "invalid_field",
             "expiresInSeconds"),
            ({"tokenIn": "SOL", "tokenOut": "POPCAT", "amount": "1", "type": "limit", "limitPrice": "9"},
             "invalid_field", "tokenOut"),
        ]
        for body, code, field in cases:
            status, answer = await self.call("/api/orders/execute", "POST", body)
            assert (status, answer) == (400, {"error": {"code": code, "message": answer["error"]["message"],
                                                        "field": field}}), (body, answer)
        status, answer = await self.call("/api/orders/execute", "POST",
                                         '{"tokenIn": "SOL", "tokenOut": "USDC", "amount": NaN}')
        assert (status, answer["error"]["code"]) == (400, "invalid_json")
        assert self.order_count() == 0
        assert self.storage.bus.queue_depth() == 0

    @gen_test
    async def test_a_repeated_client_order_id_answers_200_for_the_same_order_and_409_for_another(self):
        status, first = await self.submit(clientOrderId="same", amount="1.5")
        assert status == 202
        status, again = await self.submit(clientOrderId="same", amount=1.50, tokenIn=SOL_MINT, slippageBps=50)
        assert status == 200 and again == first
        self.advance(first["orderId"], LIFECYCLE[0])
        status, now = await self.submit(clientOrderId="same", amount="1.5")
        assert (status, now["orderId"], now["status"]) == (200, first["orderId"], "routing")
        status, conflict = await self.submit(clientOrderId="same", amount="2")
        assert status == 409 and conflict["error"]["code"] == "conflict"
        assert self.order_count() == 1

    @gen_test
    async def test_racing_repeats_create_exactly_one_order(self):
        answers = await asyncio.gather(*(self.submit(clientOrderId="race") for _ in range(8)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] * 7 + [202]
        assert len({body["orderId"] for _, body in answers}) == 1
        assert self.order_count() == 1 and self.storage.bus.queue_depth() == 1

    @gen_test
    async def test_unsupported_media_type_is_415_and_a_charset_is_fine(self):
        body = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}
        status, answer = await self.call("/api/orders/execute", "POST", body, content_type="text/plain")
        assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")
        status, _ = await self.call("/api/orders/execute", "POST", body, content_type="application/json; charset=utf-8")
        assert status == 202

    @gen_test
    async def test_a_body_over_64_kib_answers_json_413(self):
        padding = "x" * (100 * 1024)
        status, answer = await self.call("/api/orders/execute", "POST", json.dumps({"pad": padding}))
        assert (status, answer["error"]["code"]) == (413, "payload_too_large")
        status, answer = await self.call("/api/orders/execute", "POST", "x" * (2 * 1024 * 1024))
        assert (status, answer["error"]["code"]) == (413, "payload_too_large")
        status, _ = await self.submit()  # the server is still fine
        assert status == 202 and self.order_count() == 1

    @gen_test
    async def test_unknown_paths_and_methods_answer_json_404_and_405(self):
        assert (await self.call("/nope"))[0] == 404
        assert (await self.call("/nope"))[1]["error"]["code"] == "not_found"
        status, answer = await self.call(f"/api/orders/{uuid.uuid4()}/cancel", "POST", "")
        assert (status, answer["error"]["code"]) == (404, "not_found")
        for path, method in [("/api/orders/execute", "GET"), ("/api/tokens", "DELETE"), ("/ws", "GET"),
                             ("/api/orders", "POST")]:
            status, answer = await self.call(path, method, "" if method != "GET" else None)
            assert (status, answer["error"]["code"]) == (405, "method_not_allowed"), (path, method)


class CancelTest(WebTestCase):
    @gen_test
    async def test_a_queued_order_is_cancelled_once_and_its_listener_hears_it(self):
        order_id = (await self.submit())[1]["orderId"]
        conn = await self.connect(f"/ws?orderId={order_id}")
        status, order = await self.call(f"/api/orders/{order_id}/cancel", "POST", "")
        assert status == 200 and order["status"] == "cancelled"
        assert [e["status"] for e in order["events"]] == ["pending", "cancelled"]
        assert await self.call(f"/api/orders/{order_id}/cancel", "POST", "") == (200, order)  # again: the same
        assert statuses(await self.frames_until_close(conn)) == [(1, "pending"), (2, "cancelled")]
        assert conn.close_code == 1000

    @gen_test
    async def test_an_order_that_reached_building_or_ended_cannot_be_cancelled(self):
        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, *LIFECYCLE)
        status, answer = await self.call(f"/api/orders/{order_id}/cancel", "POST", "")
        assert (status, answer["error"]["code"]) == (409, "conflict")
        self.advance(order_id, CONFIRMED)
        status, answer = await self.call(f"/api/orders/{order_id}/cancel", "POST", "")
        assert (status, answer["error"]["code"]) == (409, "conflict")
        assert (await self.call(f"/api/orders/{order_id}"))[1]["status"] == "confirmed"

    @gen_test
    async def test_a_cancel_racing_the_execution_has_exactly_one_winner(self):
        for _ in range(10):
            order_id = (await self.submit())[1]["orderId"]
            oid = uuid.UUID(order_id)
            routing = [EventDraft(oid, s, 1, m) for s, m in LIFECYCLE]
            cancel, executed = await asyncio.gather(
                self.call(f"/api/orders/{order_id}/cancel", "POST", ""),
                asyncio.get_running_loop().run_in_executor(None, self.storage.orders.append_events, routing))
            cancelled = cancel[0] == 200
            stored = [e["status"] for e in (await self.call(f"/api/orders/{order_id}"))[1]["events"]]
            assert cancelled != all(not isinstance(r, Exception) for r in executed)
            assert stored == (["pending", "cancelled"] if cancelled else ["pending", "routing", "building", "submitted"])


class BatchingTest(WebTestCase):
    @gen_test
    async def test_submits_that_arrive_together_share_one_transaction_and_each_answers_stored(self):
        calls = []
        original = self.storage.orders.create_orders

        def spy(drafts):
            calls.append(len(drafts))
            if len(calls) == 1:
                time.sleep(0.3)  # the first commit is slow: everything arriving meanwhile gathers
            return original(drafts)

        self.storage.orders.create_orders = spy
        answers = await asyncio.gather(*(self.submit() for _ in range(20)))
        assert [code for code, _ in answers] == [202] * 20
        assert sum(calls) == 20 and max(calls) > 1 and len(calls) < 20, calls
        for _, body in answers:  # each answer came after its own order was stored and queued
            assert self.storage.orders.get_order(uuid.UUID(body["orderId"])).status == "pending"
        assert self.storage.bus.queue_depth() == 20


class QueueFullTest(WebTestCase):
    env = {"QUEUE_MAX_DEPTH": "1"}

    @gen_test
    async def test_a_full_queue_answers_503_and_stores_nothing(self):
        assert (await self.submit())[0] == 202
        status, answer = await self.submit()
        assert (status, answer["error"]["code"]) == (503, "queue_full")
        assert self.order_count() == 1


class OverloadTest(WebTestCase):
    env = {"QUEUE_MAX_WAIT_SECONDS": "1"}

    @gen_test
    async def test_while_the_oldest_job_waits_too_long_market_orders_get_503_overloaded_and_others_go_on(self):
        bus = self.storage.bus
        assert (await self.submit())[0] == 202  # no worker here: its job waits
        while bus.queue_stats().oldest_age_s <= 1.0:
            await asyncio.sleep(0.05)
        response = await self.http_client.fetch(HTTPRequest(
            self.get_url("/api/orders/execute"), method="POST", headers={"Content-Type": "application/json"},
            body=json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"})), raise_error=False)
        assert response.code == 503 and json.loads(response.body)["error"]["code"] == "overloaded"
        assert int(response.headers["Retry-After"]) >= 1
        assert self.order_count() == 1, "nothing stored"
        status, _ = await self.submit(type="limit", limitPrice="1000")  # an order that waits anyway goes on
        assert status == 202
        bus.fetch("worker-1", 10, 0)  # a worker takes the jobs: nothing waits now
        while (await self.submit())[0] != 202:  # the stats are read afresh (they are at most 100 ms old)
            await asyncio.sleep(0.05)


class ReadTest(WebTestCase):
    @gen_test
    async def test_an_order_reads_with_its_events_and_unknown_ids_are_404(self):
        order_id = (await self.submit(clientOrderId="r"))[1]["orderId"]
        self.advance(order_id, *LIFECYCLE, CONFIRMED)
        status, order = await self.call(f"/api/orders/{order_id}")
        assert status == 200
        assert (order["status"], order["tokenIn"], order["amount"], order["clientOrderId"]) == \
               ("confirmed", "SOL", "1.5", "r")
        assert [e["seq"] for e in order["events"]] == [1, 2, 3, 4, 5]
        assert order["fills"] == [{"dex": "raydium", "amountIn": "1.5", "amountOut": "200", "txHash": "abc"}]
        for bad in ("not-a-uuid", str(uuid.uuid4())):
            status, answer = await self.call(f"/api/orders/{bad}")
            assert (status, answer["error"]["code"]) == (404, "not_found")

    @gen_test
    async def test_the_list_pages_newest_first_with_a_cursor(self):
        ids = [(await self.submit())[1]["orderId"] for _ in range(5)]
        seen, cursor = [], None
        while True:
            path = "/api/orders?limit=2" + (f"&cursor={cursor}" if cursor else "")
            status, page = await self.call(path)
            assert status == 200 and len(page["orders"]) <= 2
            assert all("events" not in o for o in page["orders"])
            seen += [o["orderId"] for o in page["orders"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        status, page = await self.call("/api/orders?status=pending&type=market")
        assert status == 200 and len(page["orders"]) == 5
        for query, field in [("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
                             ("status=done", "status"), ("type=stop", "type"), ("cursor=garbage", "cursor")]:
            status, answer = await self.call(f"/api/orders?{query}")
            assert (status, answer["error"]["code"], answer["error"]["field"]) == (400, "invalid_field", field)


class MarketTest(WebTestCase):
    @gen_test
    async def test_a_quote_shows_both_venues_and_the_route(self):
        status, quote = await self.call("/api/quote?tokenIn=SOL&tokenOut=usdc&amount=2&slippageBps=100")
        assert status == 200, quote
        assert (quote["tokenIn"], quote["tokenOut"], quote["amountIn"]) == ("SOL", "USDC", "2")
        assert set(quote["quotes"]) == {"raydium", "meteora"}
        for venue in quote["quotes"].values():
            assert set(venue) == {"amountOut", "feeRate", "feeAmount", "priceImpactBps"}
        route = quote["route"]
        best = max(quote["quotes"].items(), key=lambda kv: Decimal(kv[1]["amountOut"]))
        # The better venue leads; a second leg only where splitting gave more (rare for 2 SOL).
        assert route["legs"][0]["dex"] == best[0] and len(route["legs"]) in (1, 2)
        assert Decimal(route["amountOut"]) >= Decimal(best[1]["amountOut"])
        assert sum(Decimal(leg["amountIn"]) for leg in route["legs"]) == 2
        assert Decimal(route["minAmountOut"]) < Decimal(route["amountOut"])
        status, answer = await self.call("/api/quote?tokenIn=SOL&tokenOut=SOL&amount=1")
        assert (status, answer["error"]["code"], answer["error"]["field"]) == (400, "same_token", "tokenOut")
        status, answer = await self.call("/api/quote?tokenIn=SOL&tokenOut=USDC")
        assert (status, answer["error"]["code"], answer["error"]["field"]) == (400, "missing_field", "amount")

    @gen_test
    async def test_a_quote_for_a_large_order_shows_the_split_route(self):
        status, quote = await self.call("/api/quote?tokenIn=SOL&tokenOut=USDC&amount=5000")
        assert status == 200, quote
        legs, alone = quote["route"]["legs"], {dex: Decimal(q["amountOut"]) for dex, q in quote["quotes"].items()}
        assert len(legs) == 2 and {leg["dex"] for leg in legs} == {"raydium", "meteora"}
        assert legs[0]["dex"] == max(alone, key=alone.get)
        assert set(legs[0]) == {"dex", "amountIn", "amountOut"}
        assert sum(Decimal(leg["amountIn"]) for leg in legs) == 5000
        total = sum(Decimal(leg["amountOut"]) for leg in legs)
        assert Decimal(quote["route"]["amountOut"]) == total > max(alone.values())

    @gen_test
    async def test_tokens_list_real_mints_and_whether_they_trade(self):
        status, body = await self.call("/api/tokens")
        tokens = {t["symbol"]: t for t in body["tokens"]}
        assert status == 200
        assert tokens["SOL"] == {"symbol": "SOL", "mint": SOL_MINT, "decimals": 9, "tradable": True}
        assert tokens["USDC"]["mint"] == "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
        assert tokens["POPCAT"]["tradable"] is False
        assert tokens["MEW"] == {"symbol": "MEW", "mint": "MEW1gQWJ3nEXg2qgERiKu7FAFj79PHvQVREQUzScPP5",
                                 "decimals": 5, "tradable": False}
        assert len([t for t in body["tokens"] if not t["tradable"]]) >= 5  # launches to spare

    @gen_test
    async def test_the_simulator_shows_pools_swaps_and_schedules_launches(self):
        status, body = await self.call("/api/sim/pools")
        assert status == 200 and {p["dex"] for p in body["pools"]} == {"raydium", "meteora"}
        order_id = (await self.submit())[1]["orderId"]
        assert await self.call(f"/api/sim/swaps?orderId={order_id}") == (200, {"swaps": []})
        status, answer = await self.call(f"/api/sim/swaps?orderId={uuid.uuid4()}")
        assert (status, answer["error"]["code"]) == (404, "not_found")
        status, launch = await self.call("/api/sim/launch", "POST", {"token": "popcat", "inSeconds": 0})
        assert status == 202 and launch["token"] == "POPCAT" and launch["launchAt"].endswith("Z")
        status, answer = await self.call("/api/sim/launch", "POST", {"token": "POPCAT", "inSeconds": 5})
        assert (status, answer["error"]["code"]) == (400, "already_tradable")
        status, answer = await self.call("/api/sim/launch", "POST", {"token": "POPCAT", "inSeconds": -1})
        assert (status, answer["error"]["field"]) == (400, "inSeconds")
        status, launch = await self.call("/api/sim/launch", "POST", {"token": "BOME", "inSeconds": 0})
        assert (status, launch["token"]) == (202, "BOME")  # another token: a launch each
        tokens = {t["symbol"]: t for t in (await self.call("/api/tokens"))[1]["tokens"]}
        assert tokens["POPCAT"]["tradable"] is True and tokens["BOME"]["tradable"] is True
        assert tokens["MEW"]["tradable"] is False

    @gen_test
    async def test_health_readiness_and_metrics_answer(self):
        assert await self.call("/healthz") == (200, {"status": "ok"})
        assert await self.call("/readyz") == (200, {"status": "ready"})
        probe = await self.connect("/ws")  # receives only live events: what the hub has seen
        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, *LIFECYCLE, CONFIRMED)
        assert [(await self.frame_of(probe, {order_id}))["status"] for _ in range(5)][-1] == "confirmed"
        response = await self.http_client.fetch(self.get_url("/metrics"))
        text = response.body.decode()
        assert response.headers["Content-Type"].startswith("text/plain")
        assert 'engine_orders{status="confirmed"} 1.0' in text
        assert "engine_queue_depth 1.0" in text
        assert "engine_websocket_connections" in text
        assert 'engine_order_latency_seconds_count{status="confirmed"} 1.0' in text
        assert "engine_websocket_connections 1.0" in text
        probe.close()


class ReadinessTest(WebTestCase):
    @gen_test
    async def test_readiness_is_503_when_the_bus_is_gone(self):
        self.storage.bus.close()
        with self.assertLogs("tornado.access", level="WARNING") as logged:
            status, answer = await self.call("/readyz")
        assert (status, answer["error"]["code"]) == (503, "not_ready")
        assert "(bus: " in "\n".join(logged.output), "the access line names the cause, not only the answer"


def statuses(frames):
    return [(f["seq"], f["status"]) for f in frames]


class ListenerTest(WebTestCase):
    @gen_test
    async def test_a_late_listener_gets_the_full_history_then_live_events(self):
        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, *LIFECYCLE[:2])
        conn = await self.connect(f"/ws?orderId={order_id}")
        history = [await self.frame(conn) for _ in range(3)]
        assert statuses(history) == [(1, "pending"), (2, "routing"), (3, "building")]
        assert history[1] == self.storage.orders.events_after(uuid.UUID(order_id), 1)[0].to_api()
        self.advance(order_id, LIFECYCLE[2], CONFIRMED)
        assert statuses(await self.frames_until_close(conn)) == [(4, "submitted"), (5, "confirmed")]
        assert conn.close_code == 1000

    @gen_test
    async def test_a_listener_of_an_order_this_process_has_seen_reads_no_database(self):
        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, *LIFECYCLE[:2])
        for _ in range(100):  # the hub sees the events through the bus
            remembered = self.services.hub.recent.after(order_id, 0)
            if remembered and len(remembered[0]) == 3:
                break
            await asyncio.sleep(0.02)

        def no_database(*args, **kwargs):
            raise AssertionError("the history should come from the events the process holds")

        orders = self.storage.orders
        saved = orders.events_after, orders.get_order
        orders.events_after = orders.get_order = no_database
        conn = await self.connect(f"/ws?orderId={order_id}")
        assert statuses([await self.frame(conn) for _ in range(3)]) == [(1, "pending"), (2, "routing"),
                                                                        (3, "building")]
        orders.events_after, orders.get_order = saved  # the test plays the worker, which reads
        self.advance(order_id, LIFECYCLE[2], CONFIRMED)
        assert statuses(await self.frames_until_close(conn)) == [(4, "submitted"), (5, "confirmed")]

    @gen_test
    async def test_a_listener_of_an_order_the_process_has_forgotten_reads_its_history(self):
        from web.hub import RecentEvents

        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, *LIFECYCLE, CONFIRMED)
        await asyncio.sleep(0.1)
        self.services.hub.recent = RecentEvents()  # as after a restart, or long after the order
        conn = await self.connect(f"/ws?orderId={order_id}")
        assert [s for _, s in statuses(await self.frames_until_close(conn))] == \
               ["pending", "routing", "building", "submitted", "confirmed"]

    @gen_test
    async def test_a_listener_whose_first_history_read_fails_gets_its_events_once_the_database_is_back(self):
        from storage.errors import StorageUnavailable
        from web.hub import RecentEvents

        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, LIFECYCLE[0])
        await asyncio.sleep(0.05)
        self.services.hub.recent = RecentEvents()  # the history must come from the database
        orders, failures = self.storage.orders, []
        events_after = orders.events_after

        def database_down(*args, **kwargs):
            failures.append(args)
            raise StorageUnavailable("database unavailable: connection refused")

        orders.events_after = database_down
        try:
            conn = await self.connect(f"/ws?orderId={order_id}")
            firehose = await self.connect("/ws")
            await firehose.write_message(json.dumps({"subscribe": order_id}))
            for _ in range(200):  # the first read and at least one retry by the sweeper fail
                if len(failures) >= 4:
                    break
                await asyncio.sleep(0.02)
            assert len(failures) >= 4
        finally:
            orders.events_after = events_after  # the database is back
        assert statuses([await self.frame(conn), await self.frame(conn)]) == [(1, "pending"), (2, "routing")]
        assert await self.frame_of(firehose, {order_id}) == {"type": "subscribed", "orderId": order_id}
        assert statuses([await self.frame_of(firehose, {order_id}) for _ in range(2)]) == [(1, "pending"),
                                                                                         (2, "routing")]
        self.advance(order_id, *LIFECYCLE[1:], CONFIRMED)
        assert [s for _, s in statuses(await self.frames_until_close(conn))] == ["building", "submitted", "confirmed"]
        firehose.close()

    @gen_test
    async def test_two_listeners_each_get_every_event(self):
        order_id = (await self.submit())[1]["orderId"]
        first = await self.connect(f"/ws?orderId={order_id}")
        second = await self.connect(f"/ws?orderId={order_id}")
        assert statuses([await self.frame(first)]) == statuses([await self.frame(second)]) == [(1, "pending")]
        for step in (*LIFECYCLE, CONFIRMED):
            self.advance(order_id, step)
        expected = [(2, "routing"), (3, "building"), (4, "submitted"), (5, "confirmed")]
        assert statuses(await self.frames_until_close(first)) == expected
        assert statuses(await self.frames_until_close(second)) == expected

    @gen_test
    async def test_a_gap_in_published_events_is_filled_from_the_database(self):
        order_id = (await self.submit())[1]["orderId"]
        conn = await self.connect(f"/ws?orderId={order_id}")
        assert statuses([await self.frame(conn)]) == [(1, "pending")]
        self.advance(order_id, LIFECYCLE[0], publish=False)  # stored, lost on the bus
        self.advance(order_id, LIFECYCLE[1])
        # the gap would be filled by the sweeper too; stop it so only the gap logic can deliver
        self.services.hub._sweeper.stop()
        assert statuses([await self.frame(conn), await self.frame(conn)]) == [(2, "routing"), (3, "building")]

    @gen_test
    async def test_a_lost_terminal_event_is_delivered_by_the_sweeper(self):
        order_id = (await self.submit())[1]["orderId"]
        conn = await self.connect(f"/ws?orderId={order_id}")
        assert statuses([await self.frame(conn)]) == [(1, "pending")]
        self.advance(order_id, *LIFECYCLE)
        assert len([await self.frame(conn) for _ in range(3)]) == 3
        self.advance(order_id, CONFIRMED, publish=False)  # no later event will reveal this loss
        assert statuses(await self.frames_until_close(conn)) == [(5, "confirmed")]
        assert conn.close_code == 1000

    @gen_test
    async def test_events_published_twice_or_out_of_order_reach_a_listener_once_in_order(self):
        order_id = (await self.submit())[1]["orderId"]
        conn = await self.connect(f"/ws?orderId={order_id}")
        assert statuses([await self.frame(conn)]) == [(1, "pending")]
        records = self.advance(order_id, *LIFECYCLE, publish=False)
        published = [r.published() for r in records]
        self.storage.bus.publish([published[2], published[0], published[0], published[1], published[2]])
        self.storage.bus.publish(published)
        self.advance(order_id, CONFIRMED)
        assert statuses(await self.frames_until_close(conn)) == [(2, "routing"), (3, "building"),
                                                                 (4, "submitted"), (5, "confirmed")]

    @gen_test
    async def test_resuming_after_n_sends_only_later_events_and_after_the_end_nothing(self):
        order_id = (await self.submit())[1]["orderId"]
        self.advance(order_id, *LIFECYCLE, CONFIRMED)
        conn = await self.connect(f"/ws?orderId={order_id}&after=3")
        assert statuses(await self.frames_until_close(conn)) == [(4, "submitted"), (5, "confirmed")]
        conn = await self.connect(f"/ws?orderId={order_id}&after=5")
        assert await self.frames_until_close(conn) == []
        assert conn.close_code == 1000

    @gen_test
    async def test_an_unknown_order_or_a_bad_parameter_gets_an_error_frame_and_1008(self):
        order_id = (await self.submit())[1]["orderId"]
        for path, code in [(f"/ws?orderId={uuid.uuid4()}", "not_found"), ("/ws?orderId=nope", "not_found"),
                           (f"/ws?orderId={order_id}&after=-1", "invalid_field"),
                           (f"/ws?orderId={order_id}&frm=1", "unknown_field")]:
            conn = await self.connect(path)
            frames = await self.frames_until_close(conn)
            assert [f["type"] for f in frames] == ["error"] and frames[0]["error"]["code"] == code, path
            assert conn.close_code == 1008

    @gen_test
    async def test_the_all_orders_stream_is_live_and_takes_subscribe_and_unsubscribe(self):
        probe = await self.connect("/ws")
        old_id = (await self.submit())[1]["orderId"]
        mine = {old_id}
        self.advance(old_id, LIFECYCLE[0])
        # once the probe has seen them live, these events cannot reach the next connection live
        assert statuses([await self.frame_of(probe, mine), await self.frame_of(probe, mine)]) == \
               [(1, "pending"), (2, "routing")]
        conn = await self.connect("/ws")
        await conn.write_message(json.dumps({"subscribe": str(uuid.uuid4())}))
        assert (await self.frame_of(conn, mine))["error"]["code"] == "not_found"  # the connection stays open
        await conn.write_message(json.dumps({"subscribe": old_id}))
        assert await self.frame_of(conn, mine) == {"type": "subscribed", "orderId": old_id}
        history = [await self.frame_of(conn, mine), await self.frame_of(conn, mine)]
        assert statuses(history) == [(1, "pending"), (2, "routing")]
        new_id = (await self.submit())[1]["orderId"]
        mine.add(new_id)
        assert (await self.frame_of(conn, mine))["orderId"] == new_id  # live, without subscribing
        await conn.write_message(json.dumps({"unsubscribe": new_id}))
        assert await self.frame_of(conn, mine) == {"type": "unsubscribed", "orderId": new_id}
        self.advance(new_id, LIFECYCLE[0])
        self.advance(old_id, LIFECYCLE[1])
        assert statuses([await self.frame_of(conn, mine)]) == [(3, "building")]  # nothing of new_id came first
        await conn.write_message(json.dumps({"subscribe": new_id}))
        assert await self.frame_of(conn, mine) == {"type": "subscribed", "orderId": new_id}
        assert statuses([await self.frame_of(conn, mine)]) == [(2, "routing")]  # what it missed, never a repeat
        await conn.write_message("not json")
        assert (await self.frame_of(conn, mine))["error"]["code"] == "invalid_json"
        conn.close()
        probe.close()


class SubmitSocketTest(WebTestCase):
    @gen_test
    async def test_a_websocket_submit_is_accepted_then_streams_its_events(self):
        conn = await self.connect("/api/orders/execute")
        await conn.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}))
        accepted = await self.frame(conn)
        order_id = accepted["orderId"]
        assert accepted == {"type": "accepted", "orderId": order_id, "status": "pending", "clientOrderId": None,
                            "links": {"self": f"/api/orders/{order_id}", "ws": f"/ws?orderId={order_id}"}}
        assert statuses([await self.frame(conn)]) == [(1, "pending")]
        self.advance(order_id, *LIFECYCLE, CONFIRMED)
        assert [s for _, s in statuses(await self.frames_until_close(conn))] == \
               ["routing", "building", "submitted", "confirmed"]
        assert conn.close_code == 1000

    @gen_test
    async def test_an_invalid_websocket_submit_gets_an_error_frame_and_1008(self):
        conn = await self.connect("/api/orders/execute")
        await conn.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "SOL", "amount": "1"}))
        frames = await self.frames_until_close(conn)
        assert frames == [{"type": "error", "error": {"code": "same_token", "field": "tokenOut",
                                                      "message": frames[0]["error"]["message"]}}]
        assert conn.close_code == 1008 and self.order_count() == 0

    @gen_test
    async def test_a_websocket_from_a_foreign_origin_is_refused_as_json(self):
        request = HTTPRequest(self.get_url("/ws").replace("http://", "ws://"),
                              headers={"Origin": "https://evil.example"})
        try:
            await websocket_connect(request)
        except Exception as exc:
            assert getattr(exc, "code", None) == 403
            assert json.loads(exc.response.body)["error"]["code"] == "forbidden"
        else:
            raise AssertionError("the handshake should have been refused")


class FailureTest(WebTestCase):
    env = {"CORS_ORIGINS": "https://app.example"}

    @gen_test
    async def test_an_unexpected_error_is_a_json_500_without_a_traceback(self):
        def broken(*args, **kwargs):
            raise RuntimeError("secret internals")

        self.storage.orders.get_order = broken
        status, answer = await self.call(f"/api/orders/{uuid.uuid4()}")
        assert (status, answer) == (500, {"error": {"code": "internal_error", "message": "internal server error"}})

    @gen_test
    async def test_a_stored_order_whose_queue_write_fails_is_accepted_and_queued_once_the_bus_takes_it(self):
        from storage.errors import BusError

        accept, refusing = self.storage.bus.accept, threading.Event()
        refusing.set()

        def accept_unless_refusing(order_ids, events):
            if refusing.is_set():
                raise BusError("redis unavailable for accept: connection reset")
            return accept(order_ids, events)

        self.storage.bus.accept = accept_unless_refusing
        status, answer = await self.submit()
        assert status == 202, "stored is accepted: queueing it is the engine's job from then on"
        stored = self.order_count()
        status, refused = await self.submit()  # the bus takes no writes: nothing more is stored
        assert (status, refused["error"]["code"]) == (503, "not_ready") and self.order_count() == stored
        assert self.storage.bus.queue_depth() == 0
        refusing.clear()  # the bus is back: the requeuer's next try queues the stored order
        while self.storage.bus.queue_depth() == 0:
            await asyncio.sleep(0.01)
        assert (await self.submit())[0] == 202

    @gen_test
    async def test_an_outage_is_one_warning_line_per_request_without_a_traceback(self):
        from storage.errors import StorageUnavailable

        def database_down(*args, **kwargs):
            raise StorageUnavailable("database unavailable: connection refused")

        records: list[logging.LogRecord] = []
        keep = _Keep(records)
        logging.getLogger().addHandler(keep)
        try:
            self.storage.orders.get_order = database_down
            self.storage.orders.list_orders = database_down
            self.storage.orders.create_orders = database_down
            for request in (self.call(f"/api/orders/{uuid.uuid4()}"), self.call("/api/orders"), self.submit()):
                records.clear()
                status, answer = await request
                assert (status, answer["error"]["code"]) == (503, "not_ready")
                lines = [r for r in records if r.levelno >= logging.WARNING]
                assert [(r.levelno, r.exc_info) for r in lines] == [(logging.WARNING, None)], \
                    [r.getMessage() for r in lines]
                assert "unavailable" in lines[0].getMessage()
            records.clear()
            conn = await self.connect("/api/orders/execute")
            await conn.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}))
            assert (await self.frame(conn))["error"]["code"] == "not_ready"
            await self.frames_until_close(conn)
            lines = [r for r in records if r.levelno >= logging.WARNING]
            assert [(r.levelno, r.exc_info) for r in lines] == [(logging.WARNING, None)], [r.getMessage() for r in lines]
            records.clear()
            self.storage.orders.ping = database_down
            assert (await self.call("/readyz"))[0] == 503
            lines = [r for r in records if r.levelno >= logging.WARNING]
            assert len(lines) == 1 and "database" in lines[0].getMessage() and lines[0].exc_info is None
        finally:
            logging.getLogger().removeHandler(keep)

    @gen_test
    async def test_allowed_origins_get_cors_headers_and_a_preflight(self):
        response = await self.http_client.fetch(HTTPRequest(
            self.get_url("/api/orders/execute"), method="OPTIONS", headers={"Origin": "https://app.example"}))
        assert response.code == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        response = await self.http_client.fetch(self.get_url("/api/tokens"), headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in response.headers
        conn = await websocket_connect(HTTPRequest(self.get_url("/ws").replace("http://", "ws://"),
                                                   headers={"Origin": "https://app.example"}))
        conn.close()


class BoundsTest(WebTestCase):
    """What one connection can make the web process hold is bounded."""

    @gen_test
    async def test_an_unsubscribe_for_an_order_the_connection_does_not_follow_creates_nothing(self):
        conn = await self.connect("/ws")
        for _ in range(500):
            order_id = str(uuid.uuid4())
            await conn.write_message(json.dumps({"unsubscribe": order_id}))
            assert await self.frame(conn) == {"type": "unsubscribed", "orderId": order_id}
        assert self.services.hub.feed_count() == 0
        conn.close()

    @gen_test
    async def test_a_connection_follows_a_bounded_number_of_orders_it_subscribed_to(self):
        ids = [(await self.submit())[1]["orderId"] for _ in range(4)]
        while self.services.metrics.figures.events["pending"] < 4:  # the bus has brought them back:
            await asyncio.sleep(0.01)  # none reaches the connection live, between the frames expected
        conn = await self.connect("/ws")
        with mock.patch("web.hub.MAX_SUBSCRIPTIONS", 3):
            for order_id in ids[:3]:
                await conn.write_message(json.dumps({"subscribe": order_id}))
                assert await self.frame_of(conn, set(ids)) == {"type": "subscribed", "orderId": order_id}
                assert statuses([await self.frame_of(conn, set(ids))]) == [(1, "pending")]
            await conn.write_message(json.dumps({"subscribe": ids[3]}))
            refused = await self.frame_of(conn, set(ids))
            assert (refused["type"], refused["error"]["code"], refused["error"]["field"]) == \
                   ("error", "invalid_field", "subscribe")
            await conn.write_message(json.dumps({"unsubscribe": ids[0]}))  # the connection stays open
            assert await self.frame_of(conn, set(ids)) == {"type": "unsubscribed", "orderId": ids[0]}
            await conn.write_message(json.dumps({"subscribe": ids[3]}))
            assert await self.frame_of(conn, set(ids)) == {"type": "subscribed", "orderId": ids[3]}
        conn.close()

    @gen_test
    async def test_past_the_executor_queue_bound_a_request_answers_503_at_once(self):
        order_id = (await self.submit())[1]["orderId"]
        release = threading.Event()
        get_order = self.storage.orders.get_order

        def stuck(*args, **kwargs):  # a database that does not answer
            release.wait(WAIT_S)
            return get_order(*args, **kwargs)

        self.storage.orders.get_order = stuck
        with mock.patch("web.services.EXECUTOR_QUEUE_MAX", 2):
            waiting = [asyncio.ensure_future(self.call(f"/api/orders/{order_id}")) for _ in range(2)]
            while self.services._queued < 2:
                await asyncio.sleep(0.01)
            status, answer = await self.call(f"/api/orders/{order_id}")
            assert (status, answer["error"]["code"]) == (503, "not_ready")
            release.set()
            assert [status for status, _ in await asyncio.gather(*waiting)] == [200, 200]

    @gen_test(timeout=30)
    async def test_a_listener_that_never_reads_is_closed_with_1008_and_let_go(self):
        """Its send buffer stops at the limit; the process keeps serving; closing it logs nothing."""
        from storage.records import BusEvent

        records: list[logging.LogRecord] = []
        keep = _Keep(records)
        logging.getLogger().addHandler(keep)
        base_log = logging.getLogger("web.base")
        saved_level = base_log.level
        base_log.setLevel(logging.INFO)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        stalled.connect(("127.0.0.1", self.get_http_port()))
        stalled.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        reader = await self.connect("/ws")  # a listener that reads, alongside
        try:
            while len(self.services.sockets) < 2:
                await asyncio.sleep(0.01)
            (server_side,) = [s for s in self.services.sockets
                              if s.ws_connection.stream.socket.getpeername() == stalled.getsockname()]
            padding = b"x" * 16_000
            sent = 0
            while server_side.ws_connection is not None and not server_side.ws_connection.is_closing():
                assert sent < 64 * 1024 * 1024, "the stalled listener was never closed"
                ids = [str(uuid.uuid4()) for _ in range(16)]
                self.storage.bus.publish([BusEvent(i, 1, "pending", "", b'{"orderId":"%s","seq":1,"pad":"%s"}'
                                                   % (i.encode(), padding)) for i in ids])
                sent += 16 * len(padding)
                assert (await self.frame(reader))["seq"] == 1  # the reading listener keeps up
                for _ in range(15):
                    await self.frame(reader)
                # No task per unsent frame (the hub's reads of each fake order's history, one per
                # order at most, pile up on a loaded machine: not frames, not counted).
                assert len([t for t in asyncio.all_tasks()
                            if t.get_coro().__qualname__ != "EventHub._fill"]) < 50
            assert any(r.getMessage().startswith("closing a WebSocket whose client does not read") for r in records)
            for _ in range(800):  # the client never answers the close: Tornado lets it go after 5 s
                if server_side not in self.services.sockets:
                    break
                await asyncio.sleep(0.01)
            assert server_side not in self.services.sockets and self.services.hub.listener_count == 1
            order_id = (await self.submit())[1]["orderId"]  # still serving
            assert (await self.frame_of(reader, {order_id}))["orderId"] == order_id
        finally:
            logging.getLogger().removeHandler(keep)
            base_log.setLevel(saved_level)
            stalled.close()
            reader.close()
        gc.collect()
        await asyncio.sleep(0.05)
        noisy = [r for r in records if r.levelno >= logging.WARNING or r.exc_info]
        assert noisy == [], [r.getMessage() for r in noisy][:3]


class _Keep(logging.Handler):
    """Keeps every record logged anywhere (pytest's own capture may be set to a higher level)."""

    def __init__(self, records):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record):
        self.records.append(record)


class HttpEdgeTest(WebTestCase):
    """Answers decided before the body is read, on one kept-alive connection (a blocking
    client on another thread, so the server's IOLoop keeps running)."""

    env = {"API_KEYS": "edge-key-0123456789-0123456789abcd"}

    def exchange(self, requests):
        """Send (method, path, body, headers) requests on ONE connection: [(status, headers, body)]."""
        conn = http.client.HTTPConnection("127.0.0.1", self.get_http_port(), timeout=WAIT_S)
        answers = []
        try:
            for method, path, body, headers in requests:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                answers.append((response.status, dict(response.getheaders()), response.read()))
                assert conn.sock is not None, "the server closed a kept-alive connection"
        finally:
            conn.close()
        return answers

    @gen_test
    async def test_a_refusal_answered_before_the_body_is_read_leaves_the_connection_usable(self):
        key = {"Authorization": "Bearer edge-key-0123456789-0123456789abcd"}
        json_type = {"Content-Type": "application/json"}
        order = json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"})
        junk = "x" * (300 * 1024)  # larger than socket buffers: the client is still sending when refused
        requests = [
            ("POST", "/api/orders/execute", junk, {**key, "Content-Type": "text/plain"}),  # 415
            ("POST", "/api/orders/execute", order, {**key, **json_type}),
            ("POST", "/api/orders/execute", junk, {**key, **json_type}),  # 413
            ("POST", "/api/orders/execute", order, {**key, **json_type}),
            ("POST", "/api/orders/execute", junk, json_type),  # 401
            ("POST", "/api/sim/launch", junk, {**key, "Content-Type": "text/plain"}),  # 403: operators only
            ("GET", "/api/orders/execute", junk, key),  # 405
            ("POST", "/api/orders/execute", order, {**key, **json_type}),
        ]
        answers = await asyncio.get_running_loop().run_in_executor(None, self.exchange, requests)
        assert [status for status, _, _ in answers] == [415, 202, 413, 202, 401, 403, 405, 202]
        assert all(headers.get("Connection", "").lower() != "close" for _, headers, _ in answers)
        assert [json.loads(body).get("error", {}).get("code") for _, _, body in answers] == [
            "unsupported_media_type", None, "payload_too_large", None, "unauthorized", "forbidden",
            "method_not_allowed", None]
        assert self.order_count() == 3

    @gen_test
    async def test_a_body_declared_over_1_mib_is_refused_at_once_with_connection_close(self):
        def declare_huge():
            with socket.create_connection(("127.0.0.1", self.get_http_port()), timeout=WAIT_S) as sock:
                sock.sendall(b"POST /api/orders/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Authorization: Bearer edge-key-0123456789-0123456789abcd\r\nContent-Length: 2097152\r\n\r\n{")
                received = b""
                while chunk := sock.recv(65536):  # the answer, then the server's end of the connection
                    received += chunk
                return received

        received = await asyncio.get_running_loop().run_in_executor(None, declare_huge)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413") and b"\r\nConnection: close" in head
        assert json.loads(body)["error"]["code"] == "payload_too_large"


class ServerTest(WebTestCase):
    @gen_test
    async def test_the_server_listens_on_a_port_and_stop_closes_websockets(self):
        from web.server import WebServer

        server = WebServer(self.storage, self.engine_settings)
        port = server.start(0, "127.0.0.1")
        response = await self.http_client.fetch(f"http://127.0.0.1:{port}/healthz")
        assert response.code == 200
        conn = await websocket_connect(f"ws://127.0.0.1:{port}/ws")
        await server.stop()
        assert await asyncio.wait_for(conn.read_message(), WAIT_S) is None
        assert conn.close_code == 1001


class _OnPostgresAndRedis:
    """Mixin: the same tests on a fresh Postgres database and a Redis bus (skip or fail as conftest says)."""

    @pytest.fixture(autouse=True)
    def _servers(self, postgres_url, redis_url):
        self.env = {**self.env, "DATABASE_URL": postgres_url, "REDIS_URL": redis_url}


class SubmitOnPostgresAndRedisTest(_OnPostgresAndRedis, SubmitTest):
    pass


class ListenerOnPostgresAndRedisTest(_OnPostgresAndRedis, ListenerTest):
    pass


class SubmitSocketOnPostgresAndRedisTest(_OnPostgresAndRedis, SubmitSocketTest):
    pass


class AddressRateLimitTest(WebTestCase):
    """Without API keys the per-caller limits count per client address (here behind one trusted
    proxy, which tells the clients apart in X-Forwarded-For)."""

    env = {"QUOTE_RATE_LIMIT": "2", "LIST_RATE_LIMIT": "2", "SUBSCRIBE_RATE_LIMIT": "1", "CONNECT_RATE_LIMIT": "2",
           "TRUSTED_PROXY_HOPS": "1", "RATE_WINDOW_SECONDS": "30"}  # longer than any test

    def by(self, address):
        return {"X-Forwarded-For": f"203.0.113.66, {address}"}  # the first entry is the client's own say

    async def status(self, path, address):
        response = await self.http_client.fetch(HTTPRequest(self.get_url(path), headers=self.by(address)),
                                                raise_error=False)
        if response.code == 429:
            assert json.loads(response.body)["error"]["code"] == "rate_limited"
            assert "from this address" in json.loads(response.body)["error"]["message"]
            assert 1 <= int(response.headers["Retry-After"]) <= 30
        return response.code

    async def handshake(self, path, address):
        request = HTTPRequest(self.get_url(path).replace("http://", "ws://"), headers=self.by(address))
        try:
            return await websocket_connect(request)
        except HTTPClientError as refused:
            assert json.loads(refused.response.body)["error"]["code"] == "rate_limited"
            assert int(refused.response.headers["Retry-After"]) >= 1
            return refused.code

    @gen_test
    async def test_quotes_lists_and_handshakes_are_limited_per_client_address(self):
        quote = "/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1"
        assert [await self.status(quote, "198.51.100.1") for _ in range(3)] == [200, 200, 429]
        assert [await self.status("/api/orders", "198.51.100.1") for _ in range(3)] == [200, 200, 429]
        assert [await self.status(quote, "198.51.100.2") for _ in range(2)] == [200, 200]
        assert await self.status("/api/orders", "2001:db8::1") == 200  # an IPv6 client counts by its /64
        assert await self.status("/api/orders", "2001:db8::2") == 200
        assert await self.status("/api/orders", "2001:db8::3") == 429
        assert await self.status("/api/orders", "2001:db8:0:1::1") == 200
        opened = [await self.handshake("/ws", "198.51.100.1"), await self.handshake("/api/orders/execute", "198.51.100.1")]
        assert await self.handshake("/ws", "198.51.100.1") == 429
        assert await self.handshake("/api/orders/execute", "198.51.100.1") == 429
        other = await self.handshake("/ws", "198.51.100.2")
        assert not isinstance(other, int)
        for conn in (*opened, other):
            conn.close()

    @gen_test
    async def test_a_subscribe_frame_over_the_address_limit_gets_an_error_frame_and_the_connection_stays_open(self):
        order_id = (await self.submit())[1]["orderId"]
        conn = await self.handshake("/ws", "198.51.100.1")
        for expected in ("subscribed", "error"):
            await conn.write_message(json.dumps({"subscribe": order_id}))
            while (frame := await self.frame(conn)).get("seq") is not None:
                pass
            assert frame["type"] == expected, frame
        assert frame["error"]["code"] == "rate_limited" and frame["error"]["retryAfter"] >= 1
        await conn.write_message(json.dumps({"unsubscribe": order_id}))
        assert await self.frame(conn) == {"type": "unsubscribed", "orderId": order_id}
        conn.close()


class UntrustedForwardedForTest(WebTestCase):
    """With no trusted proxy (the default) X-Forwarded-For is anyone's to write: ignored."""

    env = {"QUOTE_RATE_LIMIT": "2"}

    @gen_test
    async def test_without_trusted_proxies_a_forged_forwarded_for_does_not_buy_a_fresh_window(self):
        codes = []
        for n in range(3):
            response = await self.http_client.fetch(HTTPRequest(
                self.get_url("/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1"),
                headers={"X-Forwarded-For": f"198.51.100.{n}"}), raise_error=False)
            codes.append(response.code)
        assert codes == [200, 200, 429]


class AddressRateLimitOnPostgresAndRedisTest(_OnPostgresAndRedis, AddressRateLimitTest):
    pass
