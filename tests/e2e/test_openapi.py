"""The OpenAPI document at `/api/openapi.json` stays true: real answers of `engine run`, errors
included, are checked against it with openapi-core, and it covers every path and code of the spec."""
from __future__ import annotations

import json

import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from tests.e2e.cluster import fetch, wait_terminal

pytestmark = pytest.mark.e2e

# Every path of shared/spec/API.md, with its methods (WebSocket upgrades are GETs).
SPEC_OPERATIONS = {
    ("/api/orders/execute", "post"), ("/api/orders/execute", "get"), ("/api/orders", "get"),
    ("/api/orders/{orderId}", "get"), ("/api/orders/{orderId}/cancel", "post"), ("/api/quote", "get"),
    ("/api/tokens", "get"), ("/ws", "get"), ("/api/sim/swaps", "get"), ("/api/sim/pools", "get"),
    ("/api/sim/launch", "post"), ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"),
}
SPEC_ERROR_CODES = {
    "invalid_json", "unsupported_media_type", "payload_too_large", "missing_field", "unknown_field",
    "invalid_field", "invalid_amount", "too_many_decimals", "amount_too_large", "unknown_token", "same_token",
    "unsupported_order_type", "unauthorized", "not_found", "method_not_allowed", "conflict", "rate_limited",
    "queue_full", "not_ready", "risk_limit", "trading_halted", "overloaded", "archived",
}
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
SOL_USDC = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.5"}
KEY_ONE, KEY_TWO = "openapi-key-one-0123456789abcdefgh", "openapi-key-two-0123456789abcdefgh"
OPERATOR = "openapi-operator-0123456789abcdefgh"


# openapi-core validates a document in full (1.6 s of CPU) before it checks an answer against it:
# a document served again byte for byte by another engine of this module reuses the first one's.
_APIS: dict[bytes, OpenAPI] = {}


class Checker:
    """Sends real requests to the engine and validates each answer against the document."""

    def __init__(self, port: int):
        self.port = port
        status, _, body = fetch(port, "GET", "/api/openapi.json")
        assert status == 200
        self.document = json.loads(body)
        if body not in _APIS:
            _APIS[body] = OpenAPI.from_dict(self.document)
        self.api = _APIS[body]
        self.seen: set[tuple[str, str, int]] = set()  # (path template, method, status)

    def check(self, method: str, path: str, status: int, body=None, headers=None, code: str | None = None):
        """Send it, expect `status` (and error `code`), validate the answer; return the parsed body."""
        got, response_headers, raw = fetch(self.port, method, path, body, headers)
        assert got == status, f"{method} {path}: {got} {raw[:300]!r}"
        content_type = response_headers.get("Content-Type", "")
        plain_path, _, query = path.partition("?")
        args = {}
        for pair in filter(None, query.split("&")):
            name, _, value = pair.partition("=")
            args[name] = value
        request = MockRequest(f"http://127.0.0.1:{self.port}", method, plain_path, args=args,
                              headers=headers or {}, data=body if isinstance(body, bytes) else None)
        response = MockResponse(raw, status_code=got, headers=response_headers,
                                content_type=content_type.split(";")[0].strip())
        # Validates the answer as validate_response does (path, method, status, body, headers) and
        # keeps its errors instead of raising the first: one pass over the schema, not two.
        operation = self.api.unmarshal_response(request, response)
        if operation.errors:
            raise AssertionError(f"{method} {path}: {operation.errors}") from operation.errors[0]
        template = self._template(method, plain_path)
        self.seen.add((template, method.lower(), got))
        parsed = json.loads(raw) if content_type.startswith("application/json") and raw else raw
        if code is not None:
            assert parsed["error"]["code"] == code, parsed
        return parsed

    def _template(self, method: str, path: str) -> str:
        for template in self.document["paths"]:
            parts, actual = template.split("/"), path.split("/")
            if len(parts) == len(actual) and all(p == a or p.startswith("{") for p, a in zip(parts, actual)):
                return template
        raise AssertionError(f"{method} {path} is not in the document")

    def check_error_shape(self, method: str, path: str, status: int, headers=None) -> dict:
        """Paths or methods the document does not list still answer the Error schema."""
        got, response_headers, raw = fetch(self.port, method, path, headers=headers)
        assert got == status, raw
        schema = {"$ref": "#/components/schemas/Error", "components": self.document["components"]}
        OAS31Validator(schema).validate(json.loads(raw))
        return response_headers


