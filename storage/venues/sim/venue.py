"""One simulated DEX (Raydium or Meteora): quotes and swaps against the world's pools."""
from __future__ import annotations

import random
from decimal import Decimal

from config import Token
from storage.errors import translating_db_errors
from storage.venues.base import Quote, SignatureStatus, SwapRequest, SwapResult, Venue, VenueError
from storage.venues.curve import ConstantProductCurve
from storage.venues.sim import amm
from storage.venues.sim.ledger import BlockEntry, Ledger
from storage.venues.sim.world import World, to_datetime

# What an RPC node answers when it drops a transaction before it lands.
TRANSIENT_MESSAGES = (
    "Blockhash not found",
    "RPC node is behind by {slots} slots",
    "Transaction simulation failed: the node could not fetch account state in time",
)
TIMEOUT_MESSAGE = "transaction not confirmed within the timeout: ask signature_status for its outcome"


class SimVenue(Venue):
    """A venue whose pools are the world's rows for `name`; thread-safe, never sleeps."""

    def __init__(self, name: str, world: World, ledger: Ledger, rng: random.Random):
        self.name = name
        self._world = world
        self._ledger = ledger
        self._rng = rng  # failures and latency; injected and seeded in tests
        self._realistic = world.settings.venue_profile == "realistic"
        self._scale = world.settings.venue_latency_scale  # VENUE_LATENCY_SCALE: same shape, shorter or longer

    @translating_db_errors
    def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        """Price selling `amount_in` now; VenueError when the pair or the size cannot trade."""
        token_a, token_b = self._world.require_pair(token_in, token_out)
        pool = self._world.pool_for_quote(self.name, token_a.symbol, token_b.symbol)
        if pool is None:
            raise VenueError("no_pool", f"{self.name} has no {token_a.symbol}/{token_b.symbol} pool")
        reserve_a, reserve_b, fee_bps, updated_at = pool
        clock = self._world.clock()
        key = (self.name, token_a.symbol, token_b.symbol)
        eff_a, eff_b, _ = self._world.pool_now(key, reserve_a, reserve_b, updated_at, clock)
        reserve_in, reserve_out = (eff_a, eff_b) if token_in.symbol == token_a.symbol else (eff_b, eff_a)
        math = amm.swap_out(reserve_in, reserve_out, amount_in, fee_bps)
        return Quote(
            dex=self.name, token_in=token_in, token_out=token_out, amount_in=amount_in,
            amount_out=math.amount_out, fee_rate=Decimal(fee_bps) / amm.BPS, fee_amount=math.fee_amount,
            price_impact_bps=math.price_impact_bps, quoted_at=to_datetime(clock),
            # The pool as this quote met it: the router prices other amounts (splits) on it.
            curve=ConstantProductCurve(reserve_in, reserve_out, fee_bps),
        )

    def quote_latency(self) -> float:
        """~200 ms (150–250 ms uniformly) × VENUE_LATENCY_SCALE when realistic, else 0."""
        return self._rng.uniform(0.150, 0.250) * self._scale if self._realistic else 0.0

    def swap_latency(self) -> float:
        """2–3 s uniformly × VENUE_LATENCY_SCALE when realistic, else 0."""
        return self._rng.uniform(2.0, 3.0) * self._scale if self._realistic else 0.0

    def execute_swap(self, request: SwapRequest) -> SwapResult:
        """Land now, fail, or time out (half of timeouts land anyway); idempotent per signature."""
        (result,) = self.execute_swaps([request])
        if isinstance(result, Exception):
            raise result
        return result

    @translating_db_errors
    def execute_swaps(self, requests: list[SwapRequest]) -> list[SwapResult | Exception]:
        """Land the swaps sent together in one block (one transaction), at this moment's prices.

        Each swap draws its own fate first: a transient failure (rejected by the node), a
        timeout (half of which landed: the sender only learns it from `signature_status`),
        or landing. A repeated signature is answered from its record and never executes twice.
        """
        settings = self._world.settings
        entries: list[BlockEntry] = []
        timed_out: set[int] = set()
        results: dict[int, SwapResult | Exception] = {}
        for i, request in enumerate(requests):
            if request.dex != self.name:
                results[i] = VenueError("wrong_venue", f"a swap for {request.dex} was sent to {self.name}")
                continue
            draw = self._rng.random()
            if draw < settings.venue_failure_rate:
                message = self._rng.choice(TRANSIENT_MESSAGES).format(slots=self._rng.randint(40, 400))
                entries.append(BlockEntry(request, "failed", "transient", message))
            elif draw < settings.venue_failure_rate + settings.venue_timeout_rate:
                timed_out.add(i)
                landed = self._rng.random() < 0.5
                entries.append(BlockEntry(request, "land") if landed else
                               BlockEntry(request, "dropped", "expired", "timed out before landing"))
            else:
                entries.append(BlockEntry(request, "land"))
        landed = iter(self._ledger.apply_block(entries) if entries else [])
        for i, request in enumerate(requests):
            if i in results:
                continue
            result = next(landed)
            results[i] = SwapResult(request.signature, "timeout", message=TIMEOUT_MESSAGE) if i in timed_out else result
        return [results[i] for i in range(len(requests))]

    @translating_db_errors
    def signature_status(self, signature: str) -> SignatureStatus:
        """What the chain knows of a signature (any venue's: they share one chain)."""
        return self._ledger.signature_status(signature)
