"""Choosing the route: the better venue, or a split between two venues when that gives more.

Selling an amount X, a split sends x to one venue and X - x to the other. Each venue's quote
carries its curve (`Quote.curve`), so the split is found here, without asking the venues
again. For two constant-product pools the best real-valued x has a closed form (equal
marginal prices on both sides); the integer x around it, and the points where a leg's output
just reaches its next base unit, are tried with the venues' own integer arithmetic. The
only gap to the true integer optimum is rounding (under one base unit of output per leg, and
under one input unit's worth of the fee's rounding), so where that gap could reach 0.1% of
the output (dust orders, outputs of a few thousand base units) every candidate that can
still win is tried instead. Curves of other shapes are searched on a zooming grid.

Measured here: 8 µs a call when the order stays whole, 13 µs when it is split (8 and 18
prices of an amount on the curves); dust orders between two nearly equal venues up to ~3 ms.

Domain logic only: nothing here touches storage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from config import Token
from storage.records import decimal_str
from storage.venues.base import Quote
from storage.venues.curve import BPS, ConstantProductCurve, QuoteCurve

# The optimiser stays within 1/TOLERANCE (0.1%) of the best split of the venues' curves.
TOLERANCE = 1000
# Where rounding alone could cost 0.1% (dust), at most this many candidates are tried.
EXACT_CANDIDATES = 4096
# Grid points per round of the search over curves of other shapes than x·y=k.
SEARCH_POINTS = 24


@dataclass(frozen=True)
class Leg:
    """One venue's part of a route: what it is sent, what it should give, and the least it may give."""

    dex: str
    amount_in: int
    amount_out: int  # expected, from the venue's quote curve
    min_amount_out: int  # this leg's own guard: its swap fails below it


@dataclass(frozen=True)
class Hop:
    """One hop of a route through an intermediate token: its pair and its legs (one venue, or a
    split). Only the route's last output is guarded (`Route.min_amount_out`): its legs' own
    minimums are 0, and the next hop sells whatever this one gives."""

    token_in: Token
    token_out: Token
    legs: tuple[Leg, ...]

    @property
    def amount_in(self) -> int:
        return sum(leg.amount_in for leg in self.legs)

    @property
    def amount_out(self) -> int:
        return sum(leg.amount_out for leg in self.legs)

    def to_api(self) -> dict[str, Any]:
        return {"tokenIn": self.token_in.symbol, "tokenOut": self.token_out.symbol,
                "legs": legs_api(self.legs, self.token_in, self.token_out)}


@dataclass(frozen=True)
class Route:
    """The chosen route: one leg, or two legs when splitting gives more. Legs in order of
    preference: the first is the venue whose own quote was best (`best_dex`).

    A route through an intermediate token has `hops` instead (and no `legs`): it executes as
    one transaction whose only guard is `hop_min_out` on the last hop's total output."""

    token_in: Token
    token_out: Token
    legs: tuple[Leg, ...]
    hops: tuple[Hop, ...] = ()
    hop_min_out: int = 0

    @property
    def best_dex(self) -> str:
        return (self.hops[0].legs if self.hops else self.legs)[0].dex

    @property
    def is_split(self) -> bool:
        return len(self.legs) > 1

    @property
    def via(self) -> Token | None:
        """The intermediate token of a route through one; None for a direct route."""
        return self.hops[0].token_out if self.hops else None

    @property
    def amount_in(self) -> int:
        return self.hops[0].amount_in if self.hops else sum(leg.amount_in for leg in self.legs)

    @property
    def amount_out(self) -> int:
        return self.hops[-1].amount_out if self.hops else sum(leg.amount_out for leg in self.legs)

    @property
    def min_amount_out(self) -> int:
        """The least the whole route may give: the sum of its legs' minimums (of a route through
        an intermediate token: its one minimum)."""
        return self.hop_min_out if self.hops else sum(leg.min_amount_out for leg in self.legs)

    def to_api(self) -> dict[str, Any]:
        token_out = self.token_out
        head = ({"hops": [hop.to_api() for hop in self.hops]} if self.hops
                else {"legs": legs_api(self.legs, self.token_in, token_out)})
        return {
            **head,
            "amountOut": decimal_str(token_out.to_whole(self.amount_out)),
            "minAmountOut": decimal_str(token_out.to_whole(self.min_amount_out)),
        }


def legs_api(legs, token_in: Token, token_out: Token) -> list[dict[str, Any]]:
    """Legs in the API's shape (whole-token decimal strings)."""
    return [{"dex": leg.dex, "amountIn": decimal_str(token_in.to_whole(leg.amount_in)),
             "amountOut": decimal_str(token_out.to_whole(leg.amount_out))} for leg in legs]


