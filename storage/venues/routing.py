"""Choosing the route: the venue whose quote gives the most output after fees and impact."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.records import decimal_str
from storage.venues.base import Quote


@dataclass(frozen=True)
class Route:
    """The chosen route: one leg per venue used (one today), with the minimum acceptable output."""

    legs: tuple[Quote, ...]
    amount_out: int
    min_amount_out: int

    @property
    def best_dex(self) -> str:
        return self.legs[0].dex

    def to_api(self) -> dict[str, Any]:
        token_in, token_out = self.legs[0].token_in, self.legs[0].token_out
        return {
            "legs": [
                {"dex": q.dex, "amountIn": decimal_str(token_in.to_whole(q.amount_in)),
                 "amountOut": decimal_str(token_out.to_whole(q.amount_out))}
                for q in self.legs
            ],
            "amountOut": decimal_str(token_out.to_whole(self.amount_out)),
            "minAmountOut": decimal_str(token_out.to_whole(self.min_amount_out)),
        }


def min_out(amount_out: int, slippage_bps: int) -> int:
    """Worst acceptable output: `slippage_bps` below the quote, rounded down to base units."""
    return amount_out * (10_000 - slippage_bps) // 10_000


def choose_route(quotes: list[Quote], slippage_bps: int) -> Route:
    """The better of the venues' quotes by net output; ties go to the first venue listed.

    Raises ValueError when no quote is usable (every venue refused or quoted 0).
    """
    usable = [q for q in quotes if q.amount_out > 0]
    if not usable:
        raise ValueError("no venue can fill this order")
    best = max(usable, key=lambda q: q.amount_out)  # max keeps the first of equal keys
    return Route(legs=(best,), amount_out=best.amount_out, min_amount_out=min_out(best.amount_out, slippage_bps))
