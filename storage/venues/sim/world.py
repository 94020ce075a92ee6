"""The simulated world in the database: created once, shared by every process.

The world is one `sim_world` row (its seed) and the pools derived from that seed.
Whoever inserts the row first creates the pools in the same transaction; a process
that loses the race rolls back and reads the winner's world. Launched tokens get
their pools lazily, the first time anyone looks after the launch time.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from itertools import combinations
from typing import Callable

from pony.orm import TransactionIntegrityError, db_session
from pony.orm.dbapiprovider import IntegrityError

from config import TOKENS, Settings, Token, find_token
from storage.direct import DirectConnections
from storage.venues.base import VENUES, VenueError
from storage.venues.paths import HUBS
from storage.venues.sim import amm

log = logging.getLogger(__name__)

TOKEN_ORDER = {t.symbol: i for i, t in enumerate(TOKENS)}
WORLD_ID = 1
# Pool depth in USD: listed pairs are deep, a fresh launch is shallow as real ones are.
LISTED_TVL_USD = (5_000_000, 20_000_000)
LAUNCH_TVL_USD = (500_000, 2_000_000)
# A row that was raced by another process: the loser retries and then sees the winner's row.
RACE_ERRORS = (TransactionIntegrityError, IntegrityError)


def fee_bps_for(dex: str, rng: random.Random) -> int:
    """Raydium's standard pools charge 0.25%; Meteora 0.20% on most pools, 0.30% on some."""
    if dex == "raydium":
        return 25
    return 30 if rng.random() < 0.25 else 20


def ordered_pair(x: Token, y: Token) -> tuple[Token, Token]:
    """The pool's (token_a, token_b): the order of config.TOKENS."""
    return (x, y) if TOKEN_ORDER[x.symbol] < TOKEN_ORDER[y.symbol] else (y, x)


def pool_spec(seed: str, dex: str, a: Token, b: Token, tvl_range: tuple[int, int]) -> dict:
    """Initial reserves and fee of one pool: half its seeded TVL on each side, at usd_price."""
    rng = random.Random(f"{seed}|pool|{dex}|{a.symbol}|{b.symbol}")
    half_usd = Decimal(rng.randint(*tvl_range)) / 2
    return {
        "dex": dex,
        "token_a": a.symbol,
        "token_b": b.symbol,
        "reserve_a": int((half_usd / a.usd_price).scaleb(a.decimals)),
        "reserve_b": int((half_usd / b.usd_price).scaleb(b.decimals)),
        "fee_bps": fee_bps_for(dex, rng),
    }


def has_pool(a: Token, b: Token) -> bool:
    """Whether a world created now gives the pair a pool: as on mainnet, tokens pool with SOL and
    with USDC (the hubs), not with each other; other pairs route through a hub."""
    return a.symbol in HUBS or b.symbol in HUBS


def listed_pool_specs(seed: str) -> list[dict]:
    """Every pool of the world at creation: each pair of tradable tokens with a hub in it, on each venue."""
    listed = [t for t in TOKENS if t.tradable]
    return [pool_spec(seed, dex, a, b, LISTED_TVL_USD) for dex in VENUES for a, b in combinations(listed, 2)
            if has_pool(a, b)]


def launch_pool_specs(seed: str, token: Token) -> list[dict]:
    """The pools a launched token gets: against each hub, on each venue."""
    return [pool_spec(seed, dex, *ordered_pair(token, find_token(hub)), LAUNCH_TVL_USD)
            for dex in VENUES for hub in HUBS]


def to_datetime(epoch: float) -> datetime:
    """Epoch seconds to naive UTC (what the columns store)."""
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


QUOTE_STALENESS_S = 0.05