def min_out(amount_out: int, slippage_bps: int) -> int:
    """Worst acceptable output: `slippage_bps` below the quote, rounded down to base units."""
    return amount_out * (10_000 - slippage_bps) // 10_000


def choose_route(quotes: list[Quote], slippage_bps: int, *, min_total_out: int | None = None) -> Route:
    """The venue with the larger output (ties to the first listed), or a two-leg split of the
    same amount when that gives strictly more in total.

    Each leg's minimum is `slippage_bps` below its expected output, and, with `min_total_out`
    (a limit order's amount × limit price, rounded up), at least its share of that by expected
    output, so the legs' minimums add up to at least `min_total_out`. When `min_total_out`
    exceeds the route's output the minimums exceed the outputs (the swaps would fail): the
    caller checks `route.amount_out >= min_total_out` before trading.

    Raises ValueError when no quote is usable (every venue refused or quoted 0).
    """
    if not quotes:
        raise ValueError("no venue can fill this order")
    amount = max(quotes, key=lambda q: q.amount_out).amount_in
    parts, total = best_parts([(q.dex, q.amount_out, q.curve) for q in quotes if q.amount_in == amount], amount)
    if not total:
        raise ValueError("no venue can fill this order")
    return Route(quotes[0].token_in, quotes[0].token_out, _legs(parts, total, slippage_bps, min_total_out))


def best_parts(options: list[tuple[str, int, QuoteCurve | None]], amount_in: int):
    """The best way to sell `amount_in` on these venues, each option (dex, its output for the
    whole amount, its curve): ([(dex, amount in, amount out)], total out); the whole amount on
    the best venue (ties to the first listed), or a split of two when strictly better. None
    when no option gives anything."""
    usable = [o for o in options if o[1] > 0]
    parts, total = [], 0
    if usable:
        best = max(usable, key=lambda o: o[1])  # max keeps the first of equal keys
        parts, total = [(best[0], amount_in, best[1])], best[1]
        pairs = [(best, other) for other in options if other is not best]
    else:  # no venue takes it all: two may, split
        pairs = [(a, b) for i, a in enumerate(options) for b in options[i + 1:]]
    for first, second in pairs:
        if first[2] is None or second[2] is None:
            continue
        split = best_split(first[2], second[2], amount_in)
        if split is not None and split[1] + split[2] > total:
            x, out_first, out_second = split
            parts = [(first[0], x, out_first), (second[0], amount_in - x, out_second)]
            total = out_first + out_second
    return parts, total


