"""Trading keys managed through the operator API (web/admin_keys.py): created, listed, revoked
and emptied of their open orders without a restart, every action audited and no key ever
stored; operators read every order. On SQLite and again on Postgres and Redis."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal


from tornado.testing import gen_test

from tests.integration.test_access import KEY_A, KEY_B, KeyedTestCase, bearer, everything_in_redis, everything_stored
from tests.integration.test_admin import OPERATOR
from storage.records import OrderDraft
from tests.integration.test_web import CONFIRMED, LIFECYCLE, _OnPostgresAndRedis
from web.access import owner_id
from web.services import key_id_secret

# Their Postgres databases (postgres_url) are put back as the template holds them and reused.

OP = bearer(OPERATOR)


class ManagedKeysTest(KeyedTestCase):
    env = {**KeyedTestCase.env, "ADMIN_KEYS": OPERATOR}

    def key_id(self, key: str) -> str:
        return owner_id(key, key_id_secret(self.storage, self.engine_settings))

    async def create(self, **body):
        status, answer = await self.call("/api/admin/keys", "POST", body, headers=OP)
        assert status == 201, answer
        return answer

    async def audit(self, count: int):
        entries = []
        deadline = time.monotonic() + 5
        while len(entries) < count and time.monotonic() < deadline:  # refusals are audited after answering
            entries = (await self.call("/api/admin/audit", headers=OP))[1]["entries"]
        return entries

    @gen_test
    async def test_a_created_key_trades_at_once_is_answered_once_and_neither_stored_nor_audited(self):
        created = await self.create(label="desk 1", limits={"maxOrderUsd": "1000.50", "maxOpenOrders": 5})
        key = created["key"]
        assert len(key) >= 32 and created["keyId"] == created["owner"] == self.key_id(key)
        assert created["label"] == "desk 1" and created["source"] == "managed" and created["revokedAt"] is None
        assert created["limits"] == {"maxOrderUsd": "1000.5", "maxOpenOrders": 5}
        status, order = await self.submit_as(key)
        assert status == 202
        status, page = await self.call("/api/orders", headers=bearer(key))
        assert [o["orderId"] for o in page["orders"]] == [order["orderId"]]
        status, listed = await self.call("/api/admin/keys", headers=OP)
        assert status == 200
        by_id = {k["keyId"]: k for k in listed["keys"]}
        assert by_id[self.key_id(KEY_A)]["source"] == by_id[self.key_id(KEY_B)]["source"] == "environment"
        assert {k: v for k, v in by_id[created["keyId"]].items()} == {k: v for k, v in created.items() if k != "key"}
        assert key not in json.dumps(listed) and "digest" not in json.dumps(listed)
        (entry,) = await self.audit(1)
        assert (entry["action"], entry["target"], entry["status"]) == ("keys.create", created["keyId"], 201)
        assert entry["answer"]["key"] == "***" and entry["answer"]["keyId"] == created["keyId"]
        assert entry["request"] == {"label": "desk 1", "limits": {"maxOrderUsd": "1000.50", "maxOpenOrders": 5}}
        stored = everything_stored(self.engine_settings)
        assert created["keyId"].encode() in stored  # the dump does see the key's row
        if self.engine_settings.redis_url:
            stored += everything_in_redis(self.engine_settings.redis_url)
        assert key.encode() not in stored

    @gen_test
    async def test_a_key_created_for_an_existing_owner_shares_its_orders_so_a_key_rotates(self):
        mine = (await self.submit_as(KEY_A))[1]["orderId"]
        rotated = await self.create(owner=self.key_id(KEY_A))
        assert rotated["owner"] == self.key_id(KEY_A) != rotated["keyId"]
        status, page = await self.call("/api/orders", headers=bearer(rotated["key"]))
        assert [o["orderId"] for o in page["orders"]] == [mine]
        again = await self.create(owner=rotated["keyId"])  # a managed key's owner, the same
        assert again["owner"] == self.key_id(KEY_A)
        for owner in ("nobody", "op_" + self.key_id(OPERATOR), 7):
            status, answer = await self.call("/api/admin/keys", "POST", {"owner": owner}, headers=OP)
            assert (status, answer["error"]["field"]) == (400, "owner"), owner

    @gen_test
    async def test_bad_requests_to_create_a_key_are_refused_and_nothing_is_created(self):
        for body, field in [({"limits": {"maxOrderUsd": "-1"}}, "limits.maxOrderUsd"),
                            ({"limits": {"maxOpenOrders": 1.5}}, "limits.maxOpenOrders"),
                            ({"limits": {"maxOrderUSD": 1}}, "limits.maxOrderUSD"), ({"limits": []}, "limits"),
                            ({"label": 3}, "label"), ({"lable": "x"}, "lable")]:
            status, answer = await self.call("/api/admin/keys", "POST", body, headers=OP)
            assert (status, answer["error"].get("field")) == (400, field), body
        for headers, expected in ((None, 401), (bearer(KEY_A), 403)):
            status, answer = await self.call("/api/admin/keys", "POST", {}, headers=headers)
            assert status == expected
            status, answer = await self.call("/api/admin/keys", headers=headers)
            assert status == expected
        assert self.storage.operators.keys() == []

    @gen_test
    async def test_limits_of_an_owner_are_those_of_its_newest_live_key(self):
        first = await self.create(limits={"maxOrderUsd": 10})
        assert self.storage.operators.limits_of(first["owner"]) == {"maxOrderUsd": "10"}
        second = await self.create(owner=first["keyId"], limits={"maxNotional24hUsd": "0", "maxOpenOrders": 0})
        assert self.storage.operators.limits_of(first["owner"]) == {"maxNotional24hUsd": "0", "maxOpenOrders": 0}
        await self.call(f"/api/admin/keys/{second['keyId']}", "DELETE", headers=OP)
        assert self.storage.operators.limits_of(first["owner"]) == {"maxOrderUsd": "10"}
        assert self.storage.operators.limits_of("nobody") == {}

    @gen_test
    async def test_a_managed_key_s_own_risk_limits_refuse_its_orders_and_no_other_key_s(self):
        created = await self.create(limits={"maxOrderUsd": "50"})  # 1.5 SOL is worth ~225 USDC
        status, refused = await self.submit_as(created["key"])
        assert status == 422, refused
        error = refused["error"]
        assert (error["code"], error["limit"], error["value"]) == ("risk_limit", "maxOrderUsd", "50")
        assert Decimal(error["orderValue"]) > 50
        assert (await self.submit_as(KEY_A))[0] == 202  # the settings' limits (none) for the others
        assert (await self.submit_as(created["key"], amount="0.1"))[0] == 202  # ~15 USDC

    @gen_test
    async def test_a_revoked_key_is_refused_at_once_and_its_websockets_are_closed(self):
        created = await self.create()
        key, key_id = created["key"], created["keyId"]
        order_id = (await self.submit_as(key))[1]["orderId"]
        stream = await self.connect_as(key, f"/ws?orderId={order_id}", token=True)
        firehose = await self.connect_as(key, "/ws")
        other = await self.connect_as(KEY_A, "/ws")
        assert (await self.frame(stream))["status"] == "pending"
        status, revoked = await self.call(f"/api/admin/keys/{key_id}", "DELETE", headers=OP)
        assert status == 200 and revoked["revokedAt"] and revoked["revokedBy"] == "op_" + self.key_id(OPERATOR)
        for conn in (stream, firehose):
            assert await self.frames_until_close(conn) == []
            assert (conn.close_code, conn.close_reason) == (1008, "key revoked")
        status, answer = await self.call("/api/orders", headers=bearer(key))
        assert (status, answer["error"]["code"]) == (401, "unauthorized")
        status, _, _ = await self.refused_handshake(f"/ws?token={key}")
        assert status == 401
        status, again = await self.call(f"/api/admin/keys/{key_id}", "DELETE", headers=OP)  # idempotent
        assert (status, again["revokedAt"]) == (200, revoked["revokedAt"])
        status, answer = await self.call("/api/admin/keys/nosuchkey", "DELETE", headers=OP)
        assert (status, answer["error"]["code"]) == (404, "not_found")
        for env_id in (self.key_id(KEY_A), "op_" + self.key_id(OPERATOR)):
            status, answer = await self.call(f"/api/admin/keys/{env_id}", "DELETE", headers=OP)
            assert (status, answer["error"]["code"]) == (409, "conflict")
            assert "_KEYS" in answer["error"]["message"]
        assert (await self.submit_as(KEY_A))[0] == 202 and other.close_code is None
        entries = await self.audit(6)
        assert sorted((e["action"], e["target"], e["status"]) for e in entries) == sorted([
            ("keys.create", key_id, 201), ("keys.revoke", key_id, 200), ("keys.revoke", key_id, 200),
            ("keys.revoke", "nosuchkey", 404), ("keys.revoke", self.key_id(KEY_A), 409),
            ("keys.revoke", "op_" + self.key_id(OPERATOR), 409)])  # refusals are audited after answering
        other.close()

    @gen_test(timeout=15)
    async def test_a_revocation_whose_message_was_lost_takes_effect_within_seconds_sockets_included(self):
        created = await self.create()
        key = created["key"]
        assert (await self.call("/api/orders", headers=bearer(key)))[0] == 200  # now in the cache
        stream = await self.connect_as(key, "/ws")
        revoked_at = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, self.storage.operators.revoke_key,
                                                         created["keyId"], "someone")  # no message at all
        while (await self.call("/api/orders", headers=bearer(key)))[0] == 200:
            await asyncio.sleep(0.05)
        assert time.monotonic() - revoked_at < 2.0 + 0.5  # POSITIVE_TTL_S, and slack
        assert await self.frames_until_close(stream) == [] and stream.close_code == 1008
        assert time.monotonic() - revoked_at < 2 * 2.0 + 0.5  # within two sweeps

    @gen_test
    async def test_unknown_keys_cost_one_lookup_per_loop_turn_and_are_then_remembered(self):
        lookups = []
        real = self.services.keys.managed._lookup_batch
        self.services.keys.managed._lookup_batch = lambda digests: lookups.append(len(digests)) or real(digests)
        unknown = [f"unknown-key-{n:02d}-0123456789abcdefghij" for n in range(40)]
        answers = await asyncio.gather(*[self.call("/api/orders", headers=bearer(k)) for k in unknown * 2])
        assert {status for status, _ in answers} == {401}
        # 80 requests, 40 keys: each digest asked at most once in all (batched, then remembered);
        # how many batches depends on how the requests arrive (one a loop turn on a loaded machine).
        assert sum(lookups) <= 40, lookups
        before = len(lookups)
        answers = await asyncio.gather(*[self.call("/api/orders", headers=bearer(k)) for k in unknown])
        assert {status for status, _ in answers} == {401} and len(lookups) == before  # remembered
        assert (await self.call("/api/orders", headers=bearer(KEY_A)))[0] == 200 and len(lookups) == before
        created = await self.create()  # a creation forgets the unknown ones: never a new key refused
        assert (await self.call("/api/orders", headers=bearer(created["key"])))[0] == 200

    @gen_test
    async def test_cancel_all_cancels_the_owner_s_open_orders_as_its_own_cancel_does(self):
        rotated = await self.create(owner=self.key_id(KEY_A))
        pending = (await self.submit_as(KEY_A))[1]["orderId"]
        also_pending = (await self.submit_as(rotated["key"]))[1]["orderId"]
        building = (await self.submit_as(KEY_A))[1]["orderId"]
        done = (await self.submit_as(KEY_A))[1]["orderId"]
        theirs = (await self.submit_as(KEY_B))[1]["orderId"]
        self.advance(building, *LIFECYCLE[:2])
        self.advance(done, *LIFECYCLE, CONFIRMED)
        status, answer = await self.call(f"/api/admin/keys/{rotated['keyId']}/cancel-all", "POST", headers=OP)
        assert status == 200, answer
        assert sorted(answer["cancelled"]) == sorted([pending, also_pending])
        assert answer["notCancelled"] == [{"orderId": building, "status": "building"}]
        assert answer["owner"] == self.key_id(KEY_A)
        for order_id, expected in ((pending, "cancelled"), (also_pending, "cancelled"), (building, "building"),
                                   (done, "confirmed")):
            status, order = await self.call(f"/api/orders/{order_id}", headers=bearer(KEY_A))
            assert order["status"] == expected
        assert (await self.call(f"/api/orders/{theirs}", headers=bearer(KEY_B)))[1]["status"] == "pending"
        status, again = await self.call(f"/api/admin/keys/{self.key_id(KEY_A)}/cancel-all", "POST", headers=OP)
        assert (again["cancelled"], again["notCancelled"]) == ([], [{"orderId": building, "status": "building"}])
        status, answer = await self.call("/api/admin/keys/nosuchkey/cancel-all", "POST", headers=OP)
        assert (status, answer["error"]["code"]) == (404, "not_found")
        status, answer = await self.call(f"/api/admin/keys/{self.key_id(KEY_A)}/cancel-all", "POST",
                                         headers=bearer(KEY_A))
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        entries = await self.audit(4)
        assert sorted((e["action"], e["status"]) for e in entries if e["action"] == "keys.cancel_all") == \
            [("keys.cancel_all", 200)] * 2 + [("keys.cancel_all", 404)]  # a trading key's 403 is no operator's

    @gen_test
    async def test_cancel_all_cancels_a_scheduled_dca_parent_and_its_unstarted_child(self):
        parent = (await self.submit_as(KEY_A, tokenIn="USDC", tokenOut="SOL", amount="1", type="dca",
                                       intervalSeconds=3600, count=3))[1]["orderId"]
        self.advance(parent, ("scheduled", {"phase": "scheduled"}))
        (child,) = self.storage.orders.create_orders([OrderDraft(
            token_in="USDC", token_out="SOL", amount=Decimal(1), owner=self.key_id(KEY_A),
            parent_id=uuid.UUID(parent), slice_index=0)])
        status, answer = await self.call(f"/api/admin/keys/{self.key_id(KEY_A)}/cancel-all", "POST", headers=OP)
        assert status == 200 and parent in answer["cancelled"], answer
        for order_id in (parent, str(child.order.id)):
            assert (await self.call(f"/api/orders/{order_id}", headers=bearer(KEY_A)))[1]["status"] == "cancelled"

    @gen_test
    async def test_an_operator_reads_every_order_by_key_or_all_and_still_cannot_trade(self):
        mine = (await self.submit_as(KEY_A))[1]["orderId"]
        theirs = (await self.submit_as(KEY_B))[1]["orderId"]
        status, page = await self.call("/api/orders", headers=OP)
        assert status == 200 and {o["orderId"] for o in page["orders"]} == {mine, theirs}
        status, page = await self.call(f"/api/orders?keyId={self.key_id(KEY_B)}&status=pending", headers=OP)
        assert [o["orderId"] for o in page["orders"]] == [theirs]
        status, answer = await self.call("/api/orders?keyId=nobody", headers=OP)
        assert (status, answer["error"]["field"]) == (400, "keyId")
        status, order = await self.call(f"/api/orders/{mine}", headers=OP)
        assert status == 200 and order["orderId"] == mine
        status, answer = await self.call(f"/api/orders?keyId={self.key_id(KEY_B)}", headers=bearer(KEY_A))
        assert (status, answer["error"]["code"]) == (400, "unknown_field")  # trading keys: unchanged
        status, answer = await self.call(f"/api/orders/{mine}/cancel", "POST", "", headers=OP)
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        status, _, _ = await self.refused_handshake("/ws", OP)
        assert status == 403


class ManagedKeysOnPostgresAndRedisTest(_OnPostgresAndRedis, ManagedKeysTest):
    pass
