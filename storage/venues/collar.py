"""The price collar: a route is not executed when its price is too far below the reference.

A thin or broken pool (or a launch pool seeded at a wild price) must not fill an order at
any price: before anything is signed, the order actor compares the route's price (its
expected output over its input, fees and price impact included) with a reference price
from an oracle and refuses a route more than `max_bps` worse (`price_collar`). Only the
adverse side is collared: a price better than the reference harms no one. Domain logic, no
database: the oracle is the seam (the simulator's reference prices today, a real price
feed later).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from decimal import Decimal

from config import Token


class PriceOracle(ABC):
    """Where reference prices come from."""

    @abstractmethod
    def reference_price(self, token_in: Token, token_out: Token) -> Decimal | None:
        """Whole `token_out` per whole `token_in` at the reference; None when unknown."""


class SimulatorReferencePrices(PriceOracle):
    """The simulator's oracle: the tokens' reference USD prices (what its arbitrage pulls the
    pools toward)."""

    def reference_price(self, token_in: Token, token_out: Token) -> Decimal | None:
        if token_in.usd_price <= 0 or token_out.usd_price <= 0:
            return None
        return token_in.usd_price / token_out.usd_price


class PriceCollar:
    """Refuses routes that would execute more than `max_bps` below the reference price."""

    def __init__(self, oracle: PriceOracle, max_bps: int):
        self.oracle = oracle
        self.max_bps = max_bps

    def breach(self, token_in: Token, token_out: Token, amount_in: int, amount_out: int) -> str | None:
        """Why a route selling `amount_in` for `amount_out` (base units) is refused; None if it may go."""
        reference = self.oracle.reference_price(token_in, token_out)
        if reference is None or amount_in <= 0:
            return None
        price = token_out.to_whole(amount_out) / token_in.to_whole(amount_in)
        worse_bps = (1 - price / reference) * 10_000
        if worse_bps <= self.max_bps:
            return None
        return (f"the best route pays {price:.6g} {token_out.symbol} per {token_in.symbol}, "
                f"{worse_bps / 100:.1f}% below the reference price {reference:.6g} "
                f"(the collar is {self.max_bps / 100:g}%)")