@pytest.fixture
def checker(make_engine_run):
    _, port = make_engine_run()
    return Checker(port)


def test_the_document_is_openapi_3_1_and_covers_every_path_and_error_code_of_the_spec(checker):
    document = checker.document
    validate_spec(document)
    assert document["openapi"].startswith("3.1")
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert SPEC_OPERATIONS <= operations
    codes = set(document["components"]["schemas"]["ErrorCode"]["enum"])
    assert SPEC_ERROR_CODES <= codes
    submit = document["paths"]["/api/orders/execute"]["post"]
    assert {"400", "401", "409", "413", "415", "429", "503"} <= set(submit["responses"])
    assert "Retry-After" in submit["responses"]["429"]["headers"]
    kinds = document["components"]["schemas"]["SubmitRequest"]["anyOf"]  # by token sold and order type
    assert all({"limitPrice", "expiresInSeconds", "type"} <= set(kind["properties"]) for kind in kinds)
    for path in ("/api/orders/execute", "/ws"):  # the WebSockets: described in words, and their handshake
        operation = document["paths"][path]["get"]
        assert "WebSocket" in operation["description"]
        assert {"Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"} <= {
            p["name"] for p in operation["parameters"] if p["in"] == "header" and p["required"]}
        assert "101" in operation["responses"] and "405" in operation["responses"]
    for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/"):
        assert document["paths"][path]["get"]["security"] == []


