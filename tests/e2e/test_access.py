"""API keys on the production topology: two `engine web` processes and a worker on Postgres and
Redis. What one web process learns from the bus (each event's owner) and what they share in
Redis (each key's submission window) holds across processes."""
from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.e2e.cluster import Client, assert_complete_lifecycle

pytestmark = pytest.mark.e2e

KEY_A, KEY_B, KEY_C = ("alpha-key-000000-0000000000000000", "bravo-key-111111-1111111111111111",
                       "charlie-key-2222-2222222222222222")
SOL_USDC = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.25"}
WAIT_S = 30.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def socket_as(client: Client, key: str, path: str, token: bool = False):
    """A WebSocket to `path`, authenticated by header or by `?token=`."""
    if token:
        return await websocket_connect(client.ws_base + path + ("&" if "?" in path else "?") + f"token={key}")
    return await websocket_connect(HTTPRequest(client.ws_base + path, headers=bearer(key)))


async def frame(conn):
    message = await asyncio.wait_for(conn.read_message(), WAIT_S)
    return None if message is None else json.loads(message)


async def frames_until_close(conn):
    frames = []
    while (message := await frame(conn)) is not None:
        frames.append(message)
    return frames


def test_across_two_web_processes_each_key_sees_only_its_orders_and_is_refused_the_others(make_cluster):
    cluster = make_cluster(webs=2, workers=1, VENUE_PROFILE="instant", API_KEYS=f"{KEY_A},{KEY_B}")

    async def scenario():
        web0, web1 = cluster.client(0), cluster.client(1)
        stream_a = await socket_as(web1, KEY_A, "/ws", token=True)  # a browser's firehose
        stream_b = await socket_as(web1, KEY_B, "/ws")
        code, mine = await web0.request("POST", "/api/orders/execute", SOL_USDC, bearer(KEY_A))
        assert code == 202
        code, theirs = await web0.request("POST", "/api/orders/execute", SOL_USDC, bearer(KEY_B))
        assert code == 202
        seen = {KEY_A: [], KEY_B: []}
        for key, stream in ((KEY_A, stream_a), (KEY_B, stream_b)):
            while not seen[key] or seen[key][-1]["status"] != "confirmed":
                seen[key].append(await frame(stream))
        assert {e["orderId"] for e in seen[KEY_A]} == {mine["orderId"]}
        assert {e["orderId"] for e in seen[KEY_B]} == {theirs["orderId"]}
        assert_complete_lifecycle(seen[KEY_A])
        assert_complete_lifecycle(seen[KEY_B])

        # Key B, on the other web process, for A's order: not found everywhere.
        order = mine["orderId"]
        for method, path in [("GET", f"/api/orders/{order}"), ("GET", f"/api/sim/swaps?orderId={order}"),
                             ("POST", f"/api/orders/{order}/cancel")]:
            code, answer = await web1.request(method, path, headers=bearer(KEY_B))
            assert (code, answer["error"]["code"]) == (404, "not_found"), path
        code, page = await web1.request("GET", "/api/orders", headers=bearer(KEY_B))
        assert [o["orderId"] for o in page["orders"]] == [theirs["orderId"]]
        code, page = await web1.request("GET", "/api/orders", headers=bearer(KEY_A))
        assert [o["orderId"] for o in page["orders"]] == [order]
        for token in (False, True):
            single = await socket_as(web1, KEY_B, f"/ws?orderId={order}", token=token)
            assert [f["error"]["code"] for f in await frames_until_close(single)] == ["not_found"]
            assert single.close_code == 1008
        await stream_b.write_message(json.dumps({"subscribe": order}))
        assert (await frame(stream_b))["error"]["code"] == "not_found"
        await stream_b.write_message(json.dumps({"subscribe": theirs["orderId"]}))  # still open
        assert (await frame(stream_b)) == {"type": "subscribed", "orderId": theirs["orderId"]}
        # Without a key, or with a wrong one, nothing at all.
        code, answer = await web0.request("GET", f"/api/orders/{order}")
        assert (code, answer["error"]["code"]) == (401, "unauthorized")
        with pytest.raises(HTTPClientError) as refused:
            await socket_as(web0, "wrong", f"/ws?orderId={order}", token=True)
        assert refused.value.code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"
        for conn in (stream_a, stream_b):
            conn.close()
        web0.close()
        web1.close()

    asyncio.run(scenario())


def test_across_two_web_processes_the_key_rate_limit_and_client_order_ids_hold_per_key(make_cluster):
    cluster = make_cluster(webs=2, workers=1, VENUE_PROFILE="instant", KEY_RATE_LIMIT=20,
                           API_KEYS=f"{KEY_A},{KEY_B},{KEY_C}")

    async def scenario():
        webs = [cluster.client(0), cluster.client(1)]
        # Ten identical submits racing on two processes: one order, one 202.
        race = {**SOL_USDC, "clientOrderId": "race-1"}
        answers = await asyncio.gather(*(webs[n % 2].request("POST", "/api/orders/execute", race, bearer(KEY_A))
                                         for n in range(10)))
        assert sorted(code for code, _ in answers) == [200] * 9 + [202]
        assert len({answer["orderId"] for _, answer in answers}) == 1
        code, other = await webs[1].request("POST", "/api/orders/execute", race, bearer(KEY_B))
        assert code == 202 and other["orderId"] != answers[0][1]["orderId"]  # B's own order

        # C spends its 20 submissions on junk, half on each process: junk counts too.
        codes = await asyncio.gather(*(webs[n % 2].request("POST", "/api/orders/execute", b"{nope",
                                                           bearer(KEY_C)) for n in range(20)))
        assert [code for code, _ in codes] == [400] * 20
        for web in webs:
            response = await web.http.fetch(HTTPRequest(
                web.base + "/api/orders/execute", method="POST", body=json.dumps(SOL_USDC),
                headers={**bearer(KEY_C), "Content-Type": "application/json"}), raise_error=False)
            assert response.code == 429 and json.loads(response.body)["error"]["code"] == "rate_limited"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
        with pytest.raises(HTTPClientError) as refused:  # a WebSocket submit is a submission too
            await socket_as(webs[0], KEY_C, "/api/orders/execute", token=True)
        assert refused.value.code == 429
        code, _ = await webs[0].request("GET", "/api/orders", headers=bearer(KEY_C))
        assert code == 200  # reading is not submitting
        code, _ = await webs[1].request("POST", "/api/orders/execute", SOL_USDC, bearer(KEY_B))
        assert code == 202  # B's window is its own
        for web in webs:
            web.close()

    asyncio.run(scenario())
