"""Over a thousand generated bad requests and frames against a running `engine run` with API keys:
never a 5xx, never an error frame but the spec's, nothing stored, and the process keeps serving.

Every request is bad by construction (a valid order with one defect, junk, a wrong key, a
wrong content type, a body over 64 KiB, a method or path that does not exist), so any 2xx
to a submit or a launch is a bug too. The HTTP requests share kept-alive connections: a
connection the server drops without saying `Connection: close` fails the test.

Each run draws fresh inputs from a seed of its own and prints it (in the test's captured
output: shown on failure, and with `-rA`), e.g. `generated from seed 1234: replay with ...`.
To replay a run, give that seed back, by environment variable or by Hypothesis's own option:

    GENERATED_REQUESTS_SEED=1234 pytest tests/e2e/test_generated_requests.py
    pytest tests/e2e/test_generated_requests.py --hypothesis-seed=1234

(the variable wins over the option). The same seed draws the same requests and frames, and
no example database is kept, so a replay does exactly what the failing run did.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import string
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from config import find_token
from tests.e2e.cluster import Client, assert_complete_lifecycle, fetch
from web.validation import ORDER_FIELDS

pytestmark = pytest.mark.e2e

KEY, OTHER_KEY = "fuzz-key-0123456789-0123456789abc", "fuzz-other-9876543210-9876543210ab"
VALID = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5"}
SEED_VARIABLE = "GENERATED_REQUESTS_SEED"
# How many: every kind of badness is a branch of a `sampled_from` (9 kinds of request, 6 kinds of
# bad body, 13 fields with bad values, 5 wrong keys, 7 content types), so a thousand requests send each
# branch dozens of times, and the test asserts that every refusal status (400, 401, 404, 405, 413,
# 415) came back: a run too short to reach one fails, it does not pass silently. Each run draws
# fresh inputs, so runs add up to far more than one run's count.
RUNS = settings(max_examples=1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
ERROR_CODES = {"invalid_json", "unsupported_media_type", "payload_too_large", "missing_field", "unknown_field",
               "invalid_field", "invalid_amount", "too_many_decimals", "amount_too_large", "unknown_token",
               "same_token", "unsupported_order_type", "unauthorized", "not_found", "method_not_allowed",
               "conflict", "rate_limited", "queue_full", "not_ready", "already_tradable", "invalid_launch_time",
               "insufficient_liquidity", "no_pool", "not_tradable", "no_route", "forbidden", "risk_limit", "trading_halted",
               "archived"}

# ---- values that no field accepts ------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=8)
not_a_token = st.one_of(
    st.text(max_size=60).filter(lambda s: find_token(s) is None),
    st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                        st.integers(), max_size=2))
not_an_amount = st.one_of(
    st.integers(max_value=0), st.integers(max_value=0).map(str),
    st.decimals(max_value=0, allow_nan=False, allow_infinity=False).map(str),
    st.integers(1, 10**6).map(lambda n: f"{n}.0000000001"),  # ten decimals: SOL has nine
    st.integers(2 * 10**10, 10**40).map(str), st.integers(30, 99999).map(lambda e: f"1e{e}"),
    st.text(alphabet=string.ascii_letters + "_ ,+", min_size=1, max_size=20),
    st.booleans(), st.lists(st.integers(1, 5), max_size=2), st.just({}))
not_a_slippage = st.one_of(st.integers(max_value=0), st.integers(min_value=5001), st.booleans(),
                           st.text(max_size=5), st.decimals(1, 5000, places=2).filter(lambda d: d != d.to_integral()))
not_a_type = st.one_of(st.text(max_size=12).filter(lambda s: s not in ("market",)), st.integers(), st.booleans())
not_a_client_id = st.one_of(st.just(""), st.text(alphabet=string.printable, min_size=65, max_size=90),
                            st.text(min_size=1, max_size=10).filter(lambda s: any(not " " <= c <= "~" for c in s)),
                            st.integers(), st.booleans(), st.lists(st.integers(), max_size=2))
BAD_VALUES = {"tokenIn": not_a_token, "tokenOut": st.one_of(not_a_token, st.just("sol"), st.just("SOL")),
              "amount": not_an_amount, "type": not_a_type, "slippageBps": not_a_slippage,
              "limitPrice": json_values.filter(lambda v: v is not None),  # on a market order: refused
              "expiresInSeconds": json_values.filter(lambda v: v is not None),
              "clientOrderId": not_a_client_id,
              # The protective orders' fields, each refused on a market order whatever its value:
              **{field: json_values.filter(lambda v: v is not None)
                 for field in ("stopPrice", "targetPrice", "trailPercent", "trailAmount", "takeProfit", "stopLoss")}}


@st.composite
def bad_order(draw) -> bytes:
    """A submit body that must be refused: a valid order with one defect, or junk."""
    kind = draw(st.sampled_from(["missing", "unknown", "value", "not_object", "junk", "null_required"]))
    body = dict(VALID)
    if kind == "missing":
        del body[draw(st.sampled_from(sorted(VALID)))]
    elif kind == "unknown":
        body[draw(st.text(max_size=20).filter(lambda k: k not in ORDER_FIELDS))] = draw(json_values)
    elif kind == "value":
        field = draw(st.sampled_from(sorted(BAD_VALUES)))
        body[field] = draw(BAD_VALUES[field])
    elif kind == "null_required":
        body[draw(st.sampled_from(sorted(VALID)))] = None
    elif kind == "not_object":
        return json.dumps(draw(st.one_of(json_scalars, st.lists(json_values, max_size=3)))).encode()
    else:
        return draw(st.one_of(st.binary(max_size=300), st.sampled_from(
            [b"", b"{", b'{"amount": NaN}', b'{"amount": Infinity}', b"[" * 5000, b'{"a":' * 3000,
             b'{"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1e999999}', "\ud800".encode("utf-8", "surrogatepass")])))
    return json.dumps(body, default=str).encode()


@st.composite
def bad_launch(draw) -> bytes:
    """A `/api/sim/launch` body that must be refused (it never launches POPCAT)."""
    body = {"token": draw(st.one_of(st.just("POPCAT"), not_a_token)),
            "inSeconds": draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=7 * 24 * 3600 + 1),
                                        st.booleans(), st.text(max_size=5), st.none()))}
    if draw(st.booleans()):
        del body[draw(st.sampled_from(["token", "inSeconds"]))]
    return json.dumps(body).encode()


auth_headers = st.sampled_from([{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                                {"Authorization": "Bearer"}, {"Authorization": f"Bearer {KEY}x"}])
GOOD_AUTH = {"Authorization": f"Bearer {KEY}"}
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "", "multipart/form-data; boundary=x",
                                 "APPLICATION/JSON"])
query_values = st.text(alphabet=string.printable, max_size=40)


@st.composite
def bad_request(draw):
    """(method, path, body, headers) of a request the engine must refuse, or a harmless read."""
    kind = draw(st.sampled_from(["submit", "submit", "submit", "valid_submit_refused", "launch", "read", "query",
                                 "method", "path"]))
    headers = dict(draw(auth_headers) if draw(st.integers(0, 7)) == 0 else GOOD_AUTH)  # mostly the right key
    content_type = draw(content_types) if draw(st.integers(0, 5)) == 0 else "application/json"
    if kind == "submit":
        body = draw(bad_order())
        if draw(st.integers(0, 20)) == 0:  # over 64 KiB, up to the 1 MiB the server drains
            body = body + b" " * draw(st.integers(64 * 1024, 300 * 1024))
        return "POST", "/api/orders/execute", body, {**headers, "Content-Type": content_type}
    if kind == "valid_submit_refused":  # a valid order, refused for its key or its content type
        bad_type = draw(content_types.filter(lambda t: not t.lower().startswith("application/json")))
        headers, content_type = draw(st.sampled_from([
            (draw(auth_headers), "application/json"), (GOOD_AUTH, bad_type)]))
        return "POST", "/api/orders/execute", json.dumps(VALID).encode(), {**headers, "Content-Type": content_type}
    if kind == "launch":
        return "POST", "/api/sim/launch", draw(bad_launch()), {**headers, "Content-Type": content_type}
    if kind == "read":
        segment = draw(st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=40)))
        path = draw(st.sampled_from(["/api/orders/{}", "/api/orders/{}/cancel", "/api/sim/swaps?orderId={}",
                                     "/api/orders/{}/pause", "/api/orders/{}/resume"]))
        method = "POST" if path.endswith(("cancel", "pause", "resume")) else "GET"
        return method, path.format(quote(segment, safe="")), b"" if method == "POST" else None, headers
    if kind == "query":
        path = draw(st.sampled_from(["/api/orders", "/api/quote", "/api/tokens", "/api/sim/pools", "/api/sim/swaps",
                                     "/metrics", "/healthz"]))
        names = st.sampled_from(["status", "type", "limit", "cursor", "tokenIn", "tokenOut", "amount",
                                 "slippageBps", "orderId", "token", "x"])
        params = draw(st.lists(st.tuples(names, query_values), max_size=4))
        return "GET", path + ("?" + urlencode(params) if params else ""), None, headers
    if kind == "method":
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "GET"]))
        path = draw(st.sampled_from(["/api/orders/execute", "/api/orders", "/api/tokens", "/api/sim/launch", "/ws",
                                     "/api/quote", "/healthz"]))
        body = draw(st.one_of(st.none(), st.binary(max_size=200)))
        return method, path, body, headers
    path = "/" + quote(draw(st.text(max_size=40)), safe="/?=&")
    return draw(st.sampled_from(["GET", "POST"])), path, b"", headers


# ---- the engine under test -------------------------------------------------------------------

@pytest.fixture
def run_seed(pytestconfig) -> int:
    """This run's seed: GENERATED_REQUESTS_SEED, else --hypothesis-seed, else a fresh one; printed."""
    given_seed = os.environ.get(SEED_VARIABLE) or pytestconfig.getoption("--hypothesis-seed", None)
    chosen = int(given_seed) if given_seed else random.SystemRandom().getrandbits(64)
    print(f"generated from seed {chosen}: replay with {SEED_VARIABLE}={chosen} (see the module docstring)")
    return chosen


