"""The engine's Python client and the command-line client, without an engine: how requests
are built and answers read, the error mapping, following a stream, kept-alive connections;
the CLI's settings, help texts and formatting."""
from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
from datetime import datetime, timezone

import pytest

from config import ConfigError
from config.client import load_client_settings
from engine import SERVER_COMMANDS, build_parser
from web.client import aio, keepalive
from web.client.aio import AsyncEngineClient, Stream
from web.client.api import (Answer, Call, EngineClient, EngineUnreachable, RequestRefused, UnexpectedAnswer,
                            build_call, order_stream_path, read_answer, refusal)
from web.client.cli import COMMANDS
from web.client.progress import WatchView
from web.client.render import Output, age, amount, describe_event, error_sentence, route_text, venue_of


def test_the_url_comes_from_the_flag_then_ENGINE_URL_then_localhost_and_PORT():
    assert load_client_settings({}, dotenv=None).url == "http://localhost:8000"
    assert load_client_settings({"PORT": "9001"}, dotenv=None).url == "http://localhost:9001"
    env = {"PORT": "9001", "ENGINE_URL": "https://engine.example:8443/"}
    assert load_client_settings(env, dotenv=None).url == "https://engine.example:8443"
    assert load_client_settings(env, dotenv=None, url="http://127.0.0.1:1").url == "http://127.0.0.1:1"
    assert load_client_settings({"ENGINE_API_KEY": " k1 "}, dotenv=None).api_key == "k1"
    assert load_client_settings({}, dotenv=None).api_key is None


def test_a_bad_url_or_port_is_a_message_naming_where_it_came_from():
    with pytest.raises(ConfigError, match="ENGINE_URL"):
        load_client_settings({"ENGINE_URL": "localhost:8000"}, dotenv=None)
    with pytest.raises(ConfigError, match="PORT"):
        load_client_settings({"PORT": "eighty"}, dotenv=None)


def _help(command: str | None) -> str:
    parser = build_parser()
    if command is None:
        return parser.format_help()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices[command].format_help()


def test_help_lists_the_environment_variables_each_command_reads():
    top = _help(None)
    for name in ("PORT", "DATABASE_URL", "REDIS_URL", "ENGINE_URL", "ENGINE_API_KEY", "API_KEYS"):
        assert name in top
    for command in COMMANDS:
        text = _help(command)
        assert "ENGINE_URL" in text and "ENGINE_API_KEY" in text and "PORT" in text and "--url" in text
        assert "exit codes" in text
    assert "PORT" in _help("run") and "PORT" in _help("web")  # looking for --port finds PORT
    assert "WORKER_CONCURRENCY" in _help("worker") and "PORT" not in _help("worker")
    assert "DATABASE_URL" in _help("migrate")
    assert set(SERVER_COMMANDS) == {"run", "web", "worker", "migrate"}


def test_amounts_are_shortened_exactly_and_ages_read_like_a_person_would():
    assert amount("225.933871123456") == "225.933871"
    assert amount("0.00001") == "0.00001"
    assert amount("18446744073709.551615") == "18446744073709"
    assert amount(None) == ""
    now = datetime(2026, 11, 25, 16, 0, 0, tzinfo=timezone.utc)
    assert age("2026-11-25T15:59:18.000Z", now) == "42 s"
    assert age("2026-11-25T15:57:00.000Z", now) == "3 min"
    assert age("2026-11-23T15:00:00.000Z", now) == "2 d"


ROUTING = {"orderId": "o", "seq": 5, "status": "routing", "attempt": 2, "timestamp": "2026-11-25T16:31:49.718Z",
           "meta": {"bestDex": "meteora", "retryReason": "transient: Blockhash not found",
                    "quotes": {"raydium": {"amountOut": "224.39"}, "meteora": {"amountOut": "225.95"}},
                    "route": {"legs": [], "amountOut": "225.95", "minAmountOut": "224.82"}}}