class World:
    """The shared state both venues and the explorer read: entities, seed, clock, drifts, launches."""

    def __init__(self, entities, settings: Settings, clock: Callable[[], float] = time.time):
        self.E = entities
        self.settings = settings
        self.clock = clock
        self.direct = DirectConnections(entities.SimPool._database_)  # the chain's hot paths
        self.seed = self._ensure_created()
        self._drifts: dict[tuple[str, str, str], amm.Drift] = {}
        self._references: dict[tuple[str, str], float] = {}
        self._launched: set[str] = set()  # launches never undo, so this cache never goes stale
        self._lock = threading.Lock()
        self._pool_reads: dict[tuple[str, str, str], tuple[float, tuple[int, int, int, datetime] | None]] = {}

    def now(self) -> datetime:
        """The clock as naive UTC."""
        return to_datetime(self.clock())

    def _ensure_created(self) -> str:
        seed = str(self.settings.sim_seed if self.settings.sim_seed is not None else random.SystemRandom().getrandbits(62))
        for _ in range(5):
            try:
                # immediate: on SQLite, BEGIN IMMEDIATE makes check-then-insert atomic across processes.
                with db_session(immediate=True):
                    world = self.E.SimWorld.get(id=WORLD_ID)
                    if world is not None:
                        return world.seed
                    now = self.now()
                    self.E.SimWorld(id=WORLD_ID, seed=seed, created_at=now)
                    for spec in listed_pool_specs(seed):
                        self.E.SimPool(created_at=now, updated_at=now, **spec)
                log.info("created the simulated world (seed %s)", seed)
                return seed
            except RACE_ERRORS:
                log.info("another process created the simulated world first; reading it")
        raise RuntimeError("could not create or read the simulated world")

    def drift(self, dex: str, token_a: str, token_b: str) -> amm.Drift:
        """The pool's drift (derived from the seed, cached)."""
        key = (dex, token_a, token_b)
        drift = self._drifts.get(key)
        if drift is None:
            drift = self._drifts[key] = amm.drift_for(self.seed, dex, token_a, token_b)
        return drift

    def reference(self, token_a: str, token_b: str) -> float:
        """ln of the pool's reference price (base units of b per unit of a): the usd_price ratio."""
        key = (token_a, token_b)
        log_price = self._references.get(key)
        if log_price is None:
            a, b = find_token(token_a), find_token(token_b)
            log_price = self._references[key] = amm.log_reference(a.usd_price, b.usd_price, a.decimals, b.decimals)
        return log_price

    def pool_now(self, key: tuple[str, str, str], reserve_a: int, reserve_b: int, updated_at: datetime,
                 clock: float) -> tuple[int, int, int]:
        """(effective_a, effective_b, drift_root) of a pool at epoch second `clock`, from its row.

        The stored reserves relax toward the reference price for the time since the row last
        changed (arbitrage), then the drift moves them: a pure function of the row, the seed and
        the clock, so every process prices the pool alike. A swap on the effective pool stores
        `amm.stored(reserves after, drift_root)` and the time it landed.
        """
        elapsed = (to_datetime(clock) - updated_at).total_seconds()
        root = amm.relax_root(reserve_a, reserve_b, self.reference(key[1], key[2]), elapsed)
        relaxed_a, relaxed_b = amm.effective(reserve_a, reserve_b, root)
        drift_root = self.drift(*key).root(clock)
        return (*amm.effective(relaxed_a, relaxed_b, drift_root), drift_root)

    def pool_for_quote(self, dex: str, token_a: str, token_b: str) -> tuple[int, int, int, datetime] | None:
        """(reserve_a, reserve_b, fee_bps, updated_at) of a pool's row as of at most
        QUOTE_STALENESS_S ago, or None.

        Quotes read reserves a few tens of milliseconds old, as a quote from an RPC node
        does; swaps always read them under the pool's lock. Reading the row for every
        quote measured ~10% of a worker's CPU under load.
        """
        key = (dex, token_a, token_b)
        now = time.monotonic()
        cached = self._pool_reads.get(key)
        if cached is not None and now - cached[0] <= QUOTE_STALENESS_S:
            return cached[1]
        p = self.direct.dialect.ph
        rows = self.direct.get().execute(f"SELECT reserve_a, reserve_b, fee_bps, updated_at FROM sim_pools "
                                         f"WHERE dex = {p} AND token_a = {p} AND token_b = {p}", key)
        state = (*rows[0][:3], self.direct.dialect.read_ts(rows[0][3])) if rows else None
        self._pool_reads[key] = (now, state)
        return state

    def is_tradable(self, token: Token) -> bool:
        """Listed tokens always; a launched token once its launch time has passed (its pools then exist)."""
        if token.tradable or token.symbol in self._launched:
            return True
        with db_session:
            launch = self.E.SimLaunch.get(symbol=token.symbol)
            launch_at = launch.launch_at if launch is not None else None
        if launch_at is None or launch_at > self.now():
            return False
        self._create_launch_pools(token)
        with self._lock:
            self._launched.add(token.symbol)
        return True

    def require_pair(self, token_in: Token, token_out: Token) -> tuple[Token, Token]:
        """The pool's (token_a, token_b) for a trade; VenueError when the pair cannot trade."""
        if token_in.symbol not in TOKEN_ORDER or token_out.symbol not in TOKEN_ORDER:
            raise VenueError("unknown_token", "this venue does not list the token")
        if token_in.symbol == token_out.symbol:
            raise VenueError("same_token", "tokenIn and tokenOut are the same token")
        for token in (token_in, token_out):
            if not self.is_tradable(token):
                raise VenueError("not_tradable", f"{token.symbol} is not tradable yet")
        return ordered_pair(token_in, token_out)

    def _create_launch_pools(self, token: Token) -> None:
        for _ in range(5):
            try:
                with db_session(immediate=True):
                    specs = launch_pool_specs(self.seed, token)
                    first = specs[0]
                    if self.E.SimPool.get(dex=first["dex"], token_a=first["token_a"], token_b=first["token_b"]):
                        return
                    now = self.now()
                    for spec in specs:
                        self.E.SimPool(created_at=now, updated_at=now, **spec)
                log.info("%s launched: created its pools", token.symbol)
                return
            except RACE_ERRORS:
                continue  # another process created them; the next look finds them

    def launch_times(self) -> dict[str, datetime]:
        """Every scheduled launch's time, by symbol (one indexed read: sniper orders poll it)."""
        d = self.direct.dialect
        rows = self.direct.get().execute("SELECT symbol, launch_at FROM sim_launches")
        return {symbol: d.read_ts(at) for symbol, at in rows}

    def schedule_launch(self, symbol: str, in_seconds: float) -> datetime:
        """Record a launch `in_seconds` from now; VenueError for a listed, scheduled or unknown token."""
        token = next((t for t in TOKENS if t.symbol == symbol.upper()), None) if isinstance(symbol, str) else None
        if token is None:
            raise VenueError("unknown_token", f"unknown token {symbol!r}")
        if token.tradable:
            raise VenueError("already_tradable", f"{token.symbol} is already tradable")
        if not isinstance(in_seconds, (int, float)) or not math.isfinite(in_seconds) or in_seconds < 0:
            raise VenueError("invalid_launch_time", "inSeconds must be a finite number >= 0")
        now = self.now()
        launch_at = now + timedelta(seconds=in_seconds)
        try:
            with db_session(immediate=True):
                if self.E.SimLaunch.get(symbol=token.symbol) is not None:
                    raise VenueError("already_tradable", f"{token.symbol} is already launched or scheduled")
                self.E.SimLaunch(symbol=token.symbol, launch_at=launch_at, scheduled_at=now)
        except RACE_ERRORS:
            raise VenueError("already_tradable", f"{token.symbol} is already launched or scheduled") from None
        return launch_at
