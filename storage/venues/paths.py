"""Routes through an intermediate token: which pairs to quote, and the best route over them.

The pool graph, the simulator's as real Solana's: most tokens pool with SOL and with USDC
(`HUBS`), few with each other. A pair is traded on its own pool where it has one, or through
one hub (BONK -> SOL -> JUP), each hop on the better venue or split between the two; the
route with the largest output after every fee and price impact wins, the direct one on a tie.

One quote per pair and venue, all at once: a first hop is quoted for the order's amount, a
second hop for an estimate of what the first gives (at reference prices); only the second
hop's curve is used, so the router prices it for exactly what the first hop gives. Selling
more of the intermediate token never gives less, so the best two-hop route through a hub is
the best first hop followed by the best second hop for its output.

Domain logic only: nothing here touches storage.
"""
from __future__ import annotations

from config import Token, find_token
from storage.venues.base import VENUES, Quote, VenueError
from storage.venues.routing import Hop, Leg, Route, best_parts, choose_route, min_out

# The intermediate tokens: the two every listed token pools with.
HUBS = ("SOL", "USDC")


def hubs_between(token_in: Token, token_out: Token) -> list[Token]:
    """The tokens a route from `token_in` to `token_out` may go through."""
    return [find_token(hub) for hub in HUBS if hub not in (token_in.symbol, token_out.symbol)]


def quote_requests(token_in: Token, token_out: Token, amount_in: int) -> list[tuple[Token, Token, int]]:
    """(token_in, token_out, amount) of every quote a route needs: the pair itself first,
    then each hub's two hops."""
    requests = [(token_in, token_out, amount_in)]
    for hub in hubs_between(token_in, token_out):
        requests += [(token_in, hub, amount_in), (hub, token_out, _at_reference(token_in, hub, amount_in))]
    return requests


def _at_reference(token_in: Token, token_out: Token, amount_in: int) -> int:
    """`amount_in` of `token_in` in `token_out` base units at the tokens' reference prices (>= 1)."""
    if token_in.usd_price <= 0 or token_out.usd_price <= 0:
        return max(1, amount_in)
    whole = token_in.to_whole(amount_in) * token_in.usd_price / token_out.usd_price
    return max(1, token_out.to_base(whole))


def best_route(quotes: list[Quote], token_in: Token, token_out: Token, amount_in: int, slippage_bps: int,
               *, min_total_out: int | None = None) -> Route:
    """The route with the largest output over the pair's own pools and every hub (ties to the
    direct route), from the quotes `quote_requests` asked for (in venue order).

    The minimum of a route through a hub is `slippage_bps` below its output, and at least
    `min_total_out`; as with `choose_route`, the caller checks `amount_out >= min_total_out`.
    Raises ValueError when no route gives anything.
    """
    by_pair: dict[tuple[str, str], list[Quote]] = {}
    for quote in quotes:  # a second hop's quote counts by its curve, whatever it quoted
        by_pair.setdefault((quote.token_in.symbol, quote.token_out.symbol), []).append(quote)
    best = None
    direct = [q for q in by_pair.get((token_in.symbol, token_out.symbol), ()) if q.amount_in == amount_in]
    if direct:
        try:
            best = choose_route(direct, slippage_bps, min_total_out=min_total_out)
        except ValueError:
            best = None
    for hub in hubs_between(token_in, token_out):
        first = [q for q in by_pair.get((token_in.symbol, hub.symbol), ()) if q.amount_in == amount_in]
        second = by_pair.get((hub.symbol, token_out.symbol), [])
        route = two_hop(first, second, token_in, hub, token_out, amount_in, slippage_bps, min_total_out)
        if route is not None and (best is None or route.amount_out > best.amount_out):
            best = route
    if best is None:
        raise ValueError("no route can fill this order")
    return best


def two_hop(first: list[Quote], second: list[Quote], token_in: Token, hub: Token, token_out: Token,
            amount_in: int, slippage_bps: int, min_total_out: int | None) -> Route | None:
    """The best route through `hub`: the best first hop, then the best second hop for its
    output (on the second hop's curves); None when either hop gives nothing."""
    parts1, middle = best_parts([(q.dex, q.amount_out, q.curve) for q in first], amount_in)
    if not middle:
        return None
    options = [(q.dex, q.curve.out(middle) if q.curve is not None else
                (q.amount_out if q.amount_in == middle else 0), q.curve) for q in second]
    parts2, total = best_parts(options, middle)
    if not total:
        return None
    minimum = max(min_out(total, slippage_bps), min_total_out or 0)
    hops = (Hop(token_in, hub, tuple(Leg(dex, x, out, 0) for dex, x, out in parts1)),
            Hop(hub, token_out, tuple(Leg(dex, x, out, 0) for dex, x, out in parts2)))
    return Route(token_in, token_out, (), hops, minimum)


def quote_all(venue_of, token_in: Token, token_out: Token, amount_in: int,
              venues=VENUES) -> list[tuple[int, str, Quote | VenueError]]:
    """Every quote `quote_requests` asks for, from `venue_of(name)` one after another (for
    callers that quote without the venue actors: the web's `/api/quote`, the trigger book):
    (index of the pair, venue, its quote or its refusal). Outages (StorageError) propagate."""
    answers = []
    for i, (pair_in, pair_out, amount) in enumerate(quote_requests(token_in, token_out, amount_in)):
        for dex in venues:
            try:
                answers.append((i, dex, venue_of(dex).quote(pair_in, pair_out, amount)))
            except VenueError as refusal:
                answers.append((i, dex, refusal))
    return answers
