"""The JSON Schemas of the OpenAPI document (`components`): every body the API reads or writes.

Kept apart from the paths (web/openapi.py) so each file stays readable; the test in
tests/e2e/test_openapi.py checks real answers of a running engine against them.
"""
from __future__ import annotations

from typing import Any

from config import TOKENS, Token
from config.tokens import NATIVE_SOL_MINT
from storage.orders import CURSOR_PATTERN
from storage.halts import SCOPES
from storage.status import FAILURE_CODES, LIFECYCLE, SCHEDULED, TERMINAL
from storage.venues.base import VENUES
from web.validation import MAX_BASE_UNITS, MAX_EXPIRY_SECONDS
from web.validation import ORDER_TYPES as _ORDER_TYPES

# The engine's own lists, so the document cannot drift from them.
STATUSES = list(LIFECYCLE) + [SCHEDULED] + sorted(TERMINAL)
ORDER_TYPES = list(_ORDER_TYPES)
DEXES = list(VENUES)

# The spec's codes, then the ones the engine adds (venue refusals on quotes and launches,
# the WebSocket origin check, unexpected errors); web/errors.py maps every error to one.
SPEC_ERROR_CODES = [
    "invalid_json", "unsupported_media_type", "payload_too_large", "missing_field", "unknown_field",
    "invalid_field", "invalid_amount", "too_many_decimals", "amount_too_large", "unknown_token", "same_token",
    "unsupported_order_type", "unauthorized", "not_found", "method_not_allowed", "conflict", "rate_limited",
    "queue_full", "not_ready", "risk_limit", "trading_halted", "overloaded",
]
ENGINE_ERROR_CODES = [
    "forbidden", "internal_error", "archived", "no_route", "no_pool", "not_tradable", "insufficient_liquidity",
    "already_tradable", "invalid_launch_time",
]


# ---- request values, as strict as web/validation.py (built from the same lists) -----------------

def _names(token: Token) -> str:
    """A regex alternative for one token: its symbol in any case, or its mint(s)."""
    symbol = "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in token.symbol)
    mints = [token.mint] + ([NATIVE_SOL_MINT] if token.symbol == "SOL" else [])
    return "|".join([symbol, *mints])


def token_input(tokens) -> dict[str, Any]:
    """A token named by symbol (any case) or mint, one of `tokens`."""
    return {"type": "string", "pattern": "^(?:" + "|".join(_names(t) for t in tokens) + ")$"}


LISTED = [t for t in TOKENS if t.tradable]  # tradable from the start
UNLAUNCHED = [t for t in TOKENS if not t.tradable]  # until POST /api/sim/launch: sniper orders only
_POSITIVE = {"not": {"pattern": r"^0*\.?0*$"}}  # with a decimal pattern: not zero


def amount_any() -> dict[str, Any]:
    """An amount (as text) valid for whichever listed token: the fewest decimals (5) and whole
    digits (10, for SOL's 9 decimals under 2^64-1 base units) among them."""
    return {"type": "string", "allOf": [{"pattern": r"^[0-9]{1,10}(?:\.[0-9]{0,5}0*)?$"}, _POSITIVE]}


_REASON = {"type": "string", "minLength": 1, "maxLength": 500, "pattern": r"\S",
           "description": "why (shown to the traders refused); default: halted by an operator"}


def halt_kinds() -> list[dict[str, Any]]:
    """A halt or resume body per scope: keyId only with scope key, pair only with scope pair."""
    any_token = "(?:" + "|".join(_names(t) for t in TOKENS) + ")"
    return [
        _obj(["scope"], {"scope": {"const": "all"}, "reason": _REASON}),
        _obj(["scope", "keyId"], {"scope": {"const": "key"}, "reason": _REASON,
                                  "keyId": {"type": "string", "pattern": "^[!-~]{1,64}$"}}),
        _obj(["scope", "pair"], {"scope": {"const": "pair"}, "reason": _REASON,
                                 "pair": {"type": "string", "pattern": f"^{any_token}/{any_token}$"}}),
    ]


def ref(name: str) -> dict[str, str]:
    """A `$ref` to a schema of this document."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null (OpenAPI 3.1 is JSON Schema 2020-12: no `nullable`)."""
    return {"oneOf": [schema, {"type": "null"}]}


def _obj(required: list[str], properties: dict[str, Any], extra: bool = False, **more: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties,
            "additionalProperties": extra, **more}


def _by_decimals(tokens) -> list[list[Token]]:
    """The tokens in groups of equal decimals: an amount's rules depend on its token's decimals
    alone, so one kind of submit body serves a group (fewer alternatives for a generator)."""
    groups: dict[int, list[Token]] = {}
    for token in tokens:
        groups.setdefault(token.decimals, []).append(token)
    return list(groups.values())


