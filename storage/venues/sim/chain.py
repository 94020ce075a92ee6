"""The simulated chain: both venues over one shared world, and the explorer view of it."""
from __future__ import annotations

import random
import time
from datetime import datetime
from decimal import Decimal
from typing import Callable

from pony.orm import Database, db_session, select

from config import Settings, Token, find_token
from storage.errors import translating_db_errors
from storage.venues.base import VENUES, PoolView, SimulatedChain, SwapView, Venue, VenueError
from storage.venues.sim import amm
from storage.venues.sim.ledger import Ledger
from storage.venues.sim.schema import sim_entities
from storage.venues.sim.venue import SimVenue
from storage.venues.sim.world import TOKEN_ORDER, World


class SimChain(SimulatedChain):
    """Raydium and Meteora simulated on the database's `sim_*` tables."""

    def __init__(self, world: World, rng: random.Random):
        self._world = world
        ledger = Ledger(world)
        # One RNG per venue, each seeded from `rng`, so a seeded test is reproducible per venue.
        self._venues = {name: SimVenue(name, world, ledger, random.Random(rng.getrandbits(64))) for name in VENUES}
        self._ledger = ledger

    @property
    def seed(self) -> str:
        """The world's seed (the same for every process on this database)."""
        return self._world.seed

    @translating_db_errors
    def venue(self, name: str) -> Venue:
        """The venue named `name`; VenueError("unknown_venue") for any other name."""
        try:
            return self._venues[name]
        except KeyError:
            raise VenueError("unknown_venue", f"no venue named {name!r}") from None

    @translating_db_errors
    def is_tradable(self, token: Token) -> bool:
        """True for listed tokens and for launched ones once their launch time has passed."""
        return self._world.is_tradable(token)

    @translating_db_errors
    def pools(self) -> list[PoolView]:
        """Every pool, with reserves and price as they stand now (arbitrage and drift included)."""
        t = self._world.clock()
        with db_session:
            rows = [(p.dex, p.token_a, p.token_b, p.reserve_a, p.reserve_b, p.fee_bps, p.updated_at)
                    for p in select(p for p in self._world.E.SimPool)]
        rows.sort(key=lambda r: (VENUES.index(r[0]), TOKEN_ORDER.get(r[1], 99), TOKEN_ORDER.get(r[2], 99)))
        views = []
        for dex, a, b, reserve_a, reserve_b, fee_bps, updated_at in rows:
            token_a, token_b = find_token(a), find_token(b)
            eff_a, eff_b, _ = self._world.pool_now((dex, a, b), reserve_a, reserve_b, updated_at, t)
            views.append(PoolView(dex, token_a, token_b, eff_a, eff_b, Decimal(fee_bps) / amm.BPS,
                                  amm.price(eff_a, eff_b, token_a.decimals, token_b.decimals)))
        return views

    @translating_db_errors
    def swaps_for_order(self, order_id: str) -> list[SwapView]:
        """Every swap executed for the order, oldest first."""
        return self._ledger.swaps_for_order(order_id)

    @translating_db_errors
    def schedule_launch(self, symbol: str, in_seconds: float) -> datetime:
        """Schedule a not-yet-tradable token's launch; return its time (naive UTC)."""
        return self._world.schedule_launch(symbol, in_seconds)

    @translating_db_errors
    def launch_times(self) -> dict[str, datetime]:
        """Every scheduled launch's time, by symbol."""
        return self._world.launch_times()

    def close(self) -> None:
        """Close the ledger's direct connections."""
        self._ledger.direct.close()


def open_chain(
    db: Database,
    settings: Settings,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.time,
) -> SimChain:
    """The chain on a mapped database, creating its world on first use (safe across processes).

    `rng` drives failures and latency (seed it in tests; by default each process draws its
    own); `clock` gives epoch seconds for prices and timestamps.
    """
    world = World(sim_entities(db), settings, clock)
    return SimChain(world, rng or random.Random())