def test_real_answers_of_every_endpoint_match_the_document_errors_included(start_engine):
    c = Checker(start_engine())
    # Submit: created, repeated, conflicting, and each kind of invalid body.
    accepted = c.check("POST", "/api/orders/execute", 202, {**SOL_USDC, "clientOrderId": "oa-1"})
    c.check("POST", "/api/orders/execute", 200, {**SOL_USDC, "amount": 0.50, "clientOrderId": "oa-1"})
    c.check("POST", "/api/orders/execute", 409, {**SOL_USDC, "amount": "2", "clientOrderId": "oa-1"},
            code="conflict")
    for body, code in [
        ({"tokenIn": "SOL", "tokenOut": "USDC"}, "missing_field"),
        ({**SOL_USDC, "slipageBps": 10}, "unknown_field"),
        ({**SOL_USDC, "slippageBps": 0}, "invalid_field"),
        ({**SOL_USDC, "amount": "0"}, "invalid_amount"),
        ({**SOL_USDC, "amount": "0.0000000001"}, "too_many_decimals"),
        ({**SOL_USDC, "amount": "1e30"}, "amount_too_large"),
        ({**SOL_USDC, "tokenOut": "DOGE"}, "unknown_token"),
        ({**SOL_USDC, "tokenOut": "sol"}, "same_token"),
        ({**SOL_USDC, "type": "limit"}, "missing_field"),
        ({**SOL_USDC, "tokenOut": "POPCAT"}, "invalid_field"),
    ]:
        c.check("POST", "/api/orders/execute", 400, body, code=code)
    c.check("POST", "/api/orders/execute", 400, b"{not json", {"Content-Type": "application/json"},
            code="invalid_json")
    c.check("POST", "/api/orders/execute", 415, b"{}", {"Content-Type": "text/plain"},
            code="unsupported_media_type")
    c.check("POST", "/api/orders/execute", 413, b"{" + b" " * 70_000 + b"}",
            {"Content-Type": "application/json"}, code="payload_too_large")
    c.check("GET", "/api/orders/execute", 405, code="method_not_allowed")
    c.check("GET", "/api/orders/execute", 101, headers=UPGRADE)
    failed = c.check("POST", "/api/orders/execute", 202, {"tokenIn": "BONK", "tokenOut": "USDC",
                                                            "amount": "0.00001"})
    routed = c.check("POST", "/api/orders/execute", 202, {"tokenIn": "BONK", "tokenOut": "JUP", "amount": "1000000"})

    # Read and list: a confirmed order (route, fills, events) and a failed one (error, no route).
    order_id = accepted["orderId"]
    wait_terminal(c.port, order_id)
    assert wait_terminal(c.port, failed["orderId"])["status"] == "failed"
    order = c.check("GET", f"/api/orders/{order_id}", 200)
    assert order["status"] == "confirmed" and order["events"][-1]["meta"]["executedPrice"]
    c.check("GET", f"/api/orders/{failed['orderId']}", 200)
    wait_terminal(c.port, routed["orderId"])
    through = c.check("GET", f"/api/orders/{routed['orderId']}", 200)  # a route through a hub: its hops
    assert through["status"] == "confirmed" and through["route"]["hops"] and through["fills"][0]["hops"]
    c.check("GET", "/api/orders/00000000-0000-0000-0000-000000000000", 404, code="not_found")
    c.check("GET", "/api/orders/not-an-id", 404, code="not_found")
    listing = c.check("GET", "/api/orders?limit=1", 200)
    c.check("GET", f"/api/orders?cursor={listing['nextCursor']}&status=confirmed&type=market", 200)
    c.check("GET", "/api/orders?limit=0", 400, code="invalid_field")
    c.check("GET", "/api/orders?status=done", 400, code="invalid_field")
    c.check("GET", "/api/orders?cursor=nonsense", 400, code="invalid_field")
    c.check("GET", "/api/orders?colour=red", 400, code="unknown_field")
    c.check("POST", f"/api/orders/{order_id}/cancel", 409, code="conflict")  # confirmed: too late
    c.check("POST", "/api/orders/00000000-0000-0000-0000-000000000000/cancel", 404, code="not_found")

    # Webhooks: an order with a callbackUrl, its deliveries, the signing secret.
    hooked = c.check("POST", "/api/orders/execute", 202, {**SOL_USDC, "callbackUrl": "https://hooks.example.com/e"})
    c.check("POST", "/api/orders/execute", 400, {**SOL_USDC, "callbackUrl": "http://10.0.0.1/"}, code="invalid_field")
    c.check("GET", f"/api/orders/{hooked['orderId']}/deliveries", 200)
    c.check("GET", "/api/orders/00000000-0000-0000-0000-000000000000/deliveries", 404, code="not_found")
    c.check("GET", "/api/webhooks/secret", 200)

    # Market and simulator.
    c.check("GET", "/api/quote?tokenIn=SOL&tokenOut=USDC&amount=1.5&slippageBps=100", 200)
    c.check("GET", "/api/quote?tokenIn=SOL&tokenOut=USDC", 400, code="missing_field")
    assert len(c.check("GET", "/api/quote?tokenIn=BONK&tokenOut=JUP&amount=1000000", 200)["route"]["hops"]) == 2
    c.check("GET", "/api/quote?tokenIn=BONK&tokenOut=USDC&amount=0.00001", 400, code="insufficient_liquidity")
    c.check("GET", "/api/tokens", 200)
    swaps = c.check("GET", f"/api/sim/swaps?orderId={order_id}", 200)
    assert sorted(s["txHash"] for s in swaps["swaps"]) == sorted(f["txHash"] for f in order["fills"])
    c.check("GET", "/api/sim/swaps", 400, code="missing_field")
    c.check("GET", "/api/sim/swaps?orderId=00000000-0000-0000-0000-000000000000", 404, code="not_found")
    c.check("GET", "/api/sim/pools", 200)
    c.check("POST", "/api/sim/launch", 202, {"token": "POPCAT", "inSeconds": 3600})
    c.check("POST", "/api/sim/launch", 400, {"token": "POPCAT", "inSeconds": 3600}, code="already_tradable")
    c.check("POST", "/api/sim/launch", 400, {"token": "POPCAT", "inSeconds": -1}, code="invalid_field")
    c.check("POST", "/api/sim/launch", 415, b"{}", {"Content-Type": "text/plain"})

    # The operators' endpoints: closed where no operator key is configured.
    c.check("POST", "/api/admin/halt", 403, {"scope": "all"}, code="forbidden")
    c.check("POST", "/api/admin/resume", 403, {"scope": "all"}, code="forbidden")
    c.check("GET", "/api/admin/halts", 403, code="forbidden")

    # Listeners, operations, the document itself and the dashboard.
    c.check("GET", "/ws", 405, code="method_not_allowed")
    c.check("GET", f"/ws?orderId={order_id}", 101, headers=UPGRADE)
    for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/"):
        c.check("GET", path, 200)

    # The operator API, closed without ADMIN_KEYS (its answers with keys: below).
    for method, path, body in [("GET", "/api/admin/keys", None), ("POST", "/api/admin/keys", {}),
                               ("DELETE", "/api/admin/keys/someone", None),
                               ("POST", "/api/admin/keys/someone/cancel-all", None), ("GET", "/api/admin/audit", None)]:
        c.check(method, path, 403, body, code="forbidden")

    # What the document does not list still answers its Error shape.
    c.check_error_shape("GET", "/api/nowhere", 404)
    assert "Allow" in c.check_error_shape("DELETE", "/api/orders", 405)
    check_orders_over_time(c)
    check_each_protective_kind(c)

    documented = {(path, method) for path, item in c.document["paths"].items() for method in item}
    exercised = {(path, method) for path, method, _ in c.seen}
    assert documented == exercised, f"never exercised: {documented - exercised}"
    statuses = {status for _, _, status in c.seen}
    assert {200, 202, 400, 404, 405, 409, 413, 415} <= statuses


