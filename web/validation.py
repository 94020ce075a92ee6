"""Turning request bodies and query strings into validated values, or a ValidationError.

Pure functions: no storage, no Tornado. Numbers are exact: JSON numbers are read as
Decimal or int, never as binary floats, and every range check works on the digits so
that "1e999999" is rejected without ever building a huge integer.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from config import Token, find_token
from storage.records import ORDER_TYPES, OrderDraft
from storage.webhooks import CallbackRefused, check_url
from web.errors import ValidationError
from web.validation_protective import parse_protective

__all__ = ["ValidationError", "QuoteRequest", "parse_json_object", "parse_order", "parse_quote",
           "parse_quote_command", "parse_amount", "parse_token"]

MAX_BASE_UNITS = 2**64 - 1  # amounts are u64 on Solana
ORDER_FIELDS = ("tokenIn", "tokenOut", "amount", "type", "slippageBps", "limitPrice",
                "expiresInSeconds", "clientOrderId", "callbackUrl", "stopPrice", "targetPrice",
                "trailPercent", "trailAmount", "takeProfit", "stopLoss")
# Orders over time: the schedule fields of each parent type, each (low, high) as integers.
SCHEDULE_FIELDS = {"twap": {"durationSeconds": (1, 7 * 24 * 3600), "slices": (1, 100)},
                   "dca": {"intervalSeconds": (1, 365 * 24 * 3600), "count": (1, 1000)}}
ORDER_FIELDS += tuple(name for fields in SCHEDULE_FIELDS.values() for name in fields) + ("jitterSeconds",
                                                                                          "totalAmount")
REQUIRED_FIELDS = ("tokenIn", "tokenOut", "amount")
DEFAULT_SLIPPAGE_BPS = 50
MAX_EXPIRY_SECONDS = 365 * 24 * 3600
_DECIMAL_TEXT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT_TEXT = re.compile(r"\d{1,12}")
_PRICE_DIGITS = 28  # what storage can round-trip exactly


def _exact_int(text: str) -> int | Decimal:
    # int() refuses more than 4300 digits with a ValueError; such a number is out of
    # every range anyway, and Decimal holds it exactly.
    return int(text) if len(text) <= 100 else Decimal(text)


def _reject_constant(name: str) -> Any:
    raise ValidationError("invalid_json", f"{name} is not valid JSON; numbers must be finite")


def parse_json_object(body: bytes | str) -> dict[str, Any]:
    """Parse a UTF-8 JSON object exactly (Decimal floats, exact ints, no NaN/Infinity)."""
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
        value = json.loads(text, parse_float=Decimal, parse_int=_exact_int, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValidationError("invalid_json", "the body is not UTF-8") from None
    except RecursionError:
        raise ValidationError("invalid_json", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and Decimal/int conversion errors
        raise ValidationError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError("invalid_json", "the body must be a JSON object")
    return value


def _as_decimal(value: Any, field: str) -> Decimal:
    """A JSON number or a decimal string as an exact Decimal; invalid_field otherwise."""
    if isinstance(value, bool):
        raise ValidationError("invalid_field", f"{field} must be a decimal string or number, not a boolean", field)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str) and len(value) <= 200 and _DECIMAL_TEXT.fullmatch(value):
        try:
            return Decimal(value)
        except InvalidOperation:  # the regex should make this unreachable
            pass
    raise ValidationError("invalid_field", f"{field} must be a decimal string or number such as \"1.5\"", field)


def _digits(value: Decimal) -> tuple[tuple[int, ...], int]:
    """Significant digits and exponent of a finite Decimal, trailing zeros removed (exact)."""
    _, digits, exponent = value.as_tuple()
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    zeros = min(zeros, len(digits) - 1)  # keep one digit of zero
    return tuple(digits[:len(digits) - zeros]), exponent + zeros


def parse_amount(value: Any, token: Token, field: str = "amount") -> tuple[Decimal, int]:
    """An exact positive amount of `token`: (whole-token Decimal, base units)."""
    amount = _as_decimal(value, field)
    if amount <= 0:
        raise ValidationError("invalid_amount", f"{field} must be greater than 0", field)
    digits, exponent = _digits(amount)
    if -exponent > token.decimals:
        raise ValidationError("too_many_decimals",
                              f"{field} has more than {token.decimals} decimals, the most {token.symbol} has", field)
    if amount.adjusted() > 40:  # far beyond u64 base units; checked before building the integer
        raise ValidationError("amount_too_large", f"{field} is too large", field)
    coefficient = int("".join(map(str, digits)))
    base = coefficient * 10 ** (exponent + token.decimals)
    if base > MAX_BASE_UNITS:
        limit = token.to_whole(MAX_BASE_UNITS)
        raise ValidationError("amount_too_large",
                              f"{field} is too large: at most {limit} {token.symbol} (2^64-1 base units)", field)
    return token.to_whole(base), base


def parse_token(value: Any, field: str) -> Token:
    """A token named by symbol (any case) or mint; unknown_token otherwise."""
    if not isinstance(value, str):
        raise ValidationError("invalid_field", f"{field} must be a token symbol or mint address", field)
    token = find_token(value) if value else None
    if token is None:
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise ValidationError("unknown_token", f"{field}: unknown token {shown!r}", field)
    return token


def _as_int(value: Any, field: str, low: int, high: int) -> int:
    """An integer JSON number (an integral value written as 1e2 or 100.0 is fine) in [low, high]."""
    message = f"{field} must be an integer from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ValidationError("invalid_field", message, field)
    if isinstance(value, Decimal):
        if not value.is_finite() or value.adjusted() > 20 or value != value.to_integral_value():
            raise ValidationError("invalid_field", message, field)
        value = int(value)
    if not low <= value <= high:
        raise ValidationError("invalid_field", message, field)
    return value


def _limit_price(value: Any, field: str = "limitPrice") -> Decimal:
    price = _as_decimal(value, field)
    if price <= 0:
        raise ValidationError("invalid_field", f"{field} must be greater than 0", field)
    digits, _ = _digits(price)
    if not -30 <= price.adjusted() <= 30 or len(digits) > _PRICE_DIGITS:
        message = f"{field} must be between 1e-30 and 1e30 with at most {_PRICE_DIGITS} significant digits"
        raise ValidationError("invalid_field", message, field)
    return price


def _client_order_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not all(" " <= c <= "~" for c in value):
        raise ValidationError("invalid_field", "clientOrderId must be 1 to 64 printable ASCII characters",
                              "clientOrderId")
    return value


def parse_callback_url(value: Any, allow_private: bool) -> str:
    """A webhook URL the engine may call (storage.webhooks.check_url says which); invalid_field."""
    try:
        check_url(value, allow_private)
    except CallbackRefused as exc:
        raise ValidationError("invalid_field", str(exc), "callbackUrl") from None
    return value


def parse_order(body: bytes | str, owner: str = "", allow_private_callbacks: bool = False) -> OrderDraft:
    """Validate a submit body (spec: Submit) into an OrderDraft with token symbols."""
    data = parse_json_object(body)
    for name in data:
        if name not in ORDER_FIELDS:
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise ValidationError("unknown_field", f"unknown field {shown!r}", shown)
    for name in REQUIRED_FIELDS:
        if name not in data:
            raise ValidationError("missing_field", f"{name} is required", name)
    # An explicit null on an optional field means "not given" (responses show nulls too).
    given = {name: value for name, value in data.items() if value is not None or name in REQUIRED_FIELDS}
    token_in = parse_token(given["tokenIn"], "tokenIn")
    token_out = parse_token(given["tokenOut"], "tokenOut")
    if token_in == token_out:
        raise ValidationError("same_token", f"tokenIn and tokenOut are both {token_in.symbol}", "tokenOut")
    amount, base_units = parse_amount(given["amount"], token_in)
    order_type = given.get("type", "market")
    if order_type not in ORDER_TYPES:
        raise ValidationError("invalid_field", "type must be one of " + ", ".join(ORDER_TYPES), "type")
    slippage = _as_int(given.get("slippageBps", DEFAULT_SLIPPAGE_BPS), "slippageBps", 1, 5000)
    limit_price = None
    if order_type == "limit":
        if "limitPrice" not in given:
            raise ValidationError("missing_field", "limitPrice is required for a limit order", "limitPrice")
        limit_price = _limit_price(given["limitPrice"])
    elif "limitPrice" in given and order_type in SCHEDULE_FIELDS:  # each child's floor
        limit_price = _limit_price(given["limitPrice"])
    elif "limitPrice" in given and order_type != "stop_loss":  # a stop_loss's is its floor (a stop-limit)
        raise ValidationError("invalid_field", "limitPrice applies to limit, stop_loss, twap and dca orders only",
                              "limitPrice")
    schedule = _schedule(order_type, given, base_units, token_in)
    stop_price = _protective_prices(order_type, given)
    limit_price = _target_price(order_type, given, limit_price)
    protective = parse_protective(order_type, given, _limit_price, _as_decimal)
    if protective.target_price is not None:  # oco: its takeProfit is kept as a take_profit's is
        limit_price, stop_price = protective.target_price, protective.stop_price
    expires = None
    if "expiresInSeconds" in given:
        if order_type == "market" or order_type in SCHEDULE_FIELDS:
            raise ValidationError("invalid_field", "expiresInSeconds applies to limit and sniper orders only",
                                  "expiresInSeconds")
        expires = _as_int(given["expiresInSeconds"], "expiresInSeconds", 1, MAX_EXPIRY_SECONDS)
    client_id = _client_order_id(given["clientOrderId"]) if "clientOrderId" in given else None
    callback = parse_callback_url(given["callbackUrl"], allow_private_callbacks) if "callbackUrl" in given else None
    return OrderDraft(token_in=token_in.symbol, token_out=token_out.symbol, amount=amount, type=order_type,
                      slippage_bps=slippage, limit_price=limit_price, expires_in_seconds=expires,
                      client_order_id=client_id, owner=owner, callback_url=callback,
                      stop_price=stop_price, stop_limit_price=protective.stop_limit_price,
                      trail_percent=protective.trail_percent, trail_amount=protective.trail_amount,
                      schedule=schedule)


def _schedule(order_type: str, given: Mapping[str, Any], base_units: int, token_in: Token) -> dict[str, Any] | None:
    """A twap's durationSeconds and slices, a dca's intervalSeconds and count: each required on
    its type and refused on every other. A twap's amount must give every slice at least one base
    unit of tokenIn (it is split in equal slices, the last one taking what rounding leaves). A dca
    may give `totalAmount` instead of `count`: as many purchases of `amount` as it takes, the
    last one what is left."""
    for other, fields in SCHEDULE_FIELDS.items():
        for name in fields:
            if other != order_type and name in given:
                raise ValidationError("invalid_field", f"{name} applies to {other} orders only", name)
    if order_type != "twap" and "jitterSeconds" in given:
        raise ValidationError("invalid_field", "jitterSeconds applies to twap orders only", "jitterSeconds")
    if order_type == "dca" and "totalAmount" in given:
        return _dca_up_to_total(given, base_units, token_in)
    if "totalAmount" in given:
        raise ValidationError("invalid_field", "totalAmount applies to dca orders only", "totalAmount")
    if order_type not in SCHEDULE_FIELDS:
        return None
    schedule = {}
    for name, (low, high) in SCHEDULE_FIELDS[order_type].items():
        if name not in given:
            raise ValidationError("missing_field", f"{name} is required for a {order_type} order", name)
        schedule[name] = _as_int(given[name], name, low, high)
    if order_type == "twap" and base_units < schedule["slices"]:
        raise ValidationError("invalid_amount", "amount is too small to split into that many slices", "amount")
    if order_type == "twap" and "jitterSeconds" in given:  # each slice delayed by up to this, less than a step
        step = schedule["durationSeconds"] / schedule["slices"]
        jitter = _as_int(given["jitterSeconds"], "jitterSeconds", 0, MAX_EXPIRY_SECONDS)
        if jitter >= step:
            raise ValidationError("invalid_field", f"jitterSeconds must be less than durationSeconds / slices "
                                                   f"({step:g}), so the slices keep their order", "jitterSeconds")
        schedule["jitterSeconds"] = jitter
    return schedule


def _dca_up_to_total(given: Mapping[str, Any], base_units: int, token_in: Token) -> dict[str, Any]:
    """A dca bounded by a total: its count is derived (at most the dca's limit), stored with it."""
    if "count" in given:
        raise ValidationError("invalid_field", "give a dca either count or totalAmount, not both", "totalAmount")
    if "intervalSeconds" not in given:
        raise ValidationError("missing_field", "intervalSeconds is required for a dca order", "intervalSeconds")
    low, high = SCHEDULE_FIELDS["dca"]["intervalSeconds"]
    interval = _as_int(given["intervalSeconds"], "intervalSeconds", low, high)
    try:
        total, total_units = parse_amount(given["totalAmount"], token_in)
    except ValidationError as exc:
        raise ValidationError(exc.code, exc.message.replace("amount", "totalAmount", 1), "totalAmount") from None
    count = -(-total_units // base_units)
    if total_units < base_units or count > SCHEDULE_FIELDS["dca"]["count"][1]:
        raise ValidationError("invalid_field", f"totalAmount must be at least amount and at most "
                                               f"{SCHEDULE_FIELDS['dca']['count'][1]} times it", "totalAmount")
    return {"intervalSeconds": interval, "count": count, "totalAmount": format(total.normalize(), "f")}


def _protective_prices(order_type: str, given: Mapping[str, Any]) -> Decimal | None:
    """stopPrice of a stop_loss order (tokenOut per tokenIn, as limitPrice); given only there."""
    return _price_of_type(order_type, given, "stop_loss", "stopPrice")


def _target_price(order_type: str, given: Mapping[str, Any], limit_price: Decimal | None) -> Decimal | None:
    """targetPrice of a take_profit order, given only there; it is stored as the order's limit
    price: a take_profit is a limit sell at its target (it never executes below it)."""
    target = _price_of_type(order_type, given, "take_profit", "targetPrice")
    return limit_price if target is None else target


def _price_of_type(order_type: str, given: Mapping[str, Any], owner_type: str, field: str) -> Decimal | None:
    """The price `field`, required on orders of `owner_type` and refused on every other type."""
    if order_type != owner_type:
        if field in given:
            raise ValidationError("invalid_field", f"{field} applies to {owner_type} orders only", field)
        return None
    if field not in given:
        raise ValidationError("missing_field", f"{field} is required for a {owner_type} order", field)
    return _limit_price(given[field], field)


@dataclass(frozen=True)
class QuoteRequest:
    """A validated `/api/quote` query."""

    token_in: Token
    token_out: Token
    amount: Decimal
    amount_base: int
    slippage_bps: int


QUOTE_PARAMS = ("tokenIn", "tokenOut", "amount", "slippageBps")


def single_params(arguments: Mapping[str, list[bytes]], allowed: tuple[str, ...]) -> dict[str, str]:
    """Query arguments as one string each; unknown or repeated names are errors."""
    params: dict[str, str] = {}
    for name, values in arguments.items():
        if name not in allowed:
            raise ValidationError("unknown_field", f"unknown query parameter {name[:64]!r}", name[:64])
        if len(values) != 1:
            raise ValidationError("invalid_field", f"{name} must be given once", name)
        try:
            params[name] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("invalid_field", f"{name} is not UTF-8", name) from None
    return params


def parse_int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A decimal-digits query parameter in [low, high], or `default` when absent."""
    raw = params.get(name)
    if raw is None:
        return default
    if not _INT_TEXT.fullmatch(raw) or not low <= int(raw) <= high:
        raise ValidationError("invalid_field", f"{name} must be an integer from {low} to {high}", name)
    return int(raw)


QUOTE_COMMAND_FIELDS = ("action", "tokenIn", "tokenOut", "amount", "slippageBps")


def parse_quote_command(data: Mapping[str, Any]) -> QuoteRequest:
    """Validate a `subscribeQuote` frame (a parsed JSON object) with the rules and codes of
    `/api/quote`; the amount may be a string or a JSON number, as in a submit."""
    for name in data:
        if name not in QUOTE_COMMAND_FIELDS:
            raise ValidationError("unknown_field", f"unknown field {name[:64]!r}", name[:64])
    request = _quote_request(data)
    if data.get("slippageBps") is None:
        return request
    return replace(request, slippage_bps=_as_int(data["slippageBps"], "slippageBps", 1, 5000))


def _quote_request(values: Mapping[str, Any], slippage_bps: int = DEFAULT_SLIPPAGE_BPS) -> QuoteRequest:
    """The pair and amount of a quote (query parameters or a frame's fields), checked."""
    for name in ("tokenIn", "tokenOut", "amount"):
        if name not in values:
            raise ValidationError("missing_field", f"{name} is required", name)
    token_in = parse_token(values["tokenIn"], "tokenIn")
    token_out = parse_token(values["tokenOut"], "tokenOut")
    if token_in == token_out:
        raise ValidationError("same_token", f"tokenIn and tokenOut are both {token_in.symbol}", "tokenOut")
    amount, base = parse_amount(values["amount"], token_in)
    return QuoteRequest(token_in, token_out, amount, base, slippage_bps)


def parse_quote(arguments: Mapping[str, list[bytes]]) -> QuoteRequest:
    """Validate `/api/quote` query arguments with the same rules and codes as a submit."""
    params = single_params(arguments, QUOTE_PARAMS)
    request = _quote_request(params)
    return replace(request, slippage_bps=parse_int_param(params, "slippageBps", DEFAULT_SLIPPAGE_BPS, 1, 5000))
