"""The OpenAPI 3.1 document of the public API (shared/spec/API.md), served at `/api/openapi.json`.

It describes the whole spec (cancel, limit and sniper orders, API keys included) and what
the engine adds to it. The WebSocket endpoints are described in words on their upgrade requests.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from web.base import ApiHandler, json_dumps
from web.openapi_schemas import (CURSOR_PATTERN, DEXES, LISTED, ORDER_TYPES, SCHEMAS, STATUSES, amount_any, ref,
                                 token_input)

VERSION = "3.1.0"

_ERRORS = {
    400: "Invalid input: the body, a field or a query parameter breaks a rule (`field` names it).",
    401: "An API key is configured and this request has none, or an unknown (or revoked) one.",
    403: "Forbidden (`forbidden`): an operator key where a trading key is needed, a trading key (or no "
         "ADMIN_KEYS at all) on an operator endpoint, or a browser page from an origin not in "
         "`CORS_ORIGINS` opening a WebSocket.",
    404: "No such order of the caller, no such key (or no such resource; for a resume: nothing halted there).",
    405: "This method is not allowed on this path (`Allow` lists the ones that are).",
    409: "Conflict: the clientOrderId names a different order, the order can no longer be cancelled, or "
         "the key is set in the environment (API_KEYS, ADMIN_KEYS) and cannot be revoked here.",
    410: "The order was archived (`archived`, ORDER_RETENTION_DAYS): it existed, finished, and left the hot "
         "tables; `archive` names the archive an operator restores it from (`engine archive --restore NAME`). "
         "On a submit: its clientOrderId names such an order (never a second order). Another key's archived "
         "order is `not_found`, as any order of another key.",
    413: "The body is larger than 64 KiB.",
    415: "The body is not `application/json`.",
    429: "Too many requests of this kind (submissions, quotes, order lists, WebSocket connections) for this API "
         "key, or from this address where no keys are configured, in the last 60 s; retry after `Retry-After` "
         "seconds (`retryAfter` in the error says the same).",
    422: "Refused by a risk limit of the caller (`risk_limit`): `limit` names it, `value` is the limit, and the "
         "order's figures follow (`orderValue`, `openOrders`, `notional24hUsd`). Nothing was stored.",
    500: "An unexpected server error (no trace is ever shown).",
    503: "Not ready (database or bus unreachable), `queue_full`, or `overloaded` (a market order while the "
         "queue's oldest order has waited past QUEUE_MAX_WAIT_SECONDS, with `Retry-After`): retry later; "
         "`trading_halted` (with the halt's `reason`): an operator halted trading that covers this order, "
         "nothing was stored.",
}
_HEADERS = {
    405: {"Allow": {"required": True, "schema": {"type": "string"}, "description": "the allowed methods"}},
    429: {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 0},
                          "description": "seconds until a request of this kind is accepted again"}},
}


def _json(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict[str, Any]:
    answer = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _error(status: int) -> dict[str, Any]:
    return _json(ref("Error"), _ERRORS[status], _HEADERS.get(status))


def _op(summary: str, ok: dict[int, dict], errors: tuple[int, ...], description: str = "",
        params: list | None = None, body: dict | None = None, public: bool = False, tag: str = "orders") -> dict:
    """One operation: its answers (`ok`), the errors it may answer, parameters and body."""
    responses = {str(code): answer for code, answer in ok.items()}
    codes = set(errors) if public else set(errors) | {401, 500}
    for code in sorted(codes):
        responses[str(code)] = _error(code)
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    return operation


def _query(name: str, schema: dict, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


# What makes a GET a WebSocket handshake (RFC 6455): without these headers it answers 405.
_HANDSHAKE = [
    {"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},
    {"name": "Connection", "in": "header", "required": True, "schema": {"const": "Upgrade"}},
    {"name": "Sec-WebSocket-Version", "in": "header", "required": True, "schema": {"const": "13"}},
    {"name": "Sec-WebSocket-Key", "in": "header", "required": True, "description": "16 random bytes, base64",
     "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"}},
]
_ORDER_ID = {"type": "string", "format": "uuid", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}

_WS_SUBMIT = """WebSocket upgrade (`Upgrade: websocket`). The client's first text frame is the
submit body (SubmitRequest). The server answers an AcceptedFrame, or an ErrorFrame and then
closes with code 1008; after an AcceptedFrame it streams that order's StatusEvents from seq 1
until a terminal status, then closes with 1000. Where API keys are configured, `?token=KEY`
may replace the Authorization header (browsers cannot set it). The handshake counts as a
submission and as a WebSocket connection (429 with `Retry-After` over either limit). Without
the upgrade: 405."""

_WS_LISTEN = """WebSocket upgrade (`Upgrade: websocket`) for listeners.
- `?orderId=ID` streams one order: every earlier event in seq order, then the live ones; after
  the terminal event the server closes with 1000. `&after=N` resumes after event N.
  An unknown order or a bad parameter gets an ErrorFrame and close code 1008.
