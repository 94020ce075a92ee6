"""The swaps of one order: the legs of its current attempt, and the fills it already has.

An order routed to both venues is sent as two swaps (legs), each with its own signature and
minimum output. A leg that fails is retried on its own: the next attempt routes only what is
not filled yet, and the legs already filled are carried over (in that attempt's `routing`
event, as `filledLegs`, so an order resumed after a crash knows them). The order is confirmed
once everything is filled. Pure bookkeeping: no actor, no storage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from config import Token, find_token
from storage.records import decimal_str
from storage.venues.base import HopSwap


@dataclass
class LegRun:
    """One swap of the current attempt and what became of it."""

    dex: str
    amount_in: int
    min_out: int
    signature: str
    state: str = "sent"  # sent | unknown (ask the venue) | confirmed | failed
    amount_out: int | None = None
    error_code: str | None = None
    message: str | None = None
    retriable: bool = True
    # A route through an intermediate token: its hops (planned, then as executed). The whole
    # route is this one transaction, one signature: all its hops land or none does.
    hops: tuple[HopSwap, ...] = ()


@dataclass
class Fill:
    """An executed swap of the order."""

    dex: str
    amount_in: int
    amount_out: int
    signature: str
    hops: tuple[HopSwap, ...] = ()  # a route through an intermediate token: each hop as executed

    def to_api(self, token_in: Token, token_out: Token) -> dict[str, Any]:
        api = {"dex": self.dex, "amountIn": decimal_str(token_in.to_whole(self.amount_in)),
               "amountOut": decimal_str(token_out.to_whole(self.amount_out)), "txHash": self.signature}
        if self.hops:
            api["hops"] = [hop.to_api() for hop in self.hops]
        return api

    @classmethod
    def from_api(cls, data: dict, token_in: Token, token_out: Token) -> "Fill":
        return cls(data["dex"], token_in.to_base(Decimal(data["amountIn"])),
                   token_out.to_base(Decimal(data["amountOut"])), data["txHash"],
                   tuple(hop_from_api(hop) for hop in data.get("hops", ())))


def hop_from_api(data: dict) -> HopSwap:
    """A hop from its API shape (an event's meta)."""
    token_in, token_out = find_token(data["tokenIn"]), find_token(data["tokenOut"])
    return HopSwap(token_in, token_out, tuple(
        (leg["dex"], token_in.to_base(Decimal(leg["amountIn"])), token_out.to_base(Decimal(leg.get("amountOut", 0))))
        for leg in data["legs"]))


@dataclass
class Execution:
    """The fills of an order so far and the legs in flight."""

    amount_in: int
    token_in: Token
    token_out: Token
    filled: list[Fill] = field(default_factory=list)
    legs: list[LegRun] = field(default_factory=list)
    # The least the whole amount may give, set by the attempt that sent the first swaps (its
    # route's minimum): once a leg is filled, the rest must make up the difference, so the
    # order's slippage bounds its total across attempts, not each attempt's.
    order_min_out: int = 0

    @property
    def remaining_in(self) -> int:
        """What is still to be sold (routed by the next attempt)."""
        return self.amount_in - sum(f.amount_in for f in self.filled)

    @property
    def filled_out(self) -> int:
        return sum(f.amount_out for f in self.filled)

    @property
    def rest_min_out(self) -> int:
        """The least the rest may give for the order to meet its minimum (0 before any fill)."""
        return max(0, self.order_min_out - self.filled_out) if self.filled else 0

    def leg(self, signature: str) -> LegRun | None:
        return next((leg for leg in self.legs if leg.signature == signature), None)

    def open_legs(self) -> list[LegRun]:
        """Legs whose outcome is not known yet."""
        return [leg for leg in self.legs if leg.state in ("sent", "unknown")]

    def settle(self) -> LegRun | None:
        """Once every leg has an outcome: the confirmed ones become fills; the first failure
        (None when every leg was filled). Call only when `open_legs()` is empty."""
        for leg in self.legs:
            if leg.state == "confirmed":
                self.filled.append(Fill(leg.dex, leg.amount_in, leg.amount_out, leg.signature, leg.hops))
        failed = next((leg for leg in self.legs if leg.state == "failed"), None)
        self.legs = []
        return failed

    # ---- the events' meta ---------------------------------------------------------------

    def legs_api(self, *, with_min: bool = False, with_tx: bool = False) -> list[dict[str, Any]]:
        rows = []
        for leg in self.legs:
            row = {"dex": leg.dex, "amountIn": decimal_str(self.token_in.to_whole(leg.amount_in))}
            if with_min:
                row["minAmountOut"] = decimal_str(self.token_out.to_whole(leg.min_out))
            if with_tx:
                row["txHash"] = leg.signature
            rows.append(row)
        return rows

    def fills_api(self) -> list[dict[str, Any]]:
        return [f.to_api(self.token_in, self.token_out) for f in self.filled]

    def resume(self, routing_meta: dict, submitted_meta: dict | None) -> None:
        """Rebuild from the stored events of the current attempt: its fills carried over and,
        when its swaps were sent, its legs (each to be asked about)."""
        self.filled = [Fill.from_api(f, self.token_in, self.token_out) for f in routing_meta.get("filledLegs", ())]
        order_min = routing_meta.get("orderMinAmountOut") or routing_meta.get("route", {}).get("minAmountOut")
        self.order_min_out = self.token_out.to_base(Decimal(order_min)) if order_min else 0
        if submitted_meta is None:
            return
        legs = submitted_meta.get("legs") or [{"dex": submitted_meta["dex"], "txHash": submitted_meta["txHash"],
                                               "amountIn": decimal_str(self.token_in.to_whole(self.remaining_in))}]
        self.legs = [LegRun(leg["dex"], self.token_in.to_base(Decimal(leg["amountIn"])), 0, leg["txHash"],
                            state="unknown") for leg in legs]
