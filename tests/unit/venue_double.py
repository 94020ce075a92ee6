"""A scripted venue and chain double for testing the actors without the simulator."""
from __future__ import annotations

import threading
from decimal import Decimal

from storage.records import utcnow
from storage.venues.base import Quote, SignatureStatus, SimulatedChain, SwapResult, Venue, VenueError


class ScriptedVenue(Venue):
    """Quotes `rate` tokenOut base units per tokenIn base unit; swaps follow `outcomes` in order.

    An outcome is "confirmed", "transient", "slippage", "permanent", "timeout-landed" or
    "timeout-lost"; once the script runs out, swaps confirm.
    """

    def __init__(self, name, rate, outcomes=(), quote_latency=0.0, swap_latency=0.0, fee="0.0025"):
        self.name = name
        self.rate = Decimal(rate)
        self.outcomes = list(outcomes)
        self._quote_latency = quote_latency
        self._swap_latency = swap_latency
        self.fee = Decimal(fee)
        self.swaps: dict[str, SwapResult] = {}
        self.landed: dict[str, SignatureStatus] = {}
        self.lock = threading.Lock()
        self.quote_error: VenueError | None = None
        self.quote_calls = 0
        self.chain = None  # set by ScriptedChain: launches decide what is tradable

    def quote(self, token_in, token_out, amount_in):
        with self.lock:
            self.quote_calls += 1
        if self.quote_error is not None:
            raise self.quote_error
        if self.chain is not None and not all(self.chain.is_tradable(t) for t in (token_in, token_out)):
            raise VenueError("not_tradable", "the token has not launched")
        out = int(Decimal(amount_in) * self.rate)
        return Quote(self.name, token_in, token_out, amount_in, out, self.fee, 0, 3, utcnow())

    def quote_latency(self):
        return self._quote_latency

    def swap_latency(self):
        return self._swap_latency

    def execute_swap(self, request):
        with self.lock:
            if request.signature in self.swaps:
                return self.swaps[request.signature]
            outcome = self.outcomes.pop(0) if self.outcomes else "confirmed"
            out = int(Decimal(request.amount_in) * self.rate)
            landed = SignatureStatus(request.signature, "confirmed", self.name, request.amount_in, out, utcnow())
            if outcome == "confirmed":
                self.landed[request.signature] = landed
                result = SwapResult(request.signature, "confirmed", out, utcnow())
            elif outcome == "transient":
                result = SwapResult(request.signature, "failed", error_code="transient",
                                    message="blockhash not found", retriable=True)
            elif outcome == "slippage":
                result = SwapResult(request.signature, "failed", error_code="slippage_exceeded",
                                    message="output below minimum", retriable=True)
            elif outcome == "permanent":
                result = SwapResult(request.signature, "failed", error_code="insufficient_liquidity",
                                    message="pool too shallow", retriable=False)
            elif outcome == "timeout-landed":
                self.landed[request.signature] = landed
                result = SwapResult(request.signature, "timeout")
            else:
                result = SwapResult(request.signature, "timeout")
            self.swaps[request.signature] = result
            return result

    def signature_status(self, signature):
        with self.lock:
            return self.landed.get(signature, SignatureStatus(signature, "not_found"))

    @property
    def executed(self) -> int:
        return len(self.landed)


class ScriptedChain(SimulatedChain):
    """Two scripted venues."""

    def __init__(self, raydium: ScriptedVenue, meteora: ScriptedVenue):
        self.venues = {"raydium": raydium, "meteora": meteora}
        self.launches: dict[str, object] = {}  # symbol -> naive-UTC launch time
        for venue in self.venues.values():
            venue.chain = self

    def venue(self, name):
        return self.venues[name]

    def pools(self):
        return []

    def swaps_for_order(self, order_id):
        return []

    def schedule_launch(self, symbol, in_seconds):
        raise VenueError("unknown_token", symbol)

    def is_tradable(self, token):
        at = self.launches.get(token.symbol)
        return token.tradable or (at is not None and at <= utcnow())

    def launch_times(self):
        return dict(self.launches)