def _legs(parts, total: int, slippage_bps: int, min_total_out: int | None) -> tuple[Leg, ...]:
    legs = []
    for dex, amount_in, amount_out in parts:
        minimum = min_out(amount_out, slippage_bps)
        if min_total_out:
            minimum = max(minimum, -(-min_total_out * amount_out // total))  # its share, rounded up
        legs.append(Leg(dex, amount_in, amount_out, minimum))
    return tuple(legs)


def best_split(first: QuoteCurve, second: QuoteCurve, amount_in: int) -> tuple[int, int, int] | None:
    """The best split of `amount_in` found on the two curves, both legs giving something:
    (amount to `first`, output of `first`, output of `second`); None when there is none.

    The caller compares it with the single venues: it may well be worse than either.
    """
    if amount_in < 2:
        return None
    if not (isinstance(first, ConstantProductCurve) and isinstance(second, ConstantProductCurve)):
        return _best_of(first, second, amount_in, _searched_candidates(first, second, amount_in))
    x = balanced_split(first, second, amount_in)
    best = _best_of(first, second, amount_in, _near(first, second, amount_in, x))
    # Rounding costs under 1 base unit of output per leg, and under one input unit's worth of
    # output per leg through the fee's rounding: the integers near x are within `slack` of
    # the smooth optimum, which no integer split exceeds.
    slack = 3 + 2 * max(first.marginal(x), second.marginal(amount_in - x))
    single = max(first.out(amount_in), second.out(amount_in))
    if single >= TOLERANCE * slack:
        return best
    # Dust: rounding alone could be worth 0.1% of the output; try every split that can win.
    floor = max(single, best[1] + best[2] if best else 0)
    return _best_of(first, second, amount_in, _every_candidate(first, second, amount_in, x, floor), best)


def _best_of(first: QuoteCurve, second: QuoteCurve, amount: int, candidates, best=None):
    for x in candidates:
        if 0 < x < amount:
            out_first, out_second = first.out(x), second.out(amount - x)
            # A leg that buys nothing is refused by its venue: that is no split.
            if out_first and out_second and (best is None or out_first + out_second > best[1] + best[2]):
                best = (x, out_first, out_second)
    return best


def balanced_split(first: ConstantProductCurve, second: ConstantProductCurve, amount_in: int) -> float:
    """The real x (sent to `first`) at which both pools' marginal prices are equal, within
    what each pool accepts: the best split of the smooth curves."""
    g1, g2 = (BPS - first.fee_bps) / BPS, (BPS - second.fee_bps) / BPS
    a1, a2 = first.reserve_in, second.reserve_in
    s1 = math.sqrt(g1 * a1 * first.reserve_out)
    s2 = math.sqrt(g2 * a2 * second.reserve_out)
    # g·a·b / (a + g·x)² on each side, equal: s1 / (a1 + g1·x) = s2 / (a2 + g2·(X - x)).
    x = (s1 * (a2 + g2 * amount_in) - s2 * a1) / (s1 * g2 + s2 * g1)
    return min(max(x, amount_in - a2, 0.0), a1, amount_in)


def _near(c1: ConstantProductCurve, c2: ConstantProductCurve, amount: int, x: float) -> list[int]:
    """The integers around x, and where one leg's output just reaches the base unit it has at
    the neighbouring integer (input beyond that point is wasted on it, better spent on the other)."""
    lower = int(x)
    near = [lower - 1, lower, lower + 1, lower + 2]
    reach1 = c1.min_in(c1.out(lower + 1))
    reach2 = c2.min_in(c2.out(amount - lower))
    return near + [v for v in (reach1, reach2 and amount - reach2) if v]


def _every_candidate(c1: ConstantProductCurve, c2: ConstantProductCurve, amount: int, x: float,
                     floor: int) -> list[int]:
    """Every x that can give more than `floor`, when they are few.

    The rounded total never exceeds the smooth one, so only x where the smooth total exceeds
    `floor` can: an interval around the smooth optimum. In it, either every integer, or, for
    each output one leg can give, the least input that gives it (more input to that leg takes
    from the other and adds nothing), whichever is fewer.
    """
    lowest, highest = max(1, amount - c2.max_in), min(amount - 1, c1.max_in)
    if lowest > highest:
        return []
    target = floor - 1 - floor * 1e-9  # the float smooth total may be off by its precision

    def total(v: int) -> float:
        return c1.smooth_out(v) + c2.smooth_out(amount - v)

    top = min(max(round(x), lowest), highest)
    lo, hi = _edge(total, top, lowest, target), _edge(total, top, highest, target)
    every = range(lo, hi + 1)
    first_levels = range(max(1, c1.out(lo)), c1.out(hi) + 1)
    second_levels = range(max(1, c2.out(amount - hi)), c2.out(amount - lo) + 1)
    fewest = min(len(every), len(first_levels), len(second_levels))
    if fewest > EXACT_CANDIDATES:
        return []  # not dust after all: the smooth optimum's neighbours are as good as it gets
    if len(every) == fewest:
        return list(every)
    if len(first_levels) == fewest:
        return [v for k in first_levels if (v := c1.min_in(k)) is not None]
    return [amount - v for k in second_levels if (v := c2.min_in(k)) is not None]


def _edge(total, top: int, far: int, target: float) -> int:
    """From `top` (where the concave `total` peaks) toward `far`: the last integer with
    total >= target."""
    if total(far) >= target:
        return far
    while abs(far - top) > 1:
        mid = (top + far) // 2
        if total(mid) >= target:
            top = mid
        else:
            far = mid
    return top


def _searched_candidates(c1: QuoteCurve, c2: QuoteCurve, amount: int) -> list[int]:
    """For curves of any shape (concave, as pools are): a grid over the splits both venues
    accept, zoomed three times around its best point."""
    lo, hi = max(1, amount - c2.max_in), min(amount - 1, c1.max_in)
    grid: list[int] = []
    for _ in range(3):
        if hi - lo <= SEARCH_POINTS:
            return grid + list(range(lo, hi + 1))
        width = (hi - lo) / SEARCH_POINTS
        grid = [lo + round(i * width) for i in range(SEARCH_POINTS + 1)]
        top = max(grid, key=lambda v: _total(c1, c2, amount, v))
        lo, hi = max(lo, top - math.ceil(width)), min(hi, top + math.ceil(width))
    return grid


def _total(c1: QuoteCurve, c2: QuoteCurve, amount: int, x: int) -> int:
    """The split's output, or -1 when a leg would be refused."""
    out_first, out_second = c1.out(x), c2.out(amount - x)
    return out_first + out_second if out_first and out_second else -1
