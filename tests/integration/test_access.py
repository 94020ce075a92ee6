"""API keys over the real web layer: 401s, owners, per-key visibility and the per-key rate
limit, on the embedded storage (SQLite, in-process bus) and again on Postgres and Redis."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import uuid

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import gen_test
from tornado.websocket import websocket_connect

from tests.integration.test_web import CONFIRMED, LIFECYCLE, WebTestCase, _OnPostgresAndRedis, statuses
from storage.secrets import shared_secret
from web.access import owner_id
from web.services import key_id_secret

# Their Postgres databases (postgres_url) are put back as the template holds them and reused.

KEY_A, KEY_B = "key-a-0123456789-0123456789abcdef", "key-b-9876543210-fedcba9876543210"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def everything_stored(settings) -> bytes:
    """Every byte the database holds. SQLite: each file of the data directory (the main file and
    its `-wal` and `-shm`, where fresh rows sit until a checkpoint) and every row of every table
    read through SQL. Postgres: every row of every table of the test database, as text."""
    if settings.database_url:
        import psycopg2

        with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                        " AND table_schema NOT IN ('pg_catalog', 'information_schema')")
            tables = cur.fetchall()
            assert any(name == "orders" for _, name in tables), tables
            rows = []
            for schema, name in tables:
                cur.execute(f'SELECT t::text FROM "{schema}"."{name}" t')
                rows += [row for (row,) in cur.fetchall()]
        conn.close()
        return "\n".join(rows).encode()
    files = sorted(path for path in settings.data_dir.iterdir() if path.is_file())
    assert any(path.name.endswith("-wal") for path in files), files  # the rows not yet checkpointed
    dump = b"".join(path.read_bytes() for path in files)
    database = sqlite3.connect(f"file:{settings.sqlite_path}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "orders" in tables, tables
        for name in tables:
            dump += repr(database.execute(f'SELECT * FROM "{name}"').fetchall()).encode()
    finally:
        database.close()
    return dump


def everything_in_redis(url: str) -> bytes:
    """Every key of the test's Redis database with its value (streams entry by entry)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        dump = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            value = {"string": lambda: client.get(key), "hash": lambda: client.hgetall(key),
                     "list": lambda: client.lrange(key, 0, -1), "set": lambda: client.smembers(key),
                     "zset": lambda: client.zrange(key, 0, -1, withscores=True),
                     "stream": lambda: client.xrange(key)}.get(kind, lambda: kind)()
            dump.append(repr((key, value)).encode())
        return b"\n".join(dump)
    finally:
        client.close()


class KeyedTestCase(WebTestCase):
    """An app with two API keys."""

    env = {"API_KEYS": f"{KEY_A},{KEY_B}", "KEY_RATE_LIMIT": "1000"}

    async def submit_as(self, key: str, **fields):
        body = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", **fields}
        return await self.call("/api/orders/execute", "POST", body, headers=bearer(key))

    async def connect_as(self, key: str, path: str, token: bool = False):
        """A WebSocket authenticated by header, or by `?token=` (as a browser does)."""
        url = self.get_url(path).replace("http://", "ws://")
        if token:
            return await websocket_connect(url + ("&" if "?" in url else "?") + f"token={key}")
        return await websocket_connect(HTTPRequest(url, headers=bearer(key)))

    async def refused_handshake(self, path: str, headers=None):
        """(status, parsed body, headers) of a WebSocket handshake the server refuses."""
        request = HTTPRequest(self.get_url(path).replace("http://", "ws://"), headers=headers or {})
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(request)
        response = refused.value.response
        return refused.value.code, json.loads(response.body), response.headers