def test_cancel_answers_match_the_document(make_engine_run):
    _, port = make_engine_run(VENUE_PROFILE="realistic", ORDER_RATE_LIMIT=1)
    c = Checker(port)
    first = c.check("POST", "/api/orders/execute", 202, SOL_USDC)
    waiting = c.check("POST", "/api/orders/execute", 202, SOL_USDC)  # held back by the rate limit
    cancelled = c.check("POST", f"/api/orders/{waiting['orderId']}/cancel", 200)
    assert cancelled["status"] == "cancelled" and cancelled["events"][-1]["status"] == "cancelled"
    c.check("POST", f"/api/orders/{waiting['orderId']}/cancel", 200)  # again: the same 200
    wait_terminal(port, first["orderId"])
    c.check("POST", f"/api/orders/{first['orderId']}/cancel", 409, code="conflict")


def test_requests_without_a_valid_key_answer_401_as_documented_and_public_paths_stay_open(make_engine_run):
    _, port = make_engine_run(API_KEYS=f"{KEY_ONE},{KEY_TWO}")
    c = Checker(port)  # the document itself needs no key
    c.check("GET", "/api/tokens", 401, code="unauthorized")
    c.check("GET", "/api/tokens", 401, headers={"Authorization": "Bearer wrong"}, code="unauthorized")
    c.check("POST", "/api/orders/execute", 401, SOL_USDC, code="unauthorized")
    c.check("GET", "/api/tokens", 200, headers={"Authorization": f"Bearer {KEY_ONE}"})
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        c.check("GET", path, 200)


