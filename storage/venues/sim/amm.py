"""Constant-product pool arithmetic in exact integers, and the seeded price drift.

Amounts are integer base units throughout. The drift is a price multiplier m(t)
applied by moving the pool along its own curve (x·y kept), the way arbitrageurs
re-price a real pool: effective reserves are (x/√m, y·√m). Stored reserves are
the de-drifted ones, so every process derives the same effective pool from the
stored row, the world seed and the wall clock, without coordinating.
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
