"""The kill switch over HTTP and WebSocket, on SQLite + the in-process bus and on Postgres +
Redis: halts by scope, 503 `trading_halted` with the halt's reason, nothing stored, audited."""
from __future__ import annotations

import json


from tornado.httpclient import HTTPRequest
from tornado.testing import gen_test
from tornado.websocket import websocket_connect

from tests.integration.test_access import KEY_A, KEY_B, KeyedTestCase, bearer
from tests.integration.test_web import _OnPostgresAndRedis
from web.access import owner_id
from web.services import key_id_secret

# Their Postgres databases (postgres_url) are put back as the template holds them and reused.

OPERATOR = "operator-key-0123456789-abcdefghijklmn"
OP = bearer(OPERATOR)


class HaltTest(KeyedTestCase):
    env = {**KeyedTestCase.env, "ADMIN_KEYS": OPERATOR}

    def key_id(self, key: str) -> str:
        return owner_id(key, key_id_secret(self.storage, self.engine_settings))

    async def halt(self, status: int = 201, path: str = "/api/admin/halt", **body):
        got, answer = await self.call(path, "POST", body, headers=OP)
        assert got == status, answer
        return answer

    async def refused(self, key: str = KEY_A, **fields) -> dict:
        stored = self.order_count()
        status, answer = await self.submit_as(key, **fields)
        assert (status, answer["error"]["code"]) == (503, "trading_halted"), answer
        assert self.order_count() == stored, "a refused order is not stored"
        return answer["error"]

    async def accepted(self, key: str = KEY_A, **fields) -> dict:
        status, answer = await self.submit_as(key, **fields)
        assert status == 202, answer
        return answer

    async def halts_active(self) -> float:
        response = await self.http_client.fetch(self.get_url("/metrics"))
        (line,) = [line for line in response.body.decode().splitlines() if line.startswith("engine_halts_active ")]
        return float(line.split()[1])

    @gen_test
    async def test_metrics_count_the_halts_in_force_for_the_alert_rules(self):
        assert await self.halts_active() == 0
        await self.halt(scope="all")
        await self.halt(scope="pair", pair="SOL/USDC")
        assert await self.halts_active() == 2
        await self.halt(200, "/api/admin/resume", scope="all")
        assert await self.halts_active() == 1

    @gen_test
    async def test_halting_all_refuses_every_new_order_with_its_reason_until_resumed(self):
        halt = await self.halt(scope="all", reason="exchange incident #12")
        assert halt["scope"] == "all" and halt["reason"] == "exchange incident #12"
        assert halt["createdBy"].startswith("op_")
        for key in (KEY_A, KEY_B):
            error = await self.refused(key)
            assert error["reason"] == "exchange incident #12" and "exchange incident #12" in error["message"]
        await self.refused(type="limit", limitPrice="1")
        # Over a WebSocket submit: an error frame, then close 1008; nothing stored.
        url = self.get_url("/api/orders/execute").replace("http://", "ws://")
        conn = await websocket_connect(HTTPRequest(url, headers=bearer(KEY_A)))
        conn.write_message(json.dumps({"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}))
        frame = json.loads(await conn.read_message())
        assert frame["type"] == "error" and frame["error"]["code"] == "trading_halted"
        assert frame["error"]["reason"] == "exchange incident #12"
        assert self.order_count() == 0
        status, listing = await self.call("/api/admin/halts", headers=OP)
        assert status == 200 and [h["id"] for h in listing["halts"]] == [halt["id"]]
        resumed = await self.halt(200, "/api/admin/resume", scope="all")
        assert resumed["id"] == halt["id"] and resumed["resumedBy"] == halt["createdBy"]
        await self.accepted()
        status, listing = await self.call("/api/admin/halts", headers=OP)
        assert listing == {"halts": []}

    @gen_test
    async def test_a_key_halt_stops_that_key_s_orders_only(self):
        halt = await self.halt(scope="key", keyId=self.key_id(KEY_A), reason="runaway bot")
        assert halt["keyId"] == self.key_id(KEY_A) and "pair" not in halt
        assert (await self.refused(KEY_A))["reason"] == "runaway bot"
        await self.accepted(KEY_B)
        await self.halt(200, "/api/admin/resume", scope="key", keyId=self.key_id(KEY_A))
        await self.accepted(KEY_A)

    @gen_test
    async def test_a_pair_halt_covers_both_directions_and_no_other_pair(self):
        halt = await self.halt(scope="pair", pair="usdc/So11111111111111111111111111111111111111112")
        assert halt["pair"] == "SOL/USDC" and halt["reason"] == "halted by an operator"
        await self.refused(KEY_A)
        await self.refused(KEY_B, tokenIn="USDC", tokenOut="SOL", amount="10")
        await self.accepted(KEY_A, tokenOut="USDT")
        await self.accepted(KEY_B, tokenIn="USDT", tokenOut="USDC", amount="10")

    @gen_test
    async def test_halting_twice_answers_the_existing_halt_and_resuming_what_is_not_halted_is_404(self):
        first = await self.halt(scope="pair", pair="SOL/USDC", reason="first")
        again = await self.halt(200, scope="pair", pair="USDC/SOL", reason="second")
        assert again == first, "the same halt, its reason unchanged"
        await self.halt(200, "/api/admin/resume", scope="pair", pair="SOL/USDC")
        status, answer = await self.call("/api/admin/resume", "POST", {"scope": "pair", "pair": "SOL/USDC"},
                                         headers=OP)
        assert (status, answer["error"]["code"]) == (404, "not_found")
        status, answer = await self.call("/api/admin/resume", "POST", {"scope": "all"}, headers=OP)
        assert status == 404

    @gen_test
    async def test_bad_halt_requests_get_the_spec_s_errors_and_halt_nothing(self):
        for body, code, field in [
            ({}, "missing_field", "scope"),
            ({"scope": "everything"}, "invalid_field", "scope"),
            ({"scope": "key"}, "missing_field", "keyId"),
            ({"scope": "pair"}, "missing_field", "pair"),
            ({"scope": "all", "keyId": "abc"}, "invalid_field", "keyId"),
            ({"scope": "key", "keyId": "abc", "pair": "SOL/USDC"}, "invalid_field", "pair"),
            ({"scope": "pair", "pair": "SOL-USDC"}, "invalid_field", "pair"),
            ({"scope": "pair", "pair": "SOL/DOGE"}, "unknown_token", "pair"),
            ({"scope": "pair", "pair": "SOL/sol"}, "same_token", "pair"),
            ({"scope": "key", "keyId": 12}, "invalid_field", "keyId"),
            ({"scope": "all", "reason": ""}, "invalid_field", "reason"),
            ({"scope": "all", "reason": "x" * 501}, "invalid_field", "reason"),
            ({"scope": "all", "why": "x"}, "unknown_field", "why"),
        ]:
            for path in ("/api/admin/halt", "/api/admin/resume"):
                status, answer = await self.call(path, "POST", body, headers=OP)
                assert (status, answer["error"]["code"], answer["error"].get("field")) == (400, code, field), body
        status, answer = await self.call("/api/admin/halt", "POST", {"scope": "all"}, headers=bearer(KEY_A))
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        status, answer = await self.call("/api/admin/halts", headers=bearer(KEY_A))
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        assert self.storage.halts.active() == []
        await self.accepted()

    @gen_test
    async def test_every_halt_and_resume_is_audited_refused_ones_too(self):
        await self.halt(scope="pair", pair="SOL/USDC", reason="depeg")
        await self.halt(200, scope="pair", pair="SOL/USDC")
        await self.halt(200, "/api/admin/resume", scope="pair", pair="SOL/USDC")
        await self.call("/api/admin/resume", "POST", {"scope": "pair", "pair": "SOL/USDC"}, headers=OP)
        entries = []
        while len(entries) < 4:  # a refusal's entry is written after its answer
            _, page = await self.call("/api/admin/audit", headers=OP)
            entries = page["entries"]
        assert [(e["action"], e["target"], e["status"]) for e in reversed(entries)] == [
            ("halt", "pair:SOL/USDC", 201), ("halt", "pair:SOL/USDC", 200),
            ("resume", "pair:SOL/USDC", 200), ("resume", "pair:SOL/USDC", 404)]
        assert entries[-1]["request"] == {"scope": "pair", "pair": "SOL/USDC", "reason": "depeg"}
        assert entries[-1]["answer"]["reason"] == "depeg"

    @gen_test
    async def test_a_repeat_of_an_order_accepted_before_the_halt_is_answered_as_a_repeat(self):
        first = await self.accepted(clientOrderId="before-halt")
        await self.halt(scope="all", reason="incident")
        status, again = await self.submit_as(KEY_A, clientOrderId="before-halt")
        assert status == 200 and again["orderId"] == first["orderId"]
        status, answer = await self.submit_as(KEY_A, clientOrderId="before-halt", amount="2")
        assert (status, answer["error"]["code"]) == (409, "conflict")
        await self.refused(clientOrderId="new-one")


class HaltOnPostgresAndRedisTest(_OnPostgresAndRedis, HaltTest):
    pass