class AccessTest(KeyedTestCase):
    @gen_test
    async def test_without_a_valid_key_every_api_and_websocket_request_is_401_and_operations_stay_open(self):
        order_id = (await self.submit_as(KEY_A))[1]["orderId"]
        requests = [("/api/tokens", "GET", None), ("/api/orders", "GET", None), (f"/api/orders/{order_id}", "GET", None),
                    ("/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1", "GET", None), ("/api/sim/pools", "GET", None),
                    (f"/api/sim/swaps?orderId={order_id}", "GET", None), ("/api/nowhere", "GET", None),
                    ("/api/orders/execute", "POST", {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}),
                    ("/api/sim/launch", "POST", {"token": "POPCAT", "inSeconds": 1}),
                    (f"/api/orders/{order_id}/cancel", "POST", "")]
        refusals = [None, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY_A}"},
                    {"Authorization": "Bearer "}, {"Authorization": KEY_A}]
        for path, method, body in requests:
            for headers in refusals:
                status, answer = await self.call(path, method, body, headers=headers)
                assert (status, answer["error"]["code"]) == (401, "unauthorized"), (path, method, headers)
        # ?token= is for WebSockets only
        status, answer = await self.call(f"/api/tokens?token={KEY_A}")
        assert status == 401
        for path in ("/ws", f"/ws?orderId={order_id}", "/api/orders/execute", "/ws?token=wrong",
                     f"/ws?token={KEY_A}&token={KEY_A}"):
            status, answer, headers = await self.refused_handshake(path)
            assert (status, answer["error"]["code"]) == (401, "unauthorized"), path
            assert headers["Content-Type"].startswith("application/json") and headers["WWW-Authenticate"] == "Bearer"
        status, _, _ = await self.refused_handshake("/ws", {"Authorization": "Bearer wrong"})
        assert status == 401
        for path in ("/healthz", "/readyz", "/api/openapi.json"):
            assert (await self.call(path))[0] == 200, path
        response = await self.http_client.fetch(self.get_url("/metrics"))
        assert response.code == 200
        response = await self.http_client.fetch(self.get_url("/"))
        assert response.code == 200
        assert self.order_count() == 1

    @gen_test
    async def test_a_key_is_accepted_as_a_bearer_header_or_as_a_websocket_token(self):
        status, tokens = await self.call("/api/tokens", headers=bearer(KEY_B))
        assert status == 200 and tokens["tokens"]
        status, _ = await self.call("/api/tokens", headers={"Authorization": f"bearer  {KEY_B} "})
        assert status == 200
        order_id = (await self.submit_as(KEY_A))[1]["orderId"]
        by_token = await self.connect_as(KEY_A, f"/ws?orderId={order_id}", token=True)
        by_header = await self.connect_as(KEY_A, f"/ws?orderId={order_id}")
        assert statuses([await self.frame(by_token)]) == statuses([await self.frame(by_header)]) == [(1, "pending")]
        submit = await self.connect_as(KEY_B, "/api/orders/execute", token=True)
        await submit.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}))
        accepted = await self.frame(submit)
        assert accepted["type"] == "accepted"
        order = self.storage.orders.get_order(uuid.UUID(accepted["orderId"]))
        assert order.owner == owner_id(KEY_B, key_id_secret(self.storage, self.engine_settings))
        for conn in (by_token, by_header, submit):
            conn.close()

    @gen_test
    async def test_orders_belong_to_their_key_stored_as_an_id_never_the_key(self):
        status, answer = await self.submit_as(KEY_A, clientOrderId="mine")
        assert status == 202
        order = self.storage.orders.get_order(uuid.UUID(answer["orderId"]))
        secret = key_id_secret(self.storage, self.engine_settings)
        assert order.owner == owner_id(KEY_A, secret) and len(order.owner) == 16
        assert KEY_A not in order.owner and owner_id(KEY_A, secret) != owner_id(KEY_B, secret)
        # Derived under the engine's secret: not a hash anyone can compute from the key alone.
        assert order.owner != hashlib.sha256(b"dex-engine api key\n" + KEY_A.encode()).hexdigest()[:16]
        assert order.owner != owner_id(KEY_A, b"") and len(secret) >= 32
        status, _ = await self.call(f"/api/orders/{answer['orderId']}/cancel", "POST", "", headers=bearer(KEY_A))
        assert status == 200  # a second write under the key: the cancelled event
        stored = everything_stored(self.engine_settings)
        assert owner_id(KEY_A, secret).encode() in stored  # the dump does see the order (and its owner)
        if self.engine_settings.redis_url:  # and the bus: its job stream and whatever else it keeps
            queued = everything_in_redis(self.engine_settings.redis_url)
            assert answer["orderId"].encode() in queued
            stored += queued
        for key in (KEY_A, KEY_B):
            assert key.encode() not in stored, key

    @gen_test
    async def test_another_keys_order_is_not_found_on_every_http_endpoint_and_never_listed(self):
        mine = (await self.submit_as(KEY_A, clientOrderId="same"))[1]["orderId"]
        theirs = (await self.submit_as(KEY_B))[1]["orderId"]
        self.advance(mine, *LIFECYCLE, CONFIRMED)
        for path, method in [(f"/api/orders/{mine}", "GET"), (f"/api/sim/swaps?orderId={mine}", "GET"),
                             (f"/api/orders/{mine}/cancel", "POST")]:
            status, answer = await self.call(path, method, "" if method == "POST" else None, headers=bearer(KEY_B))
            assert (status, answer["error"]["code"]) == (404, "not_found"), path
        status, own = await self.call(f"/api/orders/{mine}", headers=bearer(KEY_A))
        assert status == 200 and own["status"] == "confirmed"
        for key, expected in ((KEY_A, [mine]), (KEY_B, [theirs])):
            for query in ("", "?status=pending", "?status=confirmed", "?limit=1"):
                status, page = await self.call(f"/api/orders{query}", headers=bearer(key))
                assert status == 200
                assert {o["orderId"] for o in page["orders"]} <= set(expected), (key, query)
            status, page = await self.call("/api/orders", headers=bearer(key))
            assert [o["orderId"] for o in page["orders"]] == expected
        # The same clientOrderId under another key is that key's own, new order.
        status, answer = await self.submit_as(KEY_B, clientOrderId="same")
        assert status == 202 and answer["orderId"] not in (mine, theirs)

    @gen_test
    async def test_another_keys_order_is_not_found_on_every_websocket_and_never_streamed(self):
        mine = (await self.submit_as(KEY_A))[1]["orderId"]
        self.advance(mine, LIFECYCLE[0])
        from web.hub import RecentEvents

        for recent in (True, False):  # from the events the process holds, and from the database
            if not recent:
                self.services.hub.recent = RecentEvents()
            for token in (False, True):
                conn = await self.connect_as(KEY_B, f"/ws?orderId={mine}", token=token)
                frames = await self.frames_until_close(conn)
                assert [f["error"]["code"] for f in frames] == ["not_found"] and conn.close_code == 1008
                conn = await self.connect_as(KEY_B, f"/ws?orderId={mine}&after=1", token=token)
                assert [f["error"]["code"] for f in await self.frames_until_close(conn)] == ["not_found"]
            firehose = await self.connect_as(KEY_B, "/ws")
            await firehose.write_message(json.dumps({"subscribe": mine}))
            assert (await self.frame(firehose))["error"]["code"] == "not_found"  # and it stays open:
            theirs = (await self.submit_as(KEY_B))[1]["orderId"]
            await firehose.write_message(json.dumps({"subscribe": theirs}))
            # its pending event may come live before the subscribe is read: either way, once
            frames = [await self.frame(firehose), await self.frame(firehose)]
            assert {"type": "subscribed", "orderId": theirs} in frames
            assert statuses([f for f in frames if "seq" in f]) == [(1, "pending")]
            firehose.close()

    @gen_test
    async def test_an_all_orders_stream_sees_only_its_keys_orders(self):
        stream_a = await self.connect_as(KEY_A, "/ws", token=True)
        stream_b = await self.connect_as(KEY_B, "/ws")
        theirs = (await self.submit_as(KEY_B))[1]["orderId"]
        mine = (await self.submit_as(KEY_A))[1]["orderId"]
        self.advance(theirs, *LIFECYCLE, CONFIRMED)
        self.advance(mine, LIFECYCLE[0])
        got_a = [await self.frame(stream_a) for _ in range(2)]
        assert [(f["orderId"], f["seq"]) for f in got_a] == [(mine, 1), (mine, 2)]
        got_b = [await self.frame(stream_b) for _ in range(5)]
        assert {f["orderId"] for f in got_b} == {theirs}
        self.advance(mine, LIFECYCLE[1])  # nothing of B's came to A in between
        assert (await self.frame(stream_a))["seq"] == 3
        stream_a.close()
        stream_b.close()

    @gen_test
    async def test_ten_racing_repeats_of_a_client_order_id_create_one_order_per_key(self):
        answers = await asyncio.gather(*(self.submit_as(key, clientOrderId="race")
                                         for _ in range(10) for key in (KEY_A, KEY_B)))
        for key in (KEY_A, KEY_B):
            mine = [answer for (status, answer), k in zip(answers, [KEY_A, KEY_B] * 10) if k == key]
            codes = sorted(status for (status, _), k in zip(answers, [KEY_A, KEY_B] * 10) if k == key)
            assert codes == [200] * 9 + [202]
            assert len({answer["orderId"] for answer in mine}) == 1
        assert self.order_count() == 2 and self.storage.bus.queue_depth() == 2

    @gen_test
    async def test_a_key_given_as_a_token_is_never_logged(self):
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)

        keep = Keep(logging.DEBUG)
        access = logging.getLogger("tornado.access")
        saved = access.level
        access.addHandler(keep)
        access.setLevel(logging.DEBUG)
        try:
            conn = await self.connect_as(KEY_A, "/ws", token=True)
            conn.close()
            await self.refused_handshake(f"/ws?token={KEY_B}x")
            await self.call(f"/api/tokens?token={KEY_B}", headers=bearer(KEY_A))  # 400: not on HTTP
            conn = await self.connect(f"/ws?%74oken={KEY_A}")  # authenticates: the name is read decoded
            conn.close()
            await self.call(f"/api/tokens?a=1&tok%65n={KEY_B}&b=2", headers=bearer(KEY_A))
            await self.call(f"/no-such-path?token={KEY_B}")  # a 404 of Tornado's own
        finally:
            access.removeHandler(keep)
            access.setLevel(saved)
        lines = [record.getMessage() for record in records]
        assert len(lines) >= 6 and all("token=***" in line for line in lines), lines
        assert not any(KEY_A in line or KEY_B in line for line in lines), lines


