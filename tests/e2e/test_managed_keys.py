"""Managed trading keys on the production topology: two `engine web` processes and a worker on
Postgres and Redis. A key created on one web process works on the other at once, without a
restart; revoked on one, the other refuses it and closes its streams."""
from __future__ import annotations

import asyncio
import time

import pytest
from tornado.httpclient import HTTPClientError

from tests.e2e.cluster import assert_complete_lifecycle
from tests.e2e.test_access import KEY_A, SOL_USDC, bearer, frame, frames_until_close, socket_as

pytestmark = pytest.mark.e2e

OPERATOR = "operator-key-e2e-000000-0000000000000000"


def test_a_key_created_on_one_web_process_works_on_another_and_revoked_there_is_refused_and_its_stream_closed(
        make_cluster):
    cluster = make_cluster(webs=2, workers=1, VENUE_PROFILE="instant", API_KEYS=KEY_A, ADMIN_KEYS=OPERATOR)

    async def scenario():
        web_a, web_b = cluster.client(0), cluster.client(1)
        code, created = await web_a.request("POST", "/api/admin/keys", {"label": "e2e"}, bearer(OPERATOR))
        assert code == 201, created
        key, key_id = created["key"], created["keyId"]
        # Web B has never seen the key: it finds it in the database, no restart.
        code, order = await web_b.request("POST", "/api/orders/execute", SOL_USDC, bearer(key))
        assert code == 202, order
        events = await frames_until_close(await socket_as(web_b, key, f"/ws?orderId={order['orderId']}", token=True))
        assert_complete_lifecycle(events)
        stream = await socket_as(web_b, key, "/ws", token=True)
        code, page = await web_b.request("GET", "/api/orders", headers=bearer(key))
        assert [o["orderId"] for o in page["orders"]] == [order["orderId"]]

        code, revoked = await web_a.request("DELETE", f"/api/admin/keys/{key_id}", headers=bearer(OPERATOR))
        assert code == 200 and revoked["revokedAt"]
        closed_at = time.monotonic()
        assert await asyncio.wait_for(frames_until_close(stream), 10) == []
        assert (stream.close_code, stream.close_reason) == (1008, "key revoked")
        assert time.monotonic() - closed_at < 2.0  # at once on the bus's message (the sweep: within 2 s)
        code, answer = await web_b.request("GET", "/api/orders", headers=bearer(key))
        assert (code, answer["error"]["code"]) == (401, "unauthorized")
        with pytest.raises(HTTPClientError) as refused:
            await socket_as(web_b, key, "/ws", token=True)
        assert refused.value.code == 401
        code, answer = await web_a.request("POST", "/api/orders/execute", SOL_USDC, bearer(key))
        assert code == 401
        code, _ = await web_b.request("POST", "/api/orders/execute", SOL_USDC, bearer(KEY_A))
        assert code == 202  # the environment's key is untouched
        code, audit = await web_b.request("GET", "/api/admin/audit", headers=bearer(OPERATOR))
        assert [(e["action"], e["target"]) for e in audit["entries"]][:2] == [("keys.revoke", key_id),
                                                                               ("keys.create", key_id)]
        assert key not in str(audit)
        web_a.close()
        web_b.close()

    asyncio.run(scenario())
    assert "Traceback" not in cluster.logs()