class KeptAliveClient:
    """http.client on one kept-alive connection, opened again only when the server said
    `Connection: close`; a dropped connection is an error of the test's subject."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.closes = 0

    def send(self, method, path, body, headers):
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        if (response.getheader("Connection") or "").lower() == "close":
            self.closes += 1
            self.conn.close()
        else:
            assert not response.will_close, "the server meant to close without saying so"
        return response.status, response.getheader("Content-Type") or "", raw


@pytest.fixture
def engine(make_engine_run):
    proc, port = make_engine_run(API_KEYS=f"{KEY},{OTHER_KEY}", KEY_RATE_LIMIT=1_000_000, SUBSCRIBE_RATE_LIMIT=0)
    status, _, body = fetch(port, "POST", "/api/orders/execute", VALID, {"Authorization": f"Bearer {OTHER_KEY}"})
    assert status == 202  # another key's order, for the WebSocket commands to be refused
    return proc, port, json.loads(body)["orderId"]


def order_count(port: int) -> int:
    _, _, text = fetch(port, "GET", "/metrics")
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.decode().splitlines()
               if line.startswith("engine_orders{"))


def assert_still_serving_and_nothing_stored(proc, port: int, before: int) -> None:
    assert order_count(port) == before, "a bad request stored an order"
    for key in (KEY,):
        status, _, body = fetch(port, "GET", "/api/orders", headers={"Authorization": f"Bearer {key}"})
        assert status == 200 and json.loads(body)["orders"] == []

    async def one_order():
        client = Client(port)
        code, accepted = await client.request("POST", "/api/orders/execute", VALID, {"Authorization": f"Bearer {KEY}"})
        assert code == 202
        conn = await websocket_connect(HTTPRequest(client.ws_base + accepted["links"]["ws"],
                                                   headers={"Authorization": f"Bearer {KEY}"}))
        frames = []
        while (message := await asyncio.wait_for(conn.read_message(), 30)) is not None:
            frames.append(json.loads(message))
        assert_complete_lifecycle(frames)
        client.close()

    asyncio.run(one_order())
    log = proc.log_text()
    assert "Traceback" not in log and " ERROR " not in log and " CRITICAL " not in log, log[-3000:]


def test_a_thousand_generated_bad_http_requests_get_no_5xx_store_nothing_and_keep_the_connection(engine, run_seed):
    proc, port, _ = engine
    before = order_count(port)
    client = KeptAliveClient(port)
    seen: dict[int, int] = {}

    @seed(run_seed)
    @RUNS
    @given(request=bad_request())
    def refused(request):
        method, path, body, headers = request
        status, content_type, raw = client.send(method, path, body, headers)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (request, raw[:300])
        if path.startswith(("/api/orders/execute", "/api/sim/launch")) and method == "POST":
            assert status >= 400, (request, raw[:300])
        if status >= 400:
            assert content_type.startswith("application/json"), (request, raw[:300])
            assert json.loads(raw)["error"]["code"] in ERROR_CODES

    refused()
    print(f"answers by status: {dict(sorted(seen.items()))}")  # shown with -s
    assert sum(seen.values()) >= 1000
    assert {400, 401, 404, 405, 413, 415} <= set(seen), seen
    assert client.closes == 0  # every refusal left its connection usable
    assert_still_serving_and_nothing_stored(proc, port, before)


def test_generated_bad_websocket_frames_get_error_frames_store_nothing_and_the_engine_keeps_serving(engine, run_seed):
    proc, port, theirs = engine
    before = order_count(port)
    loop = asyncio.new_event_loop()
    base = f"ws://127.0.0.1:{port}"
    key = {"Authorization": f"Bearer {KEY}"}

    async def connect(path):
        return await websocket_connect(HTTPRequest(base + path, headers=key))

    commands = loop.run_until_complete(connect("/ws"))

    async def read(conn):
        """The next answer to a command (streamed quotes pushed meanwhile are passed over)."""
        while True:
            message = await asyncio.wait_for(conn.read_message(), 30)
            frame = None if message is None else json.loads(message)
            if frame is None or not ("subscriptionId" in frame and frame["type"] in ("quote", "error")):
                return frame

    command_frames = st.one_of(
        bad_order().map(lambda b: b.decode("utf-8", "replace")), st.binary(max_size=100),
        st.dictionaries(st.sampled_from(["subscribe", "unsubscribe", "sub", ""]), json_values, min_size=0, max_size=3)
        .map(json.dumps),
        st.sampled_from(["subscribe", "unsubscribe"]).flatmap(lambda action: st.one_of(
            st.uuids().map(str), st.text(max_size=40), st.just(theirs)).map(lambda v: json.dumps({action: v}))))

    @seed(run_seed)
    @settings(RUNS, max_examples=300)
    @given(frame=command_frames)
    def commands_refused(frame):
        async def exchange():
            await commands.write_message(frame, binary=isinstance(frame, bytes))
            answer = await read(commands)
            assert answer is not None, f"the connection was closed after {frame!r}"
            if answer.get("type") == "error":
                assert answer["error"]["code"] in ("invalid_json", "invalid_field", "not_found"), answer
            else:
                assert answer["type"] == "unsubscribed", answer  # of an order it does not follow
        loop.run_until_complete(exchange())

    quote_commands = st.fixed_dictionaries(
        {"action": st.one_of(st.sampled_from(["subscribeQuote", "unsubscribeQuote"]), json_values)},
        optional={"tokenIn": st.one_of(st.sampled_from(["SOL", "usdc", "POPCAT"]), json_values),
                  "tokenOut": st.one_of(st.sampled_from(["USDC", "SOL", "BONK"]), json_values),
                  "amount": st.one_of(st.sampled_from(["1.5", "0", "1e400", "0.0000000001"]), json_values),
                  "slippageBps": json_values, "subscriptionId": st.one_of(st.text(max_size=70), json_values),
                  "side": json_values}).map(json.dumps)

    @seed(run_seed)
    @settings(RUNS, max_examples=50)
    @given(frame=quote_commands)
    def quote_commands_answered(frame):
        async def exchange():
            await commands.write_message(frame)
            answer = await read(commands)
            assert answer is not None, f"the connection was closed after {frame!r}"
            if answer["type"] == "error":
                assert answer["error"]["code"] in ERROR_CODES, answer
            else:
                assert answer["type"] in ("quoteSubscribed", "quoteUnsubscribed"), answer
        loop.run_until_complete(exchange())

    @seed(run_seed)
    @settings(RUNS, max_examples=80)
    @given(body=bad_order())
    def submits_refused(body):
        async def exchange():
            conn = await connect("/api/orders/execute")
            await conn.write_message(body.decode("utf-8", "replace"))
            answer = await read(conn)
            assert answer["type"] == "error" and answer["error"]["code"] in ERROR_CODES, answer
            assert await read(conn) is None and conn.close_code == 1008
        loop.run_until_complete(exchange())

    @seed(run_seed)
    @settings(RUNS, max_examples=80)
    @given(params=st.lists(st.tuples(st.sampled_from(["orderId", "after", "token", "x"]), query_values),
                           min_size=1, max_size=3))
    def listener_queries_refused(params):
        async def exchange():
            try:
                conn = await connect("/ws?" + urlencode(params))
            except Exception as exc:  # a refused handshake: 401 for a bad token, never a 5xx
                assert getattr(exc, "code", 0) in (400, 401), exc
                return
            first = await read(conn) if any(name in ("orderId", "after", "x") for name, _ in params) else None
            if first is not None:
                assert first["type"] == "error" and first["error"]["code"] in ERROR_CODES, first
            conn.close()
        loop.run_until_complete(exchange())

    try:
        commands_refused()
        quote_commands_answered()
        submits_refused()
        listener_queries_refused()
        # The command connection is still open and still answers.
        async def still_open():
            await commands.write_message(json.dumps({"subscribe": theirs}))
            assert (await read(commands))["error"]["code"] == "not_found"
        loop.run_until_complete(still_open())
    finally:
        async def close():
            commands.close()
        loop.run_until_complete(close())
        loop.close()
    assert_still_serving_and_nothing_stored(proc, port, before)
