"""The fields of the protective orders beyond stopPrice and targetPrice (web/validation.py has
those): a stop_loss's floor (`limitPrice`: a stop-limit), a trailing stop's distance (`trailPercent`,
or `trailAmount` in price units: exactly one of the two) and an oco's two sides
(`takeProfit: {targetPrice}`, `stopLoss: {stopPrice, limitPrice?}`).

Each is required on its own type and refused on every other; a field of a side that is not its
own is `unknown_field`, named with its side (`stopLoss.trailPercent`).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping

from web.errors import ValidationError

MIN_TRAIL_PERCENT = Decimal("0.01")
MAX_TRAIL_PERCENT = Decimal("50")
TRAIL_FIELDS = ("trailPercent", "trailAmount")  # a trailing stop's distance: in percent, or in price


@dataclass(frozen=True)
class Protective:
    """What a submit adds for a protective order (None where it does not apply)."""

    stop_limit_price: Decimal | None = None  # stop_loss's limitPrice, or oco's stopLoss.limitPrice
    trail_percent: Decimal | None = None
    trail_amount: Decimal | None = None  # trailing_stop: its distance in price (tokenOut per tokenIn)
    target_price: Decimal | None = None  # oco: takeProfit.targetPrice
    stop_price: Decimal | None = None  # oco: stopLoss.stopPrice


Parse = Callable[[Any, str], Decimal]


def parse_protective(order_type: str, given: Mapping[str, Any], price: Parse, number: Parse) -> Protective:
    """The protective fields of a submit body (explicit nulls already dropped); ValidationError.
    `price` and `number` are web/validation.py's rules for a price field and a decimal, passed
    in so that every price field has one rule (and this module imports nothing of it)."""
    trail, trail_amount = _trail(order_type, given, price, number)
    for name in ("takeProfit", "stopLoss"):
        if name in given and order_type != "oco":
            raise ValidationError("invalid_field", f"{name} applies to oco orders only", name)
    if order_type == "stop_loss":
        if "limitPrice" not in given or "stopPrice" not in given:
            return Protective()
        floor = price(given["limitPrice"], "limitPrice")
        _floor_below_stop(floor, price(given["stopPrice"], "stopPrice"), "limitPrice")
        return Protective(stop_limit_price=floor)
    if order_type == "trailing_stop":
        return Protective(trail_percent=trail, trail_amount=trail_amount)
    if order_type != "oco":
        return Protective()
    take = _side(given, "takeProfit", ("targetPrice",), ("targetPrice",))
    stop = _side(given, "stopLoss", ("stopPrice", "limitPrice"), ("stopPrice",))
    target = price(take["targetPrice"], "takeProfit.targetPrice")
    stop_price = price(stop["stopPrice"], "stopLoss.stopPrice")
    floor = None
    if stop.get("limitPrice") is not None:
        floor = price(stop["limitPrice"], "stopLoss.limitPrice")
        _floor_below_stop(floor, stop_price, "stopLoss.limitPrice")
    return Protective(stop_limit_price=floor, target_price=target, stop_price=stop_price)


def _trail(order_type: str, given: Mapping[str, Any], price: Parse, number: Parse) -> tuple[Decimal | None,
                                                                                         Decimal | None]:
    """(trailPercent, trailAmount) of a trailing_stop: exactly one of them; neither on other types."""
    if order_type != "trailing_stop":
        for name in TRAIL_FIELDS:
            if name in given:
                raise ValidationError("invalid_field", f"{name} applies to trailing_stop orders only", name)
        return None, None
    if "trailPercent" in given and "trailAmount" in given:
        raise ValidationError("invalid_field", "a trailing_stop takes trailPercent or trailAmount, not both",
                              "trailAmount")
    if "trailAmount" in given:  # a distance in price: the rule of every price field
        return None, price(given["trailAmount"], "trailAmount")
    if "trailPercent" not in given:
        raise ValidationError("missing_field", "trailPercent or trailAmount is required for a trailing_stop order",
                              "trailPercent")
    percent = number(given["trailPercent"], "trailPercent")
    if not MIN_TRAIL_PERCENT <= percent <= MAX_TRAIL_PERCENT or percent != percent.quantize(MIN_TRAIL_PERCENT):
        raise ValidationError("invalid_field", f"trailPercent must be from {MIN_TRAIL_PERCENT} to {MAX_TRAIL_PERCENT} "
                              "with at most 2 decimals", "trailPercent")
    return percent.normalize(), None


def _side(given: Mapping[str, Any], name: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    """One side of an oco: a JSON object of its type's fields."""
    if name not in given:
        raise ValidationError("missing_field", f"{name} is required for an oco order", name)
    side = given[name]
    if not isinstance(side, dict):
        raise ValidationError("invalid_field", f"{name} must be an object with " + " and ".join(required), name)
    for field in side:
        if field not in allowed:
            shown = field if len(field) <= 64 else field[:64] + "..."
            raise ValidationError("unknown_field", f"unknown field {shown!r} in {name}", f"{name}.{shown}")
    for field in required:
        if side.get(field) is None:
            raise ValidationError("missing_field", f"{name}.{field} is required", f"{name}.{field}")
    return side


def _floor_below_stop(floor: Decimal, stop: Decimal, field: str) -> None:
    """A stop-limit's floor at or below its stop: above it, the stop would fire into a limit that
    cannot fill at the price that fired it."""
    if floor > stop:
        raise ValidationError("invalid_field", f"{field} must not be above the stop price", field)
