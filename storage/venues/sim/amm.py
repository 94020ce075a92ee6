"""Constant-product pool arithmetic in exact integers, arbitrage, and the seeded price drift.

Amounts are integer base units throughout. Two moves re-price a pool along its own curve
(x·y kept), the way arbitrageurs re-price a real one, each by a price multiplier applied
as effective reserves (x/√m, y·√m):

- arbitrage: between swaps the pool's price relaxes toward its reference price (the
  tokens' usd_price ratio, where the world created it), the gap in log price halving
  every ARBITRAGE_HALF_LIFE_S seconds since the pool row last changed;
- drift: on top, a seeded multiplier m(t), different per venue, so the venues keep
  differing (each better part of the time) and prices cross the reference both ways.

Stored reserves are the relaxed-and-swapped, de-drifted ones, written with the time of
the swap, so every process derives the same effective pool from the stored row, the
world seed and the wall clock, without coordinating.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Context, Decimal

from storage.venues.base import VenueError
from storage.venues.curve import BPS, fee_for, out_for_net

MAX_RESERVE = 2**63 - 1  # reserves live in a BIGINT column
ROOT_SCALE = 10**12  # fixed point of √m
MAX_LOG_DRIFT = 0.014  # |ln m| bound: two venues stay within e^0.028 ≈ 2.8% of each other
# Arbitrage closes half of a pool's gap to the reference price per minute: a large one-way
# sell is 7/8 undone in three minutes, so long runs stay tradable, while over a swap's 2–3 s
# the pull moves the price by 2.3–3.4% of the gap (23–34 bps on a 10% gap: inside the
# default 50 bps slippage), so arbitrage alone does not fail swaps. Real arbitrage is faster
# (a few slots); slower here keeps a user's own price impact visible for a while.
ARBITRAGE_HALF_LIFE_S = 60.0
_PRICE_CONTEXT = Context(prec=12)


@dataclass(frozen=True)
class SwapMath:
    """The outcome of selling `amount_in` into a pool with given effective reserves."""

    amount_out: int
    fee_amount: int  # in input base units, kept by the pool
    price_impact_bps: int
    reserve_in: int  # effective reserves after the swap
    reserve_out: int


def swap_out(reserve_in: int, reserve_out: int, amount_in: int, fee_bps: int) -> SwapMath:
    """Sell `amount_in` into an x·y=k pool; VenueError("insufficient_liquidity") if it cannot fill."""
    if amount_in <= 0:
        raise VenueError("invalid_amount", "amount must be a positive number of base units")
    if amount_in > reserve_in:
        # The curve would still answer, but no real pool fills an order larger than itself.
        raise VenueError("insufficient_liquidity", "the order is larger than the pool's reserves")
    fee = fee_for(amount_in, fee_bps)
    net = amount_in - fee
    out = out_for_net(reserve_in, reserve_out, net)
    if out <= 0:
        raise VenueError("insufficient_liquidity", "the amount is too small to buy one base unit")
    spot = net * reserve_out // reserve_in  # what the same net input buys at the spot price
    impact = (spot - out) * BPS // spot
    return SwapMath(out, fee, impact, reserve_in + amount_in, reserve_out - out)


def effective(reserve_a: int, reserve_b: int, root: int) -> tuple[int, int]:
    """Stored reserves moved along the curve to price m = (root/ROOT_SCALE)² times theirs."""
    return reserve_a * ROOT_SCALE // root, reserve_b * root // ROOT_SCALE


def stored(effective_a: int, effective_b: int, root: int) -> tuple[int, int]:
    """Inverse of `effective`: what to store after a swap on the effective pool."""
    return effective_a * root // ROOT_SCALE, effective_b * ROOT_SCALE // root


def log_reference(usd_a: Decimal, usd_b: Decimal, decimals_a: int, decimals_b: int) -> float:
    """ln of a pool's reference price in base units: token_b units per token_a unit at usd prices."""
    return math.log(usd_a) - math.log(usd_b) + (decimals_b - decimals_a) * math.log(10)


def relax_root(reserve_a: int, reserve_b: int, log_reference_price: float, elapsed_s: float,
               half_life_s: float = ARBITRAGE_HALF_LIFE_S) -> int:
    """What arbitrage does to a pool left alone for `elapsed_s`: √(p'/p) in ROOT_SCALE fixed
    point (what `effective` takes), p' being its price p moved the share 1 - 2^(-elapsed/half
    life) of the way, in log, to the reference. ROOT_SCALE exactly (no move) when no time passed."""
    if elapsed_s <= 0:
        return ROOT_SCALE
    gap = log_reference_price - (math.log(reserve_b) - math.log(reserve_a))
    closed = -math.expm1(-elapsed_s * math.log(2) / half_life_s)
    return round(math.exp(gap * closed / 2) * ROOT_SCALE)


def price(reserve_a: int, reserve_b: int, decimals_a: int, decimals_b: int) -> Decimal:
    """Whole token_b per whole token_a, to 12 significant digits."""
    return _PRICE_CONTEXT.divide(
        Decimal(reserve_b).scaleb(-decimals_b), Decimal(reserve_a).scaleb(-decimals_a)
    )


@dataclass(frozen=True)
class Drift:
    """m(t) = exp(Σ aᵢ·sin(2πt/Pᵢ + φᵢ)): a few slow waves, Σ|aᵢ| = MAX_LOG_DRIFT."""

    waves: tuple[tuple[float, float, float], ...]  # (amplitude, period s, phase)

    def log_multiplier(self, t: float) -> float:
        """ln m(t) at epoch second `t`."""
        return sum(a * math.sin(2 * math.pi * t / p + phase) for a, p, phase in self.waves)

    def root(self, t: float) -> int:
        """√m(t) in ROOT_SCALE fixed point (what `effective` takes)."""
        return round(math.exp(self.log_multiplier(t) / 2) * ROOT_SCALE)


def drift_for(seed: str, dex: str, token_a: str, token_b: str, waves: int = 4) -> Drift:
    """The drift of one pool, a pure function of the world seed and the pool's identity."""
    rng = random.Random(f"{seed}|drift|{dex}|{token_a}|{token_b}")
    weights = [rng.uniform(0.5, 1.5) for _ in range(waves)]
    total = sum(weights)
    # Periods spread log-uniformly over 20 s .. 10 min: fast wiggles and slow swings.
    return Drift(tuple(
        (MAX_LOG_DRIFT * w / total, math.exp(rng.uniform(math.log(20), math.log(600))), rng.uniform(0, 2 * math.pi))
        for w in weights
    ))
