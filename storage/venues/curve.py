"""Quote curves: what a venue's quote knows about every other amount, so the router can split.

A quote prices one amount. Splitting an order between two venues needs the output of any
amount on each, as the venue would land it at the moment of the quote; asking the venue
once per candidate amount would cost a round trip each. A `QuoteCurve` answers locally.

`ConstantProductCurve` is a Raydium-style x·y=k pool (Raydium AMM v4 and CPMM, Meteora's
dynamic AMM): its reserves and fee, with the exact integer arithmetic the simulated pools
use (`storage.venues.sim.amm.swap_out` is built on the functions below). Nothing here
touches storage: the router imports it without a database.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

BPS = 10_000


def fee_for(amount_in: int, fee_bps: int) -> int:
    """The fee on `amount_in`, rounded up (in the pool's favour, as the on-chain programs do)."""
    return -(-amount_in * fee_bps // BPS)


def out_for_net(reserve_in: int, reserve_out: int, net_in: int) -> int:
    """What `net_in` (input after the fee) buys from an x·y=k pool, rounded down."""
    return net_in * reserve_out // (reserve_in + net_in)


class QuoteCurve(ABC):
    """The output of any input amount on one venue, at the state one quote saw."""

    @property
    @abstractmethod
    def max_in(self) -> int:
        """The largest input the venue accepts (above it `out` is 0)."""

    @abstractmethod
    def out(self, amount_in: int) -> int:
        """Exactly what selling `amount_in` would land; 0 where the venue would refuse the swap.

        Non-decreasing in `amount_in` up to `max_in`: the router relies on it.
        """


@dataclass(frozen=True, slots=True)
class ConstantProductCurve(QuoteCurve):
    """An x·y=k pool seen from the input side: its reserves (as the swap would meet them) and fee."""

    reserve_in: int
    reserve_out: int
    fee_bps: int

    @property
    def max_in(self) -> int:
        # No real pool fills an order larger than itself (the curve alone would still answer).
        return self.reserve_in

    def out(self, amount_in: int) -> int:
        """What `amount_in` buys: the fee (rounded up) is kept, the rest swapped, output rounded down."""
        if not 0 < amount_in <= self.reserve_in:
            return 0
        return out_for_net(self.reserve_in, self.reserve_out, amount_in - fee_for(amount_in, self.fee_bps))

    def min_in(self, amount_out: int) -> int | None:
        """The smallest input whose output is at least `amount_out` (>= 1), or None if none is accepted."""
        if not 0 < amount_out < self.reserve_out:
            return None
        # out(n) >= k  <=>  n·(y - k) >= k·x  for the net input n; and the net input of x_in is
        # x_in - ceil(x_in·f / BPS) = floor(x_in·(BPS - f) / BPS), so invert that too.
        net = -(-amount_out * self.reserve_in // (self.reserve_out - amount_out))
        amount_in = -(-net * BPS // (BPS - self.fee_bps))
        return amount_in if amount_in <= self.reserve_in else None

    def smooth_out(self, amount_in: float) -> float:
        """`out` without its rounding (an upper bound of it): γ·x·y / (x_reserve + γ·x)."""
        net = (BPS - self.fee_bps) / BPS * amount_in
        return net * self.reserve_out / (self.reserve_in + net)

    def marginal(self, amount_in: float) -> float:
        """d out / d in at `amount_in` (the smooth curve, fee included): output per input unit."""
        gamma = (BPS - self.fee_bps) / BPS
        net = gamma * amount_in
        return gamma * self.reserve_in * self.reserve_out / (self.reserve_in + net) ** 2