def amount_of(token) -> dict[str, Any]:
    """An amount of `token` (or of any token of a group of equal decimals): > 0, at most its
    decimals (trailing zeros aside), at most 2^64-1 base units (as text: fewer whole digits
    than the bound has, so every such text fits)."""
    token = token[0] if isinstance(token, list) else token
    whole_digits = len(str(MAX_BASE_UNITS // 10 ** token.decimals)) - 1
    text = {"type": "string", "allOf": [
        {"pattern": rf"^[0-9]{{1,{whole_digits}}}(?:\.[0-9]{{0,{token.decimals}}}0*)?$"}, _POSITIVE]}
    return {"oneOf": [text, {"type": "integer", "minimum": 1, "maximum": MAX_BASE_UNITS // 10 ** token.decimals}]}


# Webhook URLs the engine accepts whatever WEBHOOK_ALLOW_PRIVATE says: a host name (never an
# address, never localhost: a top-level domain of 2 to 8 letters), an optional port, a path.
_CALLBACK_PATTERN = r"^https?://([A-Za-z0-9-]{1,63}\.){1,10}[A-Za-z]{2,8}(:[1-9][0-9]{0,3})?(/[!-\"$-~]*)?$"
_EXPIRY = nullable({"type": "integer", "minimum": 1, "maximum": MAX_EXPIRY_SECONDS})


def _submit(token_in, order_type: dict[str, Any], required: list[str], tokens_out, **fields: Any) -> dict[str, Any]:
    """One kind of submit body (an alternative of SubmitRequest): selling `token_in`, or any
    token of a group of equal decimals (then tokenOut may name the same token: the description
    says it must not)."""
    sold = token_in if isinstance(token_in, list) else [token_in]
    return _obj(["tokenIn", "tokenOut", "amount", *required], {
        "tokenIn": token_input(sold), "tokenOut": token_input([t for t in tokens_out if sold != [t]]),
        "amount": amount_of(token_in),
        "type": order_type,
        "slippageBps": nullable({"type": "integer", "minimum": 1, "maximum": 5000, "default": 50}),
        "clientOrderId": nullable({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[ -~]+$"}),
        "limitPrice": {"type": "null"}, "expiresInSeconds": {"type": "null"}, "stopPrice": {"type": "null"},
        "targetPrice": {"type": "null"}, "trailPercent": {"type": "null"}, "trailAmount": {"type": "null"},
        "takeProfit": {"type": "null"},
        "stopLoss": {"type": "null"},
        "callbackUrl": nullable(ref("CallbackUrl")), **_NO_SCHEDULE, **fields})


def submit_kinds() -> list[dict[str, Any]]:
    """Every kind of submit body, by the decimals of the token sold (its amount's decimals and
    bound differ; the token bought is another one): market and limit orders between listed
    tokens; sniper orders with at most one token not launched yet (a launched one trades at
    once). One alternative per decimals, not per token: 84 alternatives were more than
    Schemathesis's generator takes."""
    kinds = []
    for group in _by_decimals(LISTED):
        kinds += [_submit(group, {"enum": ["market", None]}, [], LISTED),
                  _submit(group, {"const": "limit"}, ["type", "limitPrice"], LISTED,
                          limitPrice=ref("LimitPrice"), expiresInSeconds=_EXPIRY),
                  _submit(group, {"const": "sniper"}, ["type"], TOKENS, expiresInSeconds=_EXPIRY)]
        kinds += protective_kinds(group)
        kinds += schedule_kinds(group)
    for group in _by_decimals(UNLAUNCHED):
        kinds.append(_submit(group, {"const": "sniper"}, ["type"], LISTED, expiresInSeconds=_EXPIRY))
    return kinds


_TRAIL_PERCENT = {"oneOf": [
    {"type": "string", "allOf": [{"pattern": r"^(?:[0-9]|[1-4][0-9])(?:\.[0-9]{1,2})?$|^50(?:\.0{1,2})?$"},
                                 {"not": {"pattern": r"^0(?:\.0{1,2})?$"}}]},  # 0.01 at least
    {"type": "number", "minimum": 0.01, "maximum": 50, "multipleOf": 0.01}],
    "description": "how far below the best price seen it sells, in percent (0.01 to 50, 2 decimals at most)"}
_TRAIL_AMOUNT = {**ref("LimitPrice"), "description": "how far below the best price seen it sells, in price "
                 "(tokenOut per tokenIn, as limitPrice); instead of trailPercent, never with it"}
_STOP_FLOOR = nullable({**ref("LimitPrice"), "description": "a stop-limit's floor: once its stop fired it sells as a "
                        "limit at this (tokenOut per tokenIn), never below; not above the stop price"})
_NO_SCHEDULE = {name: {"type": "null"} for name in ("durationSeconds", "slices", "intervalSeconds", "count",
                                                    "jitterSeconds", "totalAmount")}


def schedule_kinds(token) -> list[dict[str, Any]]:
    """Orders over time selling a listed token: twap (durationSeconds, slices: `amount` in equal
    slices, at least one base unit each) and dca (intervalSeconds, count: `amount` each time);
    an optional limitPrice is each child's floor."""
    def seconds(high: int) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": high}
    price = nullable(ref("LimitPrice"))
    return [_submit(token, {"const": "twap"}, ["type", "durationSeconds", "slices"], LISTED, limitPrice=price,
                    durationSeconds=seconds(7 * 24 * 3600), slices=seconds(100),
                    jitterSeconds=nullable({"type": "integer", "minimum": 0, "description": "each slice is delayed by "
                                            "a fixed pseudo-random part of this; less than durationSeconds / slices"})),
            _submit(token, {"const": "dca"}, ["type", "intervalSeconds", "count"], LISTED, limitPrice=price,
                    intervalSeconds=seconds(365 * 24 * 3600), count=seconds(1000)),
            _submit(token, {"const": "dca"}, ["type", "intervalSeconds", "totalAmount"], LISTED, limitPrice=price,
                    intervalSeconds=seconds(365 * 24 * 3600), totalAmount={
                        **amount_of(token), "description": "instead of count: buy `amount` until this much is "
                        "spent, the last purchase what is left (at least amount, at most 1000 times it)"})]


def protective_kinds(token) -> list[dict[str, Any]]:
    """Protective orders selling a listed token: stop_loss (stopPrice, and limitPrice: a
    stop-limit), take_profit (targetPrice), trailing_stop (trailPercent, or trailAmount: one of
    the two, so two kinds), oco (takeProfit and
    stopLoss, each the fields of its type); prices in tokenOut per tokenIn."""
    return [_submit(token, {"const": "stop_loss"}, ["type", "stopPrice"], LISTED,
                    stopPrice=ref("LimitPrice"), limitPrice=_STOP_FLOOR, expiresInSeconds=_EXPIRY),
            _submit(token, {"const": "take_profit"}, ["type", "targetPrice"], LISTED,
                    targetPrice=ref("LimitPrice"), expiresInSeconds=_EXPIRY),
            _submit(token, {"const": "trailing_stop"}, ["type", "trailPercent"], LISTED,
                    trailPercent=_TRAIL_PERCENT, expiresInSeconds=_EXPIRY),
            _submit(token, {"const": "trailing_stop"}, ["type", "trailAmount"], LISTED,
                    trailAmount=_TRAIL_AMOUNT, expiresInSeconds=_EXPIRY),
            _submit(token, {"const": "oco"}, ["type", "takeProfit", "stopLoss"], LISTED,
                    takeProfit=_obj(["targetPrice"], {"targetPrice": ref("LimitPrice")}),
                    stopLoss=_obj(["stopPrice"], {"stopPrice": ref("LimitPrice"), "limitPrice": _STOP_FLOOR}),
                    expiresInSeconds=_EXPIRY)]


DECIMAL = ref("Decimal")
TIMESTAMP = ref("Timestamp")
ORDER_ID = ref("OrderId")
SYMBOL = ref("TokenSymbol")
DEX = ref("Dex")

_ORDER_FIELDS = {
    "orderId": ORDER_ID,
    "status": ref("OrderStatus"),
    "type": ref("OrderType"),
    "tokenIn": SYMBOL,
    "tokenOut": SYMBOL,
    "amount": DECIMAL,
    "slippageBps": {"type": "integer", "minimum": 1, "maximum": 5000},
    "limitPrice": nullable(DECIMAL),
    "expiresInSeconds": nullable({"type": "integer", "minimum": 1}),
    "clientOrderId": nullable({"type": "string"}),
    "createdAt": TIMESTAMP,
    "updatedAt": TIMESTAMP,
    "route": nullable(ref("Route")),
    "fills": {"type": "array", "items": ref("Fill")},
    "error": nullable(ref("OrderError")),
    "attempts": {"type": "integer", "minimum": 0},
    "callbackUrl": nullable({"type": "string", "description": "where the order's events are POSTed (webhooks)"}),
}
# Fields only some types carry (not required of every order).
_PROTECTIVE_FIELDS = {
    "stopPrice": {**DECIMAL, "description": "stop_loss: it sells once the price falls to this (tokenOut per tokenIn); "
                  "only on stop_loss orders"},
    "targetPrice": {**DECIMAL, "description": "take_profit: it sells once the price rises to this (tokenOut per tokenIn), "
                    "never below it (a limit sell at the target); only on take_profit orders"},
    "trailPercent": {**DECIMAL, "description": "trailing_stop: it sells once the price falls this far (percent) below "
                     "the best price seen since it was armed (its events' highWater)"},
    "trailAmount": {**DECIMAL, "description": "trailing_stop: it sells once the price falls this far (tokenOut per "
                    "tokenIn) below the best price seen since it was armed (instead of trailPercent)"},
    "takeProfit": {**_obj(["targetPrice"], {"targetPrice": DECIMAL}), "description": "oco: its take-profit side"},
    "stopLoss": {**_obj(["stopPrice"], {"stopPrice": DECIMAL, "limitPrice": DECIMAL}),
                 "description": "oco: its stop-loss side (limitPrice: its floor, a stop-limit)"},
}
# Orders over time: a parent's schedule and progress, a child's link to its parent.
_SCHEDULE_FIELDS = {
    "durationSeconds": {"type": "integer", "minimum": 1, "description": "twap: the schedule's length"},
    "slices": {"type": "integer", "minimum": 1, "description": "twap: how many children share its amount"},
    "intervalSeconds": {"type": "integer", "minimum": 1, "description": "dca: the time between two children"},
    "count": {"type": "integer", "minimum": 1, "description": "dca: how many children, each of its amount"},
    "totalAmount": {**DECIMAL, "description": "dca up to a total: what it spends in all (count is derived)"},
    "jitterSeconds": {"type": "integer", "minimum": 0, "description": "twap: each slice's delay is below this"},
    "paused": {"type": "boolean", "description": "twap and dca: whether its owner paused the schedule (dca)"},
    "parentId": {**ORDER_ID, "description": "a child: its twap or dca parent"},
    "sliceIndex": {"type": "integer", "minimum": 0, "description": "a child: its place in the schedule, from 0"},
    "children": {"type": "array", "items": ref("Order"),
                 "description": "a parent, read alone: its children by slice"},
    "progress": _obj(["filled", "received", "remaining", "averagePrice", "slices", "created", "settled", "confirmed"], {
        "filled": DECIMAL, "received": DECIMAL, "remaining": DECIMAL, "averagePrice": nullable(DECIMAL),
        "slices": {"type": "integer"}, "created": {"type": "integer"}, "settled": {"type": "integer"},
        "confirmed": {"type": "integer"}}, description="a parent, read alone: tokenIn sold, tokenOut received, "
        "tokenIn left, their ratio; children in all, created, ended, executed"),
}

EVENT_META = {
    "type": "object",
    "description": "What the step adds (see the spec's status table); extra operator fields may appear.",
    "properties": {
        "bestDex": DEX,
        "quotes": {"type": "object",
                   "properties": {d: {"oneOf": [ref("Quote"), ref("VenueRefusal")]} for d in DEXES}},
        "route": ref("Route"),
        "retryReason": {"type": "string", "description": "why a new attempt started (routing, attempt > 1)"},
        "failedSwaps": {"type": "array", "description": "routing (a retry) and failed: the swaps that failed "
                        "since the last event that named any, each with its venue, error code and signature",
                        "items": _obj(["dex", "code", "txHash"], {
                            "dex": DEX, "code": ref("FailureCode"), "txHash": {"type": "string"}})},
        "minAmountOut": DECIMAL,
        "wrapSol": {"type": "boolean"},
        "unwrapSol": {"type": "boolean"},
        "txHash": {"type": "string", "description": "the transaction signature (base58)"},
        "dex": DEX,
        "amountIn": DECIMAL,
        "amountOut": DECIMAL,
        "executedPrice": DECIMAL,
        "legs": {"type": "array", "items": {"type": "object"}},
        "hops": {"type": "array", "items": ref("Hop"), "description": "a route through an intermediate token "
                 "(routing, building, confirmed): each hop with its pair and its legs"},
        "via": {**SYMBOL, "description": "submitted: the intermediate token of the route's one transaction"},
        "error": ref("OrderError"),
        "attempts": {"type": "integer", "minimum": 0},
        "worker": {"type": "string"},
        "quoteMs": {"type": "number"},
        "venueLatencyMs": {"type": "number"},
        "latencyMs": {"type": "number"},
        "trigger": {"type": "string", "enum": ["price", "launch", "stop", "trail", "oco", "halt"],
                    "description": "waiting: what it waits for"},
        "fired": {"type": "string", "enum": ["stopLoss", "takeProfit", "trailingStop"],
                  "description": "waiting: the side of a stop-limit, trailing stop or oco that fired; it alone "
                  "executes"},
        "cancelled": {"type": "string", "enum": ["stopLoss", "takeProfit"],
                      "description": "waiting (oco): the side that will never execute"},
        "highWater": {**DECIMAL, "description": "waiting (trailing_stop): the best price seen, which it trails"},
        "trailPercent": {**DECIMAL, "description": "waiting (trailing_stop): its distance below highWater, in percent"},
        "trailAmount": {**DECIMAL, "description": "waiting (trailing_stop): its distance below highWater, in price"},
        "stopPrice": {**DECIMAL, "description": "waiting (stop_loss, trailing_stop, oco): the price its stop fires at "
                      "(a trailing stop's: highWater less its distance, 0 while its trailAmount exceeds highWater)"},
    },
    "additionalProperties": True,
}

_NON_NEGATIVE_INPUT = {"oneOf": [{"type": "string", "pattern": r"^[0-9]{1,20}(\.[0-9]{1,18})?$"},
                                  {"type": "integer", "minimum": 0, "maximum": 10**18}]}
_KEY_FIELDS = {
    "keyId": {"type": "string"}, "owner": {"type": "string", "description": "whose orders the key acts on"},
    "label": {"type": "string"}, "limits": ref("Limits"),
    "createdAt": nullable(ref("Timestamp")), "createdBy": nullable({"type": "string"}),
    "revokedAt": nullable(ref("Timestamp")), "revokedBy": nullable({"type": "string"}),
    "source": {"type": "string", "enum": ["environment", "managed"]},
    "callbackUrl": nullable({"type": "string", "description": "the default callbackUrl of the owner's orders"}),
}

_LATENCY_MS = {"type": "number", "minimum": 0,
               "description": "on a routing event: the venue's answer came this long after the request"}

_SUBSCRIPTION_ID = {"type": "string", "minLength": 1, "maxLength": 64,
                    "description": "a quote subscription's id, unique on its connection (e.g. q1)"}

SCHEMAS: dict[str, Any] = {
    "Decimal": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
                "description": "an exact decimal number as a string, e.g. \"1.5\"", "examples": ["1.5"]},
    "DecimalInput": {"oneOf": [{"type": "string"}, {"type": "number"}],
                     "description": "a decimal string or a JSON number (read as an exact decimal, never a float)"},
    "Timestamp": {"type": "string", "format": "date-time", "pattern": "Z$",
                  "examples": ["2026-11-25T16:31:49.718Z"]},
    "OrderId": {"type": "string", "format": "uuid"},
    "OrderStatus": {"type": "string", "enum": STATUSES},
    "OrderType": {"type": "string", "enum": ORDER_TYPES},
    "Dex": {"type": "string", "enum": DEXES},
    "TokenSymbol": {"type": "string", "enum": [t.symbol for t in TOKENS]},
    "ErrorCode": {"type": "string", "enum": SPEC_ERROR_CODES + ENGINE_ERROR_CODES},
    "FailureCode": {"type": "string", "enum": list(FAILURE_CODES),
                    "description": "why an order (its `error`, a `failed` event) or one of its swaps failed"},
    "OrderError": _obj(["code", "message"], {"code": ref("FailureCode"), "message": {"type": "string"}}),
    "ErrorObject": _obj(["code", "message"], {
        "code": ref("ErrorCode"), "message": {"type": "string"},
        "field": {"type": "string", "description": "the field at fault, where there is one"},
        "retryAfter": {"type": "integer", "minimum": 1,
                       "description": "`rate_limited`: seconds until a request of this kind is accepted again"},
        # risk_limit (422) only: which limit, its configured value, and the order's figures
        "limit": {"type": "string", "enum": ["maxOrderUsd", "maxOpenOrders", "maxNotional24hUsd"],
                  "description": "`risk_limit`: the limit that refused the order"},
        "value": {"oneOf": [DECIMAL, {"type": "integer", "minimum": 1}],
                  "description": "`risk_limit`: the limit as configured (USD as a decimal string, orders as an integer)"},
        "orderValue": {**DECIMAL,
                       "description": "`risk_limit`: the order's value in USDC at the reference price"},
        "openOrders": {"type": "integer", "minimum": 0,
                       "description": "`risk_limit` (maxOpenOrders): the owner's orders open now"},
        "notional24hUsd": {**DECIMAL,
                           "description": "`risk_limit` (maxNotional24hUsd): what the owner's orders of the last 24 h "
                                          "are worth, cancelled and expired ones aside"},
        "reason": {"type": "string", "description": "`trading_halted`: the halt's reason"},
        "archive": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}$",
                    "description": "`archived` (410): the archive holding the order (YYYY-MM, its month)"}}),
    "Error": _obj(["error"], {"error": ref("ErrorObject")},
                  description="Every error answer, 404 and 405 included; never HTML or a trace."),
    "SubmitRequest": {"anyOf": submit_kinds(), "description": (
        "An order of any type (market, limit, sniper, stop_loss, take_profit, trailing_stop, oco). An unknown "
        "field is an error; null means not given. Tokens by symbol "
        "(any case) or mint; only a sniper order may name a token that has not launched, and only one. Beyond "
        "what JSON Schema says here: tokenIn and tokenOut differ, and the amount has at most tokenIn's decimals "
        "(trailing zeros aside) and fits 2^64-1 base units (400 otherwise). A twap's amount gives each slice at "
        "least one base unit and its jitterSeconds is less than durationSeconds / slices; a dca's totalAmount is "
        "at least its amount and at most 1000 times it (400 otherwise).")},
    "LimitPrice": {"oneOf": [
        {"type": "string", "allOf": [{"pattern": r"^[0-9]{1,14}(?:\.[0-9]{0,14})?$"}, _POSITIVE]},
        {"type": "number", "minimum": 1e-30, "exclusiveMaximum": 1e31}],
        "description": "the least tokenOut per 1 tokenIn: > 0, between 1e-30 and 1e30, at most 28 significant "
                       "digits (the string form here is a strict subset)"},
    "SubmitAccepted": _obj(["orderId", "status", "clientOrderId", "links"], {
        "orderId": ORDER_ID, "status": ref("OrderStatus"), "clientOrderId": nullable({"type": "string"}),
        "links": _obj(["self", "ws"], {"self": {"type": "string"}, "ws": {"type": "string"}}),
    }),
    "Route": {"oneOf": [ref("DirectRoute"), ref("HopRoute")],
              "description": "the pair's own pools (legs: one venue or a split), or a route through an "
                             "intermediate token (hops), which executes as one transaction"},
    "DirectRoute": _obj(["legs", "amountOut", "minAmountOut"], {
        "legs": {"type": "array", "minItems": 1, "items": ref("RouteLeg")},
        "amountOut": DECIMAL, "minAmountOut": DECIMAL,
    }),
    "HopRoute": _obj(["hops", "amountOut", "minAmountOut"], {
        "hops": {"type": "array", "minItems": 2, "maxItems": 2, "items": ref("Hop")},
        "amountOut": DECIMAL, "minAmountOut": {**DECIMAL, "description": "the one minimum of the whole route"},
    }),
    "Hop": _obj(["tokenIn", "tokenOut", "legs"], {
        "tokenIn": SYMBOL, "tokenOut": SYMBOL, "legs": {"type": "array", "minItems": 1, "items": ref("RouteLeg")}},
        description="one hop of a route through an intermediate token: its pair and its venue(s)"),
    "RouteLeg": _obj(["dex", "amountIn", "amountOut"], {"dex": DEX, "amountIn": DECIMAL, "amountOut": DECIMAL}),
    "Fill": _obj(["dex", "amountIn", "amountOut", "txHash"], {
        "dex": DEX, "amountIn": DECIMAL, "amountOut": DECIMAL, "txHash": {"type": "string"},
        "hops": {"type": "array", "items": ref("Hop"),
                 "description": "a route through an intermediate token: each hop as executed, in this one transaction"}}),
    "Order": _obj(list(_ORDER_FIELDS), {**_ORDER_FIELDS, **_PROTECTIVE_FIELDS, **_SCHEDULE_FIELDS},
                  description="An order without its events (list items)."),
    "OrderWithEvents": _obj(list(_ORDER_FIELDS) + ["events"], {
        **_ORDER_FIELDS, **_PROTECTIVE_FIELDS, **_SCHEDULE_FIELDS, "events": {"type": "array", "items": ref("StatusEvent")}}),
    "OrderList": _obj(["orders", "nextCursor"], {
        "orders": {"type": "array", "items": ref("Order")}, "nextCursor": nullable({"type": "string"})}),
    "StatusEvent": _obj(["orderId", "seq", "status", "attempt", "timestamp", "meta"], {
        "orderId": ORDER_ID, "seq": {"type": "integer", "minimum": 1}, "status": ref("OrderStatus"),
        "attempt": {"type": "integer", "minimum": 1}, "timestamp": TIMESTAMP, "meta": EVENT_META,
    }, description="One step of an order: stored in its history and sent as-is to WebSocket listeners."),
    "Quote": _obj(["amountOut", "feeRate", "feeAmount", "priceImpactBps"], {
        "amountOut": DECIMAL, "feeRate": DECIMAL, "feeAmount": DECIMAL,
        "priceImpactBps": {"type": "integer", "minimum": 0}, "latencyMs": _LATENCY_MS}),
    "VenueRefusal": _obj(["error"], {"error": ref("ErrorObject"), "latencyMs": _LATENCY_MS},
                         description="in place of a quote: this venue cannot fill the order"),
    "QuoteAnswer": _obj(["tokenIn", "tokenOut", "amountIn", "quotes", "route"], {
        "tokenIn": SYMBOL, "tokenOut": SYMBOL, "amountIn": DECIMAL,
        "slippageBps": {"type": "integer", "minimum": 1, "maximum": 5000},
        "quotes": _obj(DEXES, {d: {"oneOf": [ref("Quote"), ref("VenueRefusal")]} for d in DEXES}),
        "route": ref("Route"),
    }),
    "Token": _obj(["symbol", "mint", "decimals", "tradable"], {
        "symbol": SYMBOL, "mint": {"type": "string"}, "decimals": {"type": "integer", "minimum": 0},
        "tradable": {"type": "boolean"}}),
    "TokenList": _obj(["tokens"], {"tokens": {"type": "array", "items": ref("Token")}}),
    "SimSwap": _obj(["txHash", "dex", "amountIn", "amountOut", "executedAt"], {
        "txHash": {"type": "string"}, "dex": DEX, "tokenIn": SYMBOL, "tokenOut": SYMBOL,
        "amountIn": DECIMAL, "amountOut": DECIMAL, "executedAt": TIMESTAMP}),
    "SimSwapList": _obj(["swaps"], {"swaps": {"type": "array", "items": ref("SimSwap")}}),
    "Pool": _obj(["dex", "tokenA", "tokenB", "reserveA", "reserveB", "feeRate", "price"], {
        "dex": DEX, "tokenA": SYMBOL, "tokenB": SYMBOL, "reserveA": DECIMAL, "reserveB": DECIMAL,
        "feeRate": DECIMAL, "price": {**DECIMAL, "description": "tokenB per tokenA, now"}}),
    "PoolList": _obj(["pools"], {"pools": {"type": "array", "items": ref("Pool")}}),
    "LaunchRequest": _obj(["token", "inSeconds"], {
        "token": {**token_input(UNLAUNCHED), "description": "a token not launched yet (each launches once)"},
        "inSeconds": {"type": "number", "minimum": 0, "maximum": 604800}}),
    "LaunchAccepted": _obj(["token", "launchAt"], {"token": SYMBOL, "launchAt": TIMESTAMP}),
    "HaltRequest": {"oneOf": halt_kinds(), "description": (
        "What to halt or resume: everything, one key's orders (its owner's), or a pair in both directions "
        "(SOL/USDC halts USDC to SOL too; two different tokens, by symbol in any case or mint).")},
    "Halt": _obj(["id", "scope", "reason", "createdAt", "createdBy"], {
        "id": {"type": "string"}, "scope": {"type": "string", "enum": list(SCOPES)},
        "keyId": {"type": "string", "description": "scope key: the key halted"},
        "pair": {"type": "string",
                 "description": "scope pair: the pair halted, as TOKEN/TOKEN in the token list's order"},
        "reason": {"type": "string"}, "createdAt": TIMESTAMP,
        "createdBy": {"type": "string", "description": "the operator key's id"},
        "resumedAt": TIMESTAMP, "resumedBy": {"type": "string"}}),
    "HaltList": _obj(["halts"], {"halts": {"type": "array", "items": ref("Halt")}}),
    "Health": _obj(["status"], {"status": {"const": "ok"}}),
    "Ready": _obj(["status"], {"status": {"const": "ready"}}),
    # The operator API (/api/admin/): managed trading keys and the audit log.
    "LimitsInput": _obj([], {
        "maxOrderUsd": _NON_NEGATIVE_INPUT, "maxNotional24hUsd": _NON_NEGATIVE_INPUT,
        "maxOpenOrders": {"type": "integer", "minimum": 0, "maximum": 10**9}},
        description="The owner's risk limits, each optional and non-negative (USD amounts as decimal strings "
                    "or numbers)."),
    "Limits": _obj([], {"maxOrderUsd": DECIMAL, "maxNotional24hUsd": DECIMAL,
                        "maxOpenOrders": {"type": "integer", "minimum": 0}}),
    "KeyCreateRequest": _obj([], {
        "label": {"type": "string", "maxLength": 200, "description": "what the key is for (printable text)"},
        "owner": {"type": "string", "description": "the keyId of an existing trading key whose owner (and "
                  "orders) the new key shares: rotation without downtime"},
        "limits": ref("LimitsInput"),
        "callbackUrl": nullable({**ref("CallbackUrl"), "description": "the webhook URL of the owner's orders that "
                                 "name none"})}),
    "ApiKey": _obj(list(_KEY_FIELDS), _KEY_FIELDS, description=(
        "A trading key, never the key itself. `source`: `environment` (API_KEYS; revoked by removing it "
        "there) or `managed` (created through this API).")),
    "CreatedKey": _obj(["key", *_KEY_FIELDS], {"key": {
        "type": "string", "minLength": 32, "description": "the new key: shown this once, stored only as a digest"},
        **_KEY_FIELDS}),
    "KeyList": _obj(["keys"], {"keys": {"type": "array", "items": ref("ApiKey")}}),
    "CancelAllAnswer": _obj(["keyId", "owner", "cancelled", "notCancelled"], {
        "keyId": {"type": "string"}, "owner": {"type": "string"},
        "cancelled": {"type": "array", "items": ORDER_ID},
        "notCancelled": {"type": "array", "items": _obj(["orderId", "status"], {
            "orderId": ORDER_ID, "status": ref("OrderStatus")})}}),
    "AuditEntry": _obj(["id", "at", "actor", "action", "target", "request", "status", "answer"], {
        "id": {"type": "integer"}, "at": TIMESTAMP, "actor": {"type": "string", "description": "the operator "
        "key's id"}, "action": {"type": "string", "description": "e.g. keys.create, keys.revoke, "
        "keys.cancel_all, sim.launch"}, "target": {"type": "string"}, "request": {"type": "object"},
        "status": {"type": "integer"}, "answer": {"description": "the answer's body (a created key as ***)"}}),
    "AuditPage": _obj(["entries", "nextBefore"], {
        "entries": {"type": "array", "items": ref("AuditEntry")}, "nextBefore": nullable({"type": "integer"})}),
    # Webhooks (storage/webhooks.py).
    "CallbackUrl": {"type": "string", "maxLength": 2048, "pattern": _CALLBACK_PATTERN, "description": (
        "Webhook: each status event of the order is POSTed here (the event object as the body), signed "
        "(`X-Engine-Signature: sha256=HMAC-SHA256(secret, X-Engine-Timestamp + \".\" + body)`, the secret from "
        "GET /api/webhooks/secret), with `X-Engine-Event-Seq`, `X-Engine-Order-Id` and `X-Engine-Timestamp`; "
        "at least once, in seq order per order, retried with backoff for WEBHOOK_RETRY_SECONDS. http or https, "
        "no credentials, no fragment. Unless the operator sets WEBHOOK_ALLOW_PRIVATE, a host written as a "
        "loopback, private, link-local, multicast or otherwise non-public address, or localhost, is refused "
        "(400 `invalid_field`), and a name resolving to one is refused at delivery. The pattern here is "
        "stricter than the engine (a host name with a short alphabetic top-level domain).")},
    "Delivery": _obj(["seq", "url", "status", "attempts", "createdAt", "lastAttemptAt", "deliveredAt",
                      "nextAttemptAt", "responseStatus", "error"], {
        "seq": {"type": "integer", "minimum": 1, "description": "the event delivered"},
        "url": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "delivered", "failed"],
                   "description": "failed: given up (after WEBHOOK_RETRY_SECONDS, or a refused address)"},
        "attempts": {"type": "integer", "minimum": 0}, "createdAt": TIMESTAMP,
        "lastAttemptAt": nullable(TIMESTAMP), "deliveredAt": nullable(TIMESTAMP),
        "nextAttemptAt": nullable(TIMESTAMP), "responseStatus": nullable({"type": "integer"}),
        "error": nullable({"type": "string", "description": "why the last try failed"})}),
    "DeliveryList": _obj(["orderId", "deliveries"], {
        "orderId": ORDER_ID, "deliveries": {"type": "array", "items": ref("Delivery")}}),
    "WebhookSecret": _obj(["secret", "algorithm", "signedPayload"], {
        "secret": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "algorithm": {"const": "HMAC-SHA256"},
        "signedPayload": {"const": "{X-Engine-Timestamp}.{body}"}}),
    # WebSocket frames (described in words on the WebSocket paths).
    "AcceptedFrame": _obj(["type", "orderId", "links"], {
        "type": {"const": "accepted"}, "orderId": ORDER_ID, "status": ref("OrderStatus"),
        "clientOrderId": nullable({"type": "string"}), "links": {"type": "object"}}),
    "ErrorFrame": _obj(["type", "error"], {"type": {"const": "error"}, "error": ref("ErrorObject")}),
    "SubscribedFrame": _obj(["type", "orderId"], {"type": {"const": "subscribed"}, "orderId": ORDER_ID}),
    "UnsubscribedFrame": _obj(["type", "orderId"], {"type": {"const": "unsubscribed"}, "orderId": ORDER_ID}),
    "SubscribeCommand": _obj(["subscribe"], {"subscribe": ORDER_ID}),
    "UnsubscribeCommand": _obj(["unsubscribe"], {"unsubscribe": ORDER_ID}),
    "SubscribeQuoteCommand": _obj(["action", "tokenIn", "tokenOut", "amount"], {
        "action": {"const": "subscribeQuote"}, "tokenIn": {"type": "string"}, "tokenOut": {"type": "string"},
        "amount": {"type": ["string", "number"]}, "slippageBps": {"type": "integer", "minimum": 1, "maximum": 5000},
    }, description="Stream the quote GET /api/quote gives for these fields (validated as there)."),
    "UnsubscribeQuoteCommand": _obj(["action", "subscriptionId"], {
        "action": {"const": "unsubscribeQuote"}, "subscriptionId": _SUBSCRIPTION_ID}),
    "QuoteSubscribedFrame": _obj(["type", "subscriptionId", "tokenIn", "tokenOut", "amount", "slippageBps"], {
        "type": {"const": "quoteSubscribed"}, "subscriptionId": _SUBSCRIPTION_ID, "tokenIn": SYMBOL,
        "tokenOut": SYMBOL, "amount": DECIMAL, "slippageBps": {"type": "integer", "minimum": 1, "maximum": 5000}}),
    "QuoteUnsubscribedFrame": _obj(["type", "subscriptionId"], {
        "type": {"const": "quoteUnsubscribed"}, "subscriptionId": _SUBSCRIPTION_ID}),
    "QuoteErrorFrame": _obj(["type", "subscriptionId", "error"], {
        "type": {"const": "error"}, "subscriptionId": _SUBSCRIPTION_ID, "error": ref("ErrorObject")},
        description="The subscription's quote cannot be given now (e.g. no_route); it stays subscribed."),
}
# A pushed quote: the body of GET /api/quote with the frame's type and the subscription's id.
SCHEMAS["QuoteFrame"] = _obj(
    ["type", "subscriptionId", *SCHEMAS["QuoteAnswer"]["required"]],
    {"type": {"const": "quote"}, "subscriptionId": _SUBSCRIPTION_ID, **SCHEMAS["QuoteAnswer"]["properties"]},
    description="Pushed when the subscription's quote changed (at most once per QUOTE_STREAM_INTERVAL_MS).")