def test_events_are_described_with_quotes_choice_retry_reason_and_outcome():
    text = describe_event(ROUTING, "SOL", "USDC")
    assert text.startswith("retry 2: transient: Blockhash not found")
    assert "raydium 224.39, meteora 225.95 -> meteora (min 224.82 USDC)" in text
    failed = {"status": "failed", "attempt": 1, "meta": {"error": {"code": "slippage_exceeded", "message": "m"},
                                                          "attempts": 3}}
    assert describe_event(failed) == "slippage_exceeded: m (attempts: 3)"


HOPS = [{"tokenIn": "BONK", "tokenOut": "SOL", "legs": [{"dex": "raydium", "amountIn": "1000000", "amountOut": "0.13"}]},
        {"tokenIn": "SOL", "tokenOut": "JUP", "legs": [{"dex": "meteora", "amountIn": "0.1", "amountOut": "19"},
                                                       {"dex": "raydium", "amountIn": "0.03", "amountOut": "5.7"}]}]


def test_a_route_through_an_intermediate_token_is_described_hop_by_hop():
    routing = {"status": "routing", "attempt": 1, "meta": {
        "bestDex": "raydium", "hops": HOPS, "route": {"hops": HOPS, "amountOut": "24.7", "minAmountOut": "24.5"},
        "quotes": {"raydium": {"error": {"code": "no_pool"}}, "meteora": {"error": {"code": "no_pool"}}}}}
    assert describe_event(routing, "BONK", "JUP") == "BONK -raydium-> SOL -meteora+raydium-> JUP (min 24.5 JUP)"
    confirmed = {"status": "confirmed", "attempt": 1, "meta": {
        "amountIn": "1000000", "amountOut": "24.7", "executedPrice": "0.0000247", "txHash": "T", "hops": HOPS}}
    assert " on BONK -raydium-> SOL -meteora+raydium-> JUP at " in describe_event(confirmed, "BONK", "JUP")
    assert route_text({"legs": [{"dex": "meteora"}, {"dex": "raydium"}]}) == "meteora+raydium"
    assert venue_of({"route": {"hops": HOPS}}) == "raydium"


def test_api_errors_read_as_sentences_with_what_to_do():
    refused = RequestRefused(400, "same_token", "tokenIn and tokenOut are both SOL", "tokenOut")
    assert error_sentence(refused) == "tokenIn and tokenOut are both SOL [tokenOut] (same_token)"
    assert "ENGINE_API_KEY" in error_sentence(RequestRefused(401, "unauthorized", "a key is needed"))
    assert "retry in 7 s" in error_sentence(RequestRefused(429, "rate_limited", "slow down", retry_after="7"))
    assert RequestRefused(503, "queue_full", "busy").retryable and not refused.retryable


def test_the_progress_line_moves_through_the_statuses_on_a_terminal():
    stream = io.StringIO()
    out = Output("tty", stdout=stream)
    out.console.width = 200
    order = {"orderId": "4b0c1234-0000-0000-0000-000000000000", "tokenIn": "SOL", "tokenOut": "USDC"}
    with WatchView(out, order) as view:
        for status in ("pending", "routing"):
            view.event({**ROUTING, "status": status, "attempt": 1, "meta": ROUTING["meta"] if status == "routing"
                        else {}})
        assert "pending > routing" in view._line().plain and "meteora, min 224.82 USDC" in view._line().plain
        view.finish({"status": "confirmed", "meta": {"amountIn": "1.5", "amountOut": "225.95", "dex": "meteora",
                                                      "executedPrice": "150.63", "txHash": "sig"}})
    printed = stream.getvalue()
    assert "1.5 SOL -> 225.95 USDC on meteora at 150.63 USDC/SOL" in printed and "sig" in printed


# ---- the engine's client: requests ----------------------------------------------------------

