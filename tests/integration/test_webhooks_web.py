"""Webhooks over the real web layer (embedded storage): a refused callbackUrl stores nothing, an
order's deliveries are its owner's to read, each key signs with its own secret, and a managed
key's callbackUrl is the default of its orders."""
from __future__ import annotations

from tornado.testing import gen_test

from tests.integration.test_access import KEY_A, KEY_B, KeyedTestCase, bearer
from tests.integration.test_admin import OPERATOR

HOOK = "https://hooks.example.com/engine"
OP = bearer(OPERATOR)


class WebhooksTest(KeyedTestCase):
    env = {**KeyedTestCase.env, "ADMIN_KEYS": OPERATOR}

    async def create(self, **body):
        status, answer = await self.call("/api/admin/keys", "POST", body, headers=OP)
        assert status == 201, answer
        return answer

    @gen_test
    async def test_a_private_callback_url_is_refused_with_nothing_stored_and_an_order_reads_its_deliveries(self):
        for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://localhost/", "gopher://x/"):
            status, answer = await self.submit_as(KEY_A, callbackUrl=url)
            assert status == 400 and answer["error"]["code"] == "invalid_field", answer
            assert answer["error"]["field"] == "callbackUrl"
        assert self.order_count() == 0
        status, accepted = await self.submit_as(KEY_A, callbackUrl=HOOK)
        assert status == 202
        path = f"/api/orders/{accepted['orderId']}"
        assert (await self.call(path, headers=bearer(KEY_A)))[1]["callbackUrl"] == HOOK
        status, read = await self.call(path + "/deliveries", headers=bearer(KEY_A))
        assert status == 200 and [(d["seq"], d["status"], d["url"]) for d in read["deliveries"]] == [(1, "pending", HOOK)]
        status, other = await self.call(path + "/deliveries", headers=bearer(KEY_B))
        assert (status, other["error"]["code"]) == (404, "not_found")
        assert (await self.call(path + "/deliveries", headers=OP))[0] == 200  # operators read any order
        secret_a = (await self.call("/api/webhooks/secret", headers=bearer(KEY_A)))[1]["secret"]
        secret_b = (await self.call("/api/webhooks/secret", headers=bearer(KEY_B)))[1]["secret"]
        assert len(secret_a) == 64 and secret_a != secret_b
        status, plain = await self.submit_as(KEY_A)
        read = (await self.call(f"/api/orders/{plain['orderId']}/deliveries", headers=bearer(KEY_A)))[1]
        assert read["deliveries"] == []

    @gen_test
    async def test_a_managed_keys_callback_url_is_the_default_of_its_orders_and_a_private_one_is_refused(self):
        status, refused = await self.call("/api/admin/keys", "POST", {"callbackUrl": "http://10.0.0.1/"}, headers=OP)
        assert (status, refused["error"]["field"]) == (400, "callbackUrl")
        created = await self.create(callbackUrl=HOOK)
        assert created["callbackUrl"] == HOOK
        status, accepted = await self.submit_as(created["key"])
        order = (await self.call(f"/api/orders/{accepted['orderId']}", headers=bearer(created["key"])))[1]
        assert order["callbackUrl"] == HOOK
        status, own = await self.submit_as(created["key"], callbackUrl="https://other.example.com/")
        order = (await self.call(f"/api/orders/{own['orderId']}", headers=bearer(created["key"])))[1]
        assert order["callbackUrl"] == "https://other.example.com/"