class KeyRateLimitTest(KeyedTestCase):
    env = {"API_KEYS": f"{KEY_A},{KEY_B}", "KEY_RATE_LIMIT": "4"}

    @gen_test
    async def test_submissions_beyond_the_key_rate_limit_answer_429_and_another_key_is_unaffected(self):
        assert (await self.submit_as(KEY_A))[0] == 202
        # Junk counts too: it is counted before its body is read.
        status, _ = await self.call("/api/orders/execute", "POST", "{junk", headers=bearer(KEY_A))
        assert status == 400
        status, _ = await self.call("/api/orders/execute", "POST", "{}", content_type="text/plain",
                                    headers=bearer(KEY_A))
        assert status == 415
        socket = await self.connect_as(KEY_A, "/api/orders/execute", token=True)  # a WebSocket submit counts
        socket.close()
        response = await self.http_client.fetch(HTTPRequest(
            self.get_url("/api/orders/execute"), method="POST", headers={**bearer(KEY_A), "Content-Type":
                                                                         "application/json"},
            body=json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"})), raise_error=False)
        assert response.code == 429 and json.loads(response.body)["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        status, answer, headers = await self.refused_handshake("/api/orders/execute", bearer(KEY_A))
        assert (status, answer["error"]["code"]) == (429, "rate_limited") and int(headers["Retry-After"]) >= 1
        # Reading is not submitting, and the other key has its own window.
        assert (await self.call("/api/orders", headers=bearer(KEY_A)))[0] == 200
        assert [(await self.submit_as(KEY_B))[0] for _ in range(4)] == [202] * 4
        assert (await self.submit_as(KEY_B))[0] == 429
        assert self.order_count() == 5


class AccessOnPostgresAndRedisTest(_OnPostgresAndRedis, AccessTest):
    pass


class KeyRateLimitOnPostgresAndRedisTest(_OnPostgresAndRedis, KeyRateLimitTest):
    pass


class KeyIdSecretTest(AccessTest):
    """The same, with KEY_ID_SECRET set: owner ids are derived under it, not the database's."""

    env = {**AccessTest.env, "KEY_ID_SECRET": "key-id-secret-0123456789abcdefghijkl"}

    @gen_test
    async def test_owner_ids_are_derived_under_key_id_secret(self):
        answer = (await self.submit_as(KEY_A))[1]
        order = self.storage.orders.get_order(uuid.UUID(answer["orderId"]))
        assert order.owner == owner_id(KEY_A, self.env["KEY_ID_SECRET"].encode())
        assert order.owner != owner_id(KEY_A, shared_secret(self.storage.db))



class CallerRateLimitTest(KeyedTestCase):
    """QUOTE_RATE_LIMIT, LIST_RATE_LIMIT, SUBSCRIBE_RATE_LIMIT and CONNECT_RATE_LIMIT per key."""

    env = {"API_KEYS": f"{KEY_A},{KEY_B}", "KEY_RATE_LIMIT": "1000", "QUOTE_RATE_LIMIT": "3", "LIST_RATE_LIMIT": "3",
           "SUBSCRIBE_RATE_LIMIT": "2", "CONNECT_RATE_LIMIT": "3", "RATE_WINDOW_SECONDS": "30"}
    # A window far longer than the test: a slow machine cannot spread its requests over two
    # windows (that windows slide is the bus tests' part: test_bus.py).

    async def limited(self, path: str, key: str, kind: str) -> None:
        response = await self.http_client.fetch(HTTPRequest(self.get_url(path), headers=bearer(key)),
                                                raise_error=False)
        error = json.loads(response.body)["error"]
        assert (response.code, error["code"]) == (429, "rate_limited"), response.body
        assert kind in error["message"] and 1 <= int(response.headers["Retry-After"]) <= 30
        assert error["retryAfter"] == int(response.headers["Retry-After"])

    @gen_test
    async def test_quotes_and_lists_beyond_their_limits_answer_429_and_another_key_is_unaffected(self):
        quote = "/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1"
        assert (await self.call(quote, headers=bearer(KEY_A)))[0] == 200
        assert (await self.call("/api/quote?tokenIn=SOL", headers=bearer(KEY_A)))[0] == 400  # junk counts too
        assert (await self.call(quote, headers=bearer(KEY_A)))[0] == 200
        await self.limited(quote, KEY_A, "quote requests")
        for _ in range(3):
            assert (await self.call("/api/orders?limit=1", headers=bearer(KEY_A)))[0] == 200
        await self.limited("/api/orders", KEY_A, "order list requests")
        # The other key has its own windows; other reads and submissions are not counted here.
        assert [(await self.call(quote, headers=bearer(KEY_B)))[0] for _ in range(3)] == [200] * 3
        assert [(await self.call("/api/orders", headers=bearer(KEY_B)))[0] for _ in range(3)] == [200] * 3
        order_id = (await self.submit_as(KEY_A))[1]["orderId"]
        assert (await self.call(f"/api/orders/{order_id}", headers=bearer(KEY_A)))[0] == 200
        assert (await self.call("/api/tokens", headers=bearer(KEY_A)))[0] == 200

    @gen_test
    async def test_websocket_handshakes_beyond_the_limit_are_refused_with_429_on_both_endpoints(self):
        order_id = (await self.submit_as(KEY_A))[1]["orderId"]
        sockets = [await self.connect_as(KEY_A, "/ws", token=True),
                   await self.connect_as(KEY_A, f"/ws?orderId={order_id}"),
                   await self.connect_as(KEY_A, "/api/orders/execute")]
        for path in ("/ws", "/api/orders/execute"):
            status, answer, headers = await self.refused_handshake(path, bearer(KEY_A))
            assert (status, answer["error"]["code"]) == (429, "rate_limited"), path
            assert "WebSocket connections" in answer["error"]["message"] and 1 <= int(headers["Retry-After"]) <= 30
        other = await self.connect_as(KEY_B, "/ws")  # another key's own window
        # The connections already open go on.
        submit = sockets[2]
        await submit.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}))
        assert (await self.frame(submit))["type"] == "accepted"
        for conn in (*sockets, other):
            conn.close()

    @gen_test
    async def test_a_subscribe_frame_beyond_the_limit_gets_an_error_frame_and_the_connection_stays_usable(self):
        orders = [(await self.submit_as(KEY_A))[1]["orderId"] for _ in range(3)]
        conn = await self.connect_as(KEY_A, "/ws")
        other = await self.connect_as(KEY_A, "/ws")  # the limit holds for the key, over its connections
        await conn.write_message(json.dumps({"subscribe": orders[0]}))
        assert await self.frame_of(conn, orders[:1]) == {"type": "subscribed", "orderId": orders[0]}
        assert statuses([await self.frame_of(conn, orders[:1])]) == [(1, "pending")]
        await other.write_message(json.dumps({"subscribe": orders[1]}))
        assert (await self.frame_of(other, orders[1:2]))["type"] == "subscribed"
        await conn.write_message(json.dumps({"subscribe": orders[2]}))
        refused = await self.frame_of(conn, orders[2:])
        assert refused["type"] == "error" and refused["error"]["code"] == "rate_limited", refused
        assert 1 <= refused["error"]["retryAfter"] <= 30 and "subscribe frames" in refused["error"]["message"]
        # Still open and answering: unsubscribe works at once, events of its order still come.
        await conn.write_message(json.dumps({"unsubscribe": orders[0]}))
        assert await self.frame_of(conn, orders) == {"type": "unsubscribed", "orderId": orders[0]}
        self.advance(orders[1], ("routing", {}))
        assert statuses([await self.frame_of(other, orders[1:2])]) == [(1, "pending")]
        assert statuses([await self.frame_of(other, orders[1:2])]) == [(2, "routing")]
        # Another key's subscribes are its own.
        theirs = (await self.submit_as(KEY_B))[1]["orderId"]
        conn_b = await self.connect_as(KEY_B, "/ws")
        await conn_b.write_message(json.dumps({"subscribe": theirs}))
        assert (await self.frame_of(conn_b, [theirs]))["type"] == "subscribed"
        for c in (conn, other, conn_b):
            c.close()


class CallerRateLimitOnPostgresAndRedisTest(_OnPostgresAndRedis, CallerRateLimitTest):
    pass
