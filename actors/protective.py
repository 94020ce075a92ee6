"""The protective orders' rules, as the OrderActor applies them (no actor, no storage here).

- stop_loss: sells at market once the pair's price falls to `stopPrice`; with a floor (a
  stop-limit, `limitPrice`) it becomes a limit sell at the floor once its stop fired.
- take_profit: a limit sell at `targetPrice` (LIMIT_TYPES).
- trailing_stop: a stop `trailPercent` (or `trailAmount`, in price) below the best price seen since
  it was armed.
- oco: a take-profit and a stop-loss in one order; the first side to fire is the only one that
  ever executes (both at once: the stopLoss).

Which side fired is stored in a `waiting` event (`meta.fired`) before that side executes, by the
trigger book or by the OrderActor when it finds the trigger already met: the first such event
decides for every later attempt and every later worker.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from storage.records import decimal_str

# The types whose firing is stored (`fired`) before they execute; a plain stop_loss is not one
# (once fired it is a market order, whichever worker runs it).
MARKED = ("trailing_stop", "oco")
LIMIT_TYPES = ("limit", "take_profit")  # take_profit: a limit sell at its target price


def marks_firing(order) -> bool:
    """True for the orders that store their firing: stop-limits, trailing stops and ocos."""
    return order.type in MARKED or (order.type == "stop_loss" and order.stop_limit_price is not None)


def fired_side(events: Iterable | None) -> str | None:
    """The side named by the order's first stored firing (`stopLoss`, `takeProfit`,
    `trailingStop`), or None if none fired yet."""
    for event in events or ():
        if event.status == "waiting" and event.meta.get("fired"):
            return event.meta["fired"]
    return None


def stored_high(events: Iterable | None) -> Decimal | None:
    """The best price a trailing stop's events hold (its high-water mark), or None."""
    marks = [Decimal(e.meta["highWater"]) for e in events or () if e.status == "waiting" and "highWater" in e.meta]
    return max(marks, default=None)


def floor_price(order, side: str | None) -> Decimal | None:
    """The least price the order may execute at now (tokenOut per tokenIn), or None for a market
    execution: a limit's or take_profit's limit, a fired stop-limit's floor, the fired side's of
    an oco. None too for a stop-limit or oco that has not fired (the trigger book watches them)."""
    if order.type in LIMIT_TYPES:
        return order.limit_price
    if order.type == "stop_loss" and side is not None:
        return order.stop_limit_price
    if order.type == "oco" and side == "stopLoss":
        return order.stop_limit_price
    if order.type == "oco" and side == "takeProfit":
        return order.limit_price
    return None


def trail_stop(high: Decimal, percent: Decimal | None, amount: Decimal | None = None) -> Decimal:
    """The stop a trailing stop's best price makes: `amount` below it (never below 0: a distance
    larger than the price is a stop no price reaches yet), else `percent` below it."""
    if amount is not None:
        return max(high - amount, Decimal(0))
    return high * (1 - percent / 100)


def trail_distance(order) -> dict[str, str]:
    """How a trailing stop's events name its distance: `trailAmount` (price) or `trailPercent`."""
    if order.trail_amount is not None:
        return {"trailAmount": decimal_str(order.trail_amount)}
    return {"trailPercent": decimal_str(order.trail_percent)}