def test_operator_answers_match_the_document_halts_and_trading_halted_included(make_engine_run):
    _, port = make_engine_run(API_KEYS=KEY_ONE, ADMIN_KEYS=OPERATOR)
    c = Checker(port)
    op, one = {"Authorization": f"Bearer {OPERATOR}"}, {"Authorization": f"Bearer {KEY_ONE}"}
    created = c.check("POST", "/api/admin/keys", 201, {"label": "doc", "limits": {"maxOrderUsd": "100",
                                                                                   "maxOpenOrders": 3}}, op)
    c.check("POST", "/api/admin/keys", 400, {"limits": {"maxOrderUsd": "-1"}}, op, code="invalid_field")
    c.check("POST", "/api/admin/keys", 400, {"colour": "red"}, op, code="unknown_field")
    c.check("POST", "/api/admin/keys", 403, {}, one, code="forbidden")
    c.check("GET", "/api/admin/keys", 200, headers=op)
    c.check("GET", "/api/admin/keys", 401, code="unauthorized")
    mine = {"Authorization": f"Bearer {created['key']}"}
    order = c.check("POST", "/api/orders/execute", 202, SOL_USDC, mine)
    c.check("GET", f"/api/orders?keyId={created['keyId']}", 200, headers=op)
    c.check("GET", f"/api/orders/{order['orderId']}", 200, headers=op)
    c.check("POST", f"/api/admin/keys/{created['keyId']}/cancel-all", 200, headers=op)
    c.check("POST", "/api/admin/keys/nobody/cancel-all", 404, headers=op, code="not_found")
    c.check("DELETE", f"/api/admin/keys/{created['keyId']}", 200, headers=op)
    c.check("DELETE", "/api/admin/keys/nobody", 404, headers=op, code="not_found")
    listed = c.check("GET", "/api/admin/keys", 200, headers=op)
    environment = [k["keyId"] for k in listed["keys"] if k["source"] == "environment"]
    c.check("DELETE", f"/api/admin/keys/{environment[0]}", 409, headers=op, code="conflict")
    c.check("GET", "/api/orders", 401, headers=mine, code="unauthorized")
    page = c.check("GET", "/api/admin/audit?limit=2", 200, headers=op)
    assert created["key"] not in json.dumps(page)
    c.check("GET", "/api/admin/audit?limit=0", 400, headers=op, code="invalid_field")
    check_halt_answers(c)


def check_halt_answers(c: Checker) -> None:
    """The halt answers, trading_halted included (run by the operator test above, on its engine:
    the key it halts is the environment's KEY_ONE, which the operator part left alone)."""
    op, trader = {"Authorization": f"Bearer {OPERATOR}"}, {"Authorization": f"Bearer {KEY_ONE}"}
    halt = c.check("POST", "/api/admin/halt", 201, {"scope": "pair", "pair": "SOL/USDC", "reason": "test"}, op)
    c.check("POST", "/api/admin/halt", 200, {"scope": "pair", "pair": "usdc/sol"}, op)
    key_id = next(k["keyId"] for k in c.check("GET", "/api/admin/keys", 200, headers=op)["keys"]
                  if k["source"] == "environment")  # KEY_ONE: the only key of the environment
    c.check("POST", "/api/admin/halt", 201, {"scope": "key", "keyId": key_id, "reason": "test"}, op)
    c.check("POST", "/api/admin/halt", 404, {"scope": "key", "keyId": "0123456789abcdef"}, op, code="not_found")
    c.check("POST", "/api/admin/halt", 400, {"scope": "pair", "pair": "SOL/SOL"}, op, code="same_token")
    c.check("POST", "/api/admin/halt", 403, {"scope": "all"}, trader, code="forbidden")
    assert c.check("GET", "/api/admin/halts", 200, headers=op)["halts"][0] == halt
    refused = c.check("POST", "/api/orders/execute", 503, SOL_USDC, trader, code="trading_halted")
    assert refused["error"]["reason"] == "test"
    c.check("POST", "/api/admin/resume", 200, {"scope": "pair", "pair": "SOL/USDC"}, op)
    c.check("POST", "/api/admin/resume", 404, {"scope": "pair", "pair": "SOL/USDC"}, op, code="not_found")
    c.check("POST", "/api/admin/resume", 400, {"scope": "all", "keyId": "x"}, op, code="invalid_field")
    c.check("POST", "/api/admin/resume", 200, {"scope": "key", "keyId": key_id}, op)
    c.check("POST", "/api/orders/execute", 202, SOL_USDC, trader)