def test_a_request_has_a_json_body_the_key_as_bearer_and_the_callers_headers_last():
    call = build_call("POST", "/api/orders/execute", {"amount": "1.5"}, api_key="k1")
    assert call == Call("POST", "/api/orders/execute", b'{"amount": "1.5"}',
                        {"Accept": "application/json", "Authorization": "Bearer k1",
                         "Content-Type": "application/json"})
    assert build_call("GET", "/api/tokens").headers == {"Accept": "application/json"}
    assert build_call("GET", "/api/tokens").body is None
    bare_post = build_call("POST", "/api/orders/x/cancel")  # a POST always has a (JSON) body
    assert (bare_post.body, bare_post.headers["Content-Type"]) == (b"", "application/json")
    raw = build_call("POST", "/p", b"{nope", {"content-type": "text/plain", "Authorization": "Bearer other"},
                     api_key="k1")
    assert raw.body == b"{nope"
    assert raw.headers == {"Accept": "application/json", "content-type": "text/plain", "Authorization": "Bearer other"}


class Recorder(EngineClient):
    """The blocking client with its transport replaced: records each call, answers `answer`."""

    def __init__(self, answer: Answer = Answer(200, {"ok": True}, b'{"ok": true}'), **options):
        super().__init__("http://engine.test", **options)
        self.calls: list[tuple] = []
        self.answer = answer

    def request(self, method, path, body=None, headers=None):
        self.calls.append((method, path, body))
        return self.answer


def test_each_endpoint_is_one_call_on_the_apis_path_with_its_query():
    client = Recorder()
    client.submit({"tokenIn": "SOL"}, amount="1")
    client.submit(tokenIn="SOL", amount="1")
    client.order("a/b c")
    client.orders(status="confirmed", type=None, limit=5, cursor=None)
    client.orders()
    client.cancel("o1")
    client.quote("SOL", "USDC", "1.5")
    client.quote("SOL", "USDC", "1.5", slippage_bps=100)
    client.tokens()
    client.swaps("o1")
    client.pools()
    client.launch("POPCAT", 2)
    assert client.calls == [
        ("POST", "/api/orders/execute", {"tokenIn": "SOL", "amount": "1"}),
        ("POST", "/api/orders/execute", {"tokenIn": "SOL", "amount": "1"}),
        ("GET", "/api/orders/a%2Fb%20c", None),
        ("GET", "/api/orders?status=confirmed&limit=5", None),
        ("GET", "/api/orders", None),
        ("POST", "/api/orders/o1/cancel", None),
        ("GET", "/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1.5", None),
        ("GET", "/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1.5&slippageBps=100", None),
        ("GET", "/api/tokens", None),
        ("GET", "/api/sim/swaps?orderId=o1", None),
        ("GET", "/api/sim/pools", None),
        ("POST", "/api/sim/launch", {"token": "POPCAT", "inSeconds": 2}),
    ]
    assert order_stream_path("o1") == "/ws?orderId=o1"
    assert order_stream_path("o1", after=3) == "/ws?orderId=o1&after=3"


# ---- the engine's client: answers and errors ------------------------------------------------

ERROR = {"error": {"code": "invalid_amount", "message": "amount must be greater than 0", "field": "amount"}}


def test_an_answer_reads_as_status_and_body_and_keeps_the_raw_bytes_and_headers():
    answer = read_answer(400, json.dumps(ERROR).encode(), {"content-TYPE": "application/json"})
    status, body = answer
    assert (status, body) == (400, ERROR) and (answer[0], answer[1]) == (400, ERROR) and len(answer) == 2
    assert answer.header("Content-Type") == "application/json" and answer.header("Retry-After") is None
    assert read_answer(502, b"<html>bad gateway</html>").body is None
    assert read_answer(204, b"").body is None