- Without an order id: every order of the caller (of its API key), live. The client may send
  SubscribeCommand (answered by a SubscribedFrame, then that order's history) and
  UnsubscribeCommand (answered by an UnsubscribedFrame) frames; an order of another key gets
  an ErrorFrame (`not_found`) and the connection stays open. An archived order of the caller
  gets an ErrorFrame `archived` (with `archive`), as GET answers it with 410.
- Streamed quotes, on `/ws` without an order id: SubscribeQuoteCommand
  (`{"action": "subscribeQuote", "tokenIn", "tokenOut", "amount", "slippageBps"?}`, validated as
  GET /api/quote) is answered by a QuoteSubscribedFrame with its `subscriptionId`, then a
  QuoteFrame (the body of GET /api/quote with `type` and `subscriptionId`) whenever the quote
  changes: when a swap moves a pool it depends on, or as prices drift; at most one frame per
  subscription per QUOTE_STREAM_INTERVAL_MS (250 ms). A quote that cannot be given for a while
  is a QuoteErrorFrame (the subscription stays). UnsubscribeQuoteCommand ends one
  (QuoteUnsubscribedFrame). At most 20 quote subscriptions per connection; subscribeQuote
  frames count against SUBSCRIBE_RATE_LIMIT; a refused one is an ErrorFrame, the connection
  stays open.
- Events of one order are never duplicated or reordered on one connection.
- `?token=KEY` authenticates where keys are configured; a refused key fails the handshake
  with 401 and the Error shape. Without the upgrade: 405.
- Handshakes count against CONNECT_RATE_LIMIT (over it: 429 with `Retry-After`) and subscribe
  frames against SUBSCRIBE_RATE_LIMIT (over it: an ErrorFrame `rate_limited` with `retryAfter`
  seconds; the connection stays open)."""

_SUBMIT_DESCRIPTION = """202 with status `pending` for a new order. A repeated `clientOrderId` from the
same owner whose body means the same order answers 200 for the existing order (its status now);
a different order under the same key answers 409."""

_OK_SUBMIT = {202: _json(ref("SubmitAccepted"), "Accepted and queued."),
              200: _json(ref("SubmitAccepted"), "A repeat of an earlier submit (same clientOrderId).")}
_UPGRADED = {101: {"description": "Switching Protocols: the WebSocket is open (frames described above)."}}


_WS_SECURITY = [{}, {"bearerAuth": []}, {"tokenQuery": []}]


def _paths() -> dict[str, Any]:
    paths = _operations()
    for path in ("/api/orders/execute", "/ws"):
        paths[path]["get"]["security"] = _WS_SECURITY
    for path, item in paths.items():
        for method, operation in item.items():
            operation["operationId"] = OPERATION_IDS[(path, method)]
    return paths


# Names for generated clients (and for tools that pick operations, such as the WebSocket
# handshakes that an HTTP fuzzer must leave out).
OPERATION_IDS = {
    ("/api/orders/execute", "post"): "submitOrder", ("/api/orders/execute", "get"): "submitOrderOverWebSocket",
    ("/api/orders", "get"): "listOrders", ("/api/orders/{orderId}", "get"): "getOrder",
    ("/api/orders/{orderId}/cancel", "post"): "cancelOrder", ("/api/quote", "get"): "getQuote",
    ("/api/orders/{orderId}/pause", "post"): "pauseSchedule", ("/api/orders/{orderId}/resume", "post"): "resumeSchedule",
    ("/api/tokens", "get"): "listTokens", ("/api/sim/swaps", "get"): "listSimSwaps",
    ("/api/sim/pools", "get"): "listSimPools", ("/api/sim/launch", "post"): "launchToken",
    ("/ws", "get"): "listenOverWebSocket", ("/healthz", "get"): "health", ("/readyz", "get"): "readiness",
    ("/metrics", "get"): "metrics", ("/api/openapi.json", "get"): "openapiDocument", ("/", "get"): "dashboard",
    ("/api/admin/keys", "get"): "listKeys", ("/api/admin/keys", "post"): "createKey",
    ("/api/admin/keys/{keyId}", "delete"): "revokeKey",
    ("/api/admin/keys/{keyId}/cancel-all", "post"): "cancelAllOrdersOfKey", ("/api/admin/audit", "get"): "readAudit",
    ("/api/admin/halt", "post"): "haltTrading", ("/api/admin/resume", "post"): "resumeTrading",
    ("/api/admin/halts", "get"): "listHalts",
    ("/api/orders/{orderId}/deliveries", "get"): "listDeliveries", ("/api/webhooks/secret", "get"): "getWebhookSecret",
}
# The operator API: an operator key (ADMIN_KEYS) only.
ADMIN_OPERATIONS = ("listKeys", "createKey", "revokeKey", "cancelAllOrdersOfKey", "readAudit",
                    "haltTrading", "resumeTrading", "listHalts")

_ADMIN = """Operators only: an operator key (one of ADMIN_KEYS) as the bearer token; a trading key, or an
engine without ADMIN_KEYS, gets 403 `forbidden`. Every POST and DELETE is written to the audit log
(refused or not)."""

_HALT = """Operators only (an `ADMIN_KEYS` key; a trading key gets 403). `all` halts every order, `key` the
orders of the key's owner, `pair` both directions of a pair. While a halt covers an order: a new submit
answers 503 `trading_halted` with the halt's reason and stores nothing; an armed limit or sniper order does
not fire (it fires once resumed, if its condition holds); a queued order does not start (a market order
held longer than MARKET_MAX_WAIT_SECONDS fails `stale_order` on resume). Swaps already sent settle.
Halting what is halted answers 200 with the existing halt; a new halt 201. Audited as `halt`."""
_RESUME = """Operators only. Ends the halt of this scope and target: held orders go on where they were.
404 when nothing is halted there. Audited as `resume`."""


def _operations() -> dict[str, Any]:
    order_id = {"name": "orderId", "in": "path", "required": True, "schema": _ORDER_ID}
    key_id = {"name": "keyId", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "a key's id (as listed)"}
    return {
        "/api/orders/execute": {
            "post": _op("Submit an order", _OK_SUBMIT, (400, 409, 410, 413, 415, 422, 429, 503),
                        _SUBMIT_DESCRIPTION, body=ref("SubmitRequest")),
            "get": _op("Submit an order over WebSocket and stream its events", _UPGRADED,
                       (400, 403, 405, 429), _WS_SUBMIT,
                       params=[*_HANDSHAKE, _query("token", {"type": "string"}, "API key, for browsers")]),
        },
        "/api/orders": {"get": _op(
            "List orders, newest first", {200: _json(ref("OrderList"), "One page of orders (without events).")},
            (400, 429, 503), "Pass `nextCursor` back as `cursor` for the next page. An operator key lists every "
            "order; it may add `keyId=ID` for the orders of that trading key's owner only (400 `invalid_field` "
            "for an id that is no trading key's). For a trading key `keyId` is an unknown parameter (400 "
            "`unknown_field`), like any other; so it is not among the parameters listed here.", params=[
                _query("status", {"type": "string", "enum": STATUSES}, "only orders with this status"),
                _query("type", {"type": "string", "enum": ORDER_TYPES}, "only orders of this type"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size, 1..500 (400 otherwise)"),
                _query("cursor", {"type": "string", "pattern": CURSOR_PATTERN}, "the nextCursor of the previous page"),
            ])},
        "/api/orders/{orderId}": {"get": _op(
            "Read one order with its full event history",
            {200: _json(ref("OrderWithEvents"), "The order, its route, fills, error and events by seq.")},
            (404, 410, 503), "An operator key reads any order.", params=[order_id])},
        "/api/orders/{orderId}/cancel": {"post": _op(
            "Cancel an order that has not reached building",
            {200: _json(ref("OrderWithEvents"), "Cancelled (or already cancelled): the order as GET shows it.")},
            (404, 409, 410, 503), "No body. 409 once the order has reached `building` or ended otherwise.",
            params=[order_id])},
        "/api/orders/{orderId}/pause": {"post": _op(
            "Pause a dca order's schedule",
            {200: _json(ref("Order"), "Paused (or paused already): the order with its children and progress.")},
            (404, 409, 410, 503), "No body. No child is created while paused; a child already created runs. "
            "409 for an order that is not a dca or has ended.", params=[order_id])},
        "/api/orders/{orderId}/resume": {"post": _op(
            "Resume a paused dca order's schedule",
            {200: _json(ref("Order"), "Running again (or running already): the order with its children and progress.")},
            (404, 409, 410, 503), "No body. The next child is created at once if it is overdue, then every "
            "interval. 409 for an order that is not a dca or has ended.", params=[order_id])},
        "/api/orders/{orderId}/deliveries": {"get": _op(
            "An order's webhook deliveries and their outcomes",
            {200: _json(ref("DeliveryList"), "One delivery per event of an order with a callbackUrl, by seq "
                        "(none for an order without one).")},
            (404, 503), "404 as for the order itself; an operator key reads any order's.", params=[order_id],
            tag="webhooks")},
        "/api/webhooks/secret": {"get": _op(
            "The secret the caller's webhooks are signed with",
            {200: _json(ref("WebhookSecret"), "The key's signing secret (keys that share an owner share it).")},
            (403, 503), "A receiver checks `X-Engine-Signature` against HMAC-SHA256 of `X-Engine-Timestamp`, a "
            "dot and the raw body under this secret, and refuses old timestamps (replays).", tag="webhooks")},
        "/api/quote": {"get": _op(
            "Quote both venues and show the route the engine would take now",
            {200: _json(ref("QuoteAnswer"), "Both venues' quotes and the route; nothing is executed.")},
            (400, 429, 503), "Validated with the same rules and codes as a submit.", params=[
                _query("tokenIn", token_input(LISTED), "symbol (any case) or mint of the token sold", True),
                _query("tokenOut", token_input(LISTED), "symbol or mint of the token bought (not tokenIn)", True),
                _query("amount", amount_any(), "amount of tokenIn, whole-token units (> 0, at most its "
                       "decimals); one the pools can fill", True),
                _query("slippageBps", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 50}, "1..5000"),
            ], tag="market")},
        "/api/tokens": {"get": _op(
            "The tokens, with their mainnet mints", {200: _json(ref("TokenList"), "Every token.")},
            (503,), tag="market")},
        "/api/sim/swaps": {"get": _op(
            "Swaps the simulated chain executed for an order",
            {200: _json(ref("SimSwapList"), "Every executed swap of the order.")}, (400, 404, 410, 503),
            params=[_query("orderId", _ORDER_ID, "the order", True)], tag="simulator")},
        "/api/sim/pools": {"get": _op(
            "Every simulated pool, priced now", {200: _json(ref("PoolList"), "Reserves in whole tokens.")},
            (503,), tag="simulator")},
        "/api/sim/launch": {"post": _op(
            "Schedule the launch of a token that is not tradable yet (for sniper orders)",
            {202: _json(ref("LaunchAccepted"), "Scheduled.")}, (400, 413, 415, 503),
            body=ref("LaunchRequest"), tag="simulator")},
        "/api/admin/halt": {"post": _op(
            "Halt trading (the kill switch)", {201: _json(ref("Halt"), "Halted."),
                                               200: _json(ref("Halt"), "Already halted: the existing halt.")},
            (400, 403, 404, 413, 415, 503), _HALT, body=ref("HaltRequest"), tag="operators")},
        "/api/admin/resume": {"post": _op(
            "Resume trading halted by /api/admin/halt", {200: _json(ref("Halt"), "Resumed: the halt ended.")},
            (400, 403, 404, 413, 415, 503), _RESUME, body=ref("HaltRequest"), tag="operators")},
        "/api/admin/halts": {"get": _op(
            "The active halts, oldest first", {200: _json(ref("HaltList"), "Every active halt.")},
            (403, 503), "Operators only.", tag="operators")},
                "/ws": {"get": _op("Listen to order events over WebSocket", _UPGRADED, (400, 403, 405, 429), _WS_LISTEN, params=[
            *_HANDSHAKE,
            _query("orderId", _ORDER_ID, "stream this order only"),
            _query("after", {"type": "integer", "minimum": 0}, "with orderId: resume after this event seq"),
            _query("token", {"type": "string"}, "API key, for browsers"),
        ])},
        "/api/admin/keys": {
            "get": _op("List every trading key (never the keys themselves)",
                       {200: _json(ref("KeyList"), "API_KEYS ones (`environment`) first, then managed ones, "
                                   "revoked included, oldest first.")}, (403, 503), _ADMIN, tag="operators"),
            "post": _op("Create a trading key (usable at once on every web process)",
                        {201: _json(ref("CreatedKey"), "The new key, shown this once.")},
                        (400, 403, 413, 415, 503), _ADMIN + " Audited as `keys.create`, the key as `***`.",
                        body=ref("KeyCreateRequest"), tag="operators"),
        },
        "/api/admin/keys/{keyId}": {"delete": _op(
            "Revoke a managed trading key", {200: _json(ref("ApiKey"), "Revoked (again: the same answer).")},
            (403, 404, 409, 503), _ADMIN + " Every web process refuses the key (401) from its next request and "
            "closes its WebSockets (1008). Audited as `keys.revoke`.", params=[key_id], tag="operators")},
        "/api/admin/keys/{keyId}/cancel-all": {"post": _op(
            "Cancel every open order of the key's owner",
            {200: _json(ref("CancelAllAnswer"), "What was cancelled, and what could not be (already building "
                        "or further).")},
            (400, 403, 404, 415, 503), _ADMIN + " No body. As the owner's own cancel: orders not yet `building`. "
            "Audited as `keys.cancel_all`.", params=[key_id], tag="operators")},
        "/api/admin/audit": {"get": _op(
            "Read the audit log, newest first", {200: _json(ref("AuditPage"), "A page of entries.")},
            (400, 403, 503), _ADMIN + " Pass `nextBefore` back as `before` for the next page.", params=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "page size"),
                _query("before", {"type": "integer", "minimum": 1}, "entries older than this id"),
            ], tag="operators")},
        "/healthz": {"get": _op("The process is alive", {200: _json(ref("Health"), "Alive.")}, (),
                                public=True, tag="operations")},
        "/readyz": {"get": _op("The database and the bus answer", {200: _json(ref("Ready"), "Ready.")},
                               (503,), public=True, tag="operations")},
        "/metrics": {"get": _op("Prometheus metrics of this process", {200: {
            "description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            (), public=True, tag="operations")},
        "/api/openapi.json": {"get": _op("This document", {200: _json({"type": "object"}, "OpenAPI 3.1.")},
                                         (), public=True, tag="operations")},
        "/": {"get": _op("The dashboard (HTML, no build step, no outside assets)", {200: {
            "description": "The dashboard page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
            (), public=True, tag="operations")},
    }


_DESCRIPTION = f"""Routes swap orders on Solana tokens to the better of two venues ({' and '.join(DEXES)},
simulated), executes them and streams every step. JSON everywhere; amounts and prices are decimal
strings in answers and strings or JSON numbers in requests; timestamps are ISO 8601 UTC with `Z`.

Every error has the Error shape. A path not listed here answers 404, a method not listed 405.
Where `API_KEYS` is configured every `/api` and `/ws` request needs `Authorization: Bearer <key>`
(WebSockets may use `?token=` instead); `/`, `/healthz`, `/readyz`, `/metrics` and this document
never do. The WebSocket endpoints are the GET operations of `/api/orders/execute` and `/ws`."""


@lru_cache(maxsize=1)
def openapi_document() -> str:
    """The document as JSON text (built once)."""
    return json_dumps({
        "openapi": VERSION,
        "info": {"title": "DEX order execution engine", "version": "1", "description": _DESCRIPTION},
        "servers": [{"url": "/", "description": "the engine serving this document"}],
        "security": [{}, {"bearerAuth": []}],
        "tags": [{"name": "orders"}, {"name": "market"}, {"name": "simulator"}, {"name": "operations"},
                 {"name": "operators"}, {"name": "webhooks"}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "a trading key (API_KEYS, or created through /api/admin/keys), "
                                              "or an operator key (ADMIN_KEYS) for /api/admin/ and reading orders"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token",
                               "description": "the same key on a WebSocket URL (browsers)"},
            },
        },
    })


class OpenApiHandler(ApiHandler):
    """`GET /api/openapi.json`: the OpenAPI document (no API key needed)."""

    public = True

    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.finish(openapi_document())