def check_each_protective_kind(c: Checker) -> None:
    """Each protective kind is a documented submit and its order matches the document (run by the
    main test above, on the same engine: its orders and refusals are its own)."""
    kinds = [{"type": "stop_loss", "stopPrice": "1"}, {"type": "stop_loss", "stopPrice": "1", "limitPrice": "0.9"},
             {"type": "take_profit", "targetPrice": "100000"}, {"type": "trailing_stop", "trailPercent": "5"},
             {"type": "trailing_stop", "trailPercent": 2.5}, {"type": "trailing_stop", "trailAmount": "7.5"},
             {"type": "trailing_stop", "trailAmount": 3, "trailPercent": None},
             {"type": "oco", "takeProfit": {"targetPrice": "100000"}, "stopLoss": {"stopPrice": "1"}},
             {"type": "oco", "takeProfit": {"targetPrice": "100000"},
              "stopLoss": {"stopPrice": "1", "limitPrice": "0.5"}}]
    for kind in kinds:
        accepted = c.check("POST", "/api/orders/execute", 202, {**SOL_USDC, **kind})
        order = c.check("GET", f"/api/orders/{accepted['orderId']}", 200)
        assert order["type"] == kind["type"]
        assert ("trailAmount" in order) == ("trailAmount" in kind), order
    for body, code in [({**SOL_USDC, "type": "trailing_stop"}, "missing_field"),
                       ({**SOL_USDC, "type": "trailing_stop", "trailPercent": "5", "trailAmount": "1"}, "invalid_field"),
                       ({**SOL_USDC, "type": "trailing_stop", "trailAmount": "0"}, "invalid_field"),
                       ({**SOL_USDC, "type": "stop_loss", "stopPrice": "1", "trailAmount": "1"}, "invalid_field"),
                       ({**SOL_USDC, "type": "oco", "takeProfit": {"targetPrice": "2"}, "stopLoss": {"stop": "1"}},
                        "unknown_field"),
                       ({**SOL_USDC, "type": "stop_loss", "stopPrice": "1", "limitPrice": "2"}, "invalid_field")]:
        c.check("POST", "/api/orders/execute", 400, body, code=code)


def check_orders_over_time(c: Checker) -> None:
    """A twap to its end (parent, child), a dca paused, resumed and cancelled, as documented."""
    twap = c.check("POST", "/api/orders/execute", 202, {**SOL_USDC, "type": "twap", "durationSeconds": 1,
                                                         "slices": 2, "jitterSeconds": 0})
    dca = c.check("POST", "/api/orders/execute", 202, {"tokenIn": "USDC", "tokenOut": "SOL", "amount": "1",
                                                        "type": "dca", "intervalSeconds": 3600, "count": 2})
    c.check("POST", "/api/orders/execute", 400, {**SOL_USDC, "type": "twap", "slices": 2}, code="missing_field")
    total = c.check("POST", "/api/orders/execute", 202, {"tokenIn": "USDC", "tokenOut": "SOL", "amount": "1",
                                                          "type": "dca", "intervalSeconds": 3600, "totalAmount": "2.5"})
    assert c.check("GET", f"/api/orders/{total['orderId']}", 200)["count"] == 3
    c.check("POST", f"/api/orders/{total['orderId']}/cancel", 200)
    c.check("POST", "/api/orders/execute", 400, {**SOL_USDC, "count": 2}, code="invalid_field")
    parent = wait_terminal(c.port, twap["orderId"], timeout=60)
    assert parent["status"] == "completed", parent
    parent = c.check("GET", f"/api/orders/{twap['orderId']}", 200)
    assert len(parent["children"]) == 2 and parent["progress"]["settled"] == 2
    child = c.check("GET", f"/api/orders/{parent['children'][0]['orderId']}", 200)
    assert child["parentId"] == twap["orderId"] and child["sliceIndex"] == 0
    paused = c.check("POST", f"/api/orders/{dca['orderId']}/pause", 200)
    assert paused["paused"] is True
    assert c.check("POST", f"/api/orders/{dca['orderId']}/resume", 200)["paused"] is False
    c.check("POST", f"/api/orders/{twap['orderId']}/pause", 409, code="conflict")
    c.check("POST", "/api/orders/00000000-0000-0000-0000-000000000000/resume", 404, code="not_found")
    assert c.check("POST", f"/api/orders/{dca['orderId']}/cancel", 200)["status"] == "cancelled"
    c.check("GET", "/api/orders?type=dca", 200)
    c.check("GET", "/api/orders?status=scheduled", 200)