def test_an_error_answer_raises_request_refused_with_code_message_field_and_retry_after():
    with pytest.raises(RequestRefused) as refused:
        Recorder(read_answer(400, json.dumps(ERROR).encode())).submit(amount="0")
    error = refused.value
    assert (error.status, error.code, error.message, error.field) == (400, "invalid_amount",
                                                                      "amount must be greater than 0", "amount")
    assert error.body == ERROR and not error.retryable
    limited = read_answer(429, b'{"error": {"code": "rate_limited", "message": "slow down"}}', {"Retry-After": "7"})
    with pytest.raises(RequestRefused) as refused:
        Recorder(limited).tokens()
    assert (refused.value.code, refused.value.retry_after, refused.value.retryable) == ("rate_limited", "7", True)


def test_an_answer_that_is_not_the_apis_shape_still_reads_well():
    gateway = refusal(502, None, b"<html>Bad Gateway</html>")
    assert (gateway.status, gateway.code, gateway.message, gateway.retryable) == (
        502, "http_502", "<html>Bad Gateway</html>", True)
    assert refusal(503, None).message == "HTTP 503"
    with pytest.raises(UnexpectedAnswer):
        Recorder(read_answer(200, b"not json")).tokens()
    assert Recorder(read_answer(200, b"")).tokens() is None


def test_with_raise_error_off_every_typed_method_gives_its_answer():
    refused = read_answer(404, b'{"error": {"code": "not_found", "message": "no such order"}}')
    client = Recorder(refused, raise_error=False)
    code, body = client.order("nope")
    assert (code, body["error"]["code"]) == (404, "not_found")
    assert client.submit(tokenIn="SOL") is refused


class FakeConnection:
    """http.client.HTTPConnection's part the blocking client uses, recording what it was sent."""

    sent: list = []

    def __init__(self, netloc, timeout):
        self.netloc, self.timeout = netloc, timeout

    def request(self, method, path, body=None, headers=None):
        FakeConnection.sent.append((self.netloc, method, path, body, headers))

    def getresponse(self):
        response = http.client.HTTPResponse.__new__(http.client.HTTPResponse)
        response.status = 202
        response.getheaders = lambda: [("Content-Type", "application/json")]
        response.read = lambda: b'{"orderId": "o1"}'
        return response

    def close(self):
        pass


def test_the_blocking_client_sends_the_built_request_and_reads_the_answer(monkeypatch):
    monkeypatch.setattr(http.client, "HTTPConnection", FakeConnection)
    FakeConnection.sent = []
    client = EngineClient("http://engine.test:8000/", api_key="k1", timeout=5)
    assert client.submit(tokenIn="SOL") == {"orderId": "o1"}
    call = build_call("POST", "/api/orders/execute", {"tokenIn": "SOL"}, api_key="k1")
    assert FakeConnection.sent == [("engine.test:8000", *call)]


def test_no_engine_listening_is_engine_unreachable_not_an_os_error():
    with socket.socket() as bound:  # bound, never listening: a connection to it is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with pytest.raises(EngineUnreachable, match=f"cannot reach the engine at {url}"):
            EngineClient(url, timeout=2).tokens()

        async def both():
            async with AsyncEngineClient(url, timeout=2) as client:
                with pytest.raises(EngineUnreachable):
                    await client.tokens()
                with pytest.raises(EngineUnreachable):
                    await client.events("o1")

        asyncio.run(both())


# ---- the asyncio client: following an order's stream ----------------------------------------

class FakeSocket:
    """A tornado WebSocket client connection that hands out `messages`, then closes."""

    def __init__(self, messages: list, close_code: int = 1000):
        self.messages = list(messages)
        self.close_code, self.close_reason = None, None
        self._final_code = close_code
        self.closed = False

    async def read_message(self):
        if self.messages:
            return self.messages.pop(0)
        self.close_code = self._final_code
        return None

    def close(self):
        self.closed = True


def event(seq: int, status: str) -> str:
    return json.dumps({"orderId": "o1", "seq": seq, "status": status})


class StreamsDouble(AsyncEngineClient):
    """The asyncio client with each `events()` connection scripted: a list of messages, or an
    exception to raise. Records the `after` of each connection."""

    def __init__(self, connections: list):
        super().__init__("http://engine.test")
        self.connections = list(connections)
        self.afters: list[int] = []

    async def events(self, order_id, after=0):
        self.afters.append(after)
        script = self.connections.pop(0)
        if isinstance(script, Exception):
            raise script
        return Stream(FakeSocket(script, close_code=1001))


def follow_all(client: AsyncEngineClient, after: int = 0) -> list[dict]:
    async def run():
        return [frame async for frame in client.follow("o1", after)]

    return asyncio.run(run())


def test_follow_resumes_a_dropped_stream_after_the_last_event_and_yields_each_event_once(monkeypatch):
    monkeypatch.setattr(aio, "BACKOFF_S", (0,))
    client = StreamsDouble([
        [event(1, "pending"), event(2, "routing")],                      # a web process restarts (1001)
        EngineUnreachable("refused"),                                    # still down
        [event(2, "routing"), event(3, "building"), event(4, "submitted"), event(5, "confirmed")],
    ])
    frames = follow_all(client)
    assert [(f["seq"], f["status"]) for f in frames] == [(1, "pending"), (2, "routing"), (3, "building"),
                                                         (4, "submitted"), (5, "confirmed")]
    assert client.afters == [0, 2, 2]
    assert follow_all(StreamsDouble([[event(4, "submitted"), event(5, "failed")]]), after=3)[-1]["status"] == "failed"


def test_follow_raises_for_an_error_frame_or_a_refused_key_and_gives_up_after_reconnects_in_a_row(monkeypatch):
    monkeypatch.setattr(aio, "BACKOFF_S", (0,))
    missing = json.dumps({"type": "error", "error": {"code": "not_found", "message": "no such order"}})
    with pytest.raises(RequestRefused) as refused:
        follow_all(StreamsDouble([[missing]]))
    assert (refused.value.status, refused.value.code) == (404, "not_found")
    unauthorized = RequestRefused(401, "unauthorized", "a key is needed")
    client = StreamsDouble([unauthorized, [event(1, "confirmed")]])
    with pytest.raises(RequestRefused, match="a key is needed"):
        follow_all(client)
    assert client.afters == [0]  # not retried
    busy = RequestRefused(503, "not_ready", "starting")
    client = StreamsDouble([busy, [event(1, "pending")]] + [[]] * aio.RECONNECTS)
    with pytest.raises(EngineUnreachable, match="lost the event stream of order o1"):
        follow_all(client)
    assert client.afters == [0, 0] + [1] * aio.RECONNECTS  # an event in between starts the count again


def test_a_stream_yields_parsed_frames_until_the_server_closes_it():
    async def run():
        socket = FakeSocket([event(1, "pending"), "not json"], close_code=1000)
        stream = Stream(socket)
        assert (await stream.receive())["seq"] == 1
        with pytest.raises(UnexpectedAnswer):
            await stream.receive()
        assert await stream.receive() is None and stream.close_code == 1000
        async with stream:
            pass
        assert socket.closed

    asyncio.run(run())


# ---- the asyncio client: kept-alive connections ---------------------------------------------

class FakeServer:
    """asyncio.open_connection for the keep-alive pool: each connection answers the scripted
    responses in turn (None: the server had closed it); records connections and requests."""

    def __init__(self, *connections: list):
        self.scripts = list(connections)
        self.opened = 0
        self.requests: list[bytes] = []

    async def open_connection(self, host, port, ssl=None):
        self.opened += 1
        script = list(self.scripts.pop(0))
        reader = asyncio.StreamReader()
        server = self

        class Writer:
            def write(self, data):
                server.requests.append(data)
                answer = script.pop(0)
                if answer is None:
                    reader.feed_eof()
                else:
                    reader.feed_data(answer)

            def close(self):
                pass

        return reader, Writer()


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def test_kept_alive_connections_are_reused_and_reopened_once_when_the_server_closed_one(monkeypatch):
    server = FakeServer([ok(b'{"n": 1}'), ok(b'{"n": 2}'), None], [ok(b'{"n": 3}', "Connection: close")],
                        [ok(b'{"n": 4}')])
    monkeypatch.setattr(keepalive.asyncio, "open_connection", server.open_connection)

    async def run():
        async with AsyncEngineClient("http://127.0.0.1:8000", api_key="k1", connections=1,
                                     raise_error=False) as client:
            return [await client.tokens() for _ in range(4)]

    answers = asyncio.run(run())
    assert [body for _, body in answers] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert all(0 < a.sent_at <= a.answered_at for a in answers)  # the benchmark's submit times
    assert server.opened == 3  # the first connection for two, its idle close, then `Connection: close`
    assert server.requests[0] == (b"GET /api/tokens HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                                  b"Accept: application/json\r\nAuthorization: Bearer k1\r\n"
                                  b"Content-Length: 0\r\n\r\n")
    assert server.requests[2] == server.requests[3]  # the request lost to the idle close, sent again


def test_a_kept_alive_answer_without_content_length_is_unexpected(monkeypatch):
    server = FakeServer([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"])
    monkeypatch.setattr(keepalive.asyncio, "open_connection", server.open_connection)

    async def run():
        async with AsyncEngineClient("http://127.0.0.1:8000", connections=1) as client:
            await client.tokens()

    with pytest.raises(UnexpectedAnswer, match="without Content-Length"):
        asyncio.run(run())


def test_submit_sends_each_protective_kind_with_the_fields_of_its_type():
    import argparse

    from web.client.cli import _submit, add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))

    class Client:
        def submit(self, body):
            self.body = body
            return {"orderId": "o1", "status": "pending"}

    class Out:
        mode = "plain"

        def line(self, text):
            pass

    def sent(*argv):
        client = Client()
        assert _submit(client, parser.parse_args(["submit", "SOL", "USDC", "1", *argv]), Out()) == 0
        return {k: v for k, v in client.body.items() if k not in ("tokenIn", "tokenOut", "amount")}

    assert sent("--type", "oco", "--target-price", "180", "--stop-price", "120", "--limit-price", "115") == {
        "type": "oco", "takeProfit": {"targetPrice": "180"}, "stopLoss": {"stopPrice": "120", "limitPrice": "115"}}
    assert sent("--type", "trailing_stop", "--trail-percent", "5") == {"type": "trailing_stop", "trailPercent": "5"}
    assert sent("--type", "trailing_stop", "--trail-amount", "7.5") == {"type": "trailing_stop", "trailAmount": "7.5"}
    assert sent("--type", "stop_loss", "--stop-price", "120", "--limit-price", "115") == {
        "type": "stop_loss", "stopPrice": "120", "limitPrice": "115"}
    assert sent("--type", "take_profit", "--target-price", "180") == {"type": "take_profit", "targetPrice": "180"}


def test_a_protective_order_s_waiting_events_say_what_it_trails_and_which_side_fired():
    trail = {"status": "waiting", "attempt": 1, "meta": {"trigger": "trail", "trailPercent": "5",
                                                        "highWater": "160", "stopPrice": "152"}}
    assert describe_event(trail, "SOL", "USDC") == "trailing 160 USDC: sells at 152 (5% below)"
    by_amount = {**trail, "meta": {"trigger": "trail", "trailAmount": "8", "highWater": "160", "stopPrice": "152"}}
    assert describe_event(by_amount, "SOL", "USDC") == "trailing 160 USDC: sells at 152 (8 USDC below)"
    fired = {"status": "waiting", "attempt": 1, "meta": {"trigger": "oco", "fired": "stopLoss",
                                                        "cancelled": "takeProfit", "price": "120"}}
    assert describe_event(fired, "SOL", "USDC") == "its stopLoss fired at 120 USDC; its takeProfit is cancelled"
