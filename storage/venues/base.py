"""What the engine needs from a venue (a DEX): quotes, swaps, signature status.

The simulator (`storage.venues.sim`) implements it today; a real Raydium or Meteora
client would implement the same class and be the only change needed to trade.
Amounts here are integer base units; `Token` carries the decimals.

Methods are synchronous and thread-safe. They never sleep on simulated latency: a
caller that wants realism asks `quote_latency()` / `swap_latency()` and schedules the
call itself (the venue actors do; the web's quote endpoint does not wait).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from config import Token
from storage.errors import StorageError
from storage.records import decimal_str, iso
from storage.venues.curve import QuoteCurve

# The venues the engine trades through, the one list every process uses (the worker's gateways,
# the web's quotes and metrics, the simulator's pools). Routing breaks ties towards the first.
VENUES = ("raydium", "meteora")


class VenueError(StorageError):
    """A venue refused a request outright (no pool, amount too large for the pool, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Quote:
    """One venue's answer for selling `amount_in` of `token_in` now.

    `curve` prices any other amount of the same pair on the same pool state (what the router
    needs to split an order); None when the venue cannot say, and then the router never
    splits with it. `curve.out(amount_in) == amount_out`.
    """

    dex: str
    token_in: Token
    token_out: Token
    amount_in: int
    amount_out: int
    fee_rate: Decimal
    fee_amount: int  # in token_in base units
    price_impact_bps: int
    quoted_at: datetime
    curve: QuoteCurve | None = None

    def to_api(self) -> dict[str, Any]:
        """The spec's quote object (whole-token decimal strings)."""
        return {
            "amountOut": decimal_str(self.token_out.to_whole(self.amount_out)),
            "feeRate": decimal_str(self.fee_rate),
            "feeAmount": decimal_str(self.token_in.to_whole(self.fee_amount)),
            "priceImpactBps": self.price_impact_bps,
        }


@dataclass(frozen=True)
class HopSwap:
    """One hop of a route through an intermediate token, inside its one transaction: its pair
    and its legs, each (dex, amount in, amount out). In a request the amounts are the plan (the
    chain splits what the previous hop really gave in the same proportions); in a result or a
    signature's status, what was executed."""

    token_in: Token
    token_out: Token
    legs: tuple[tuple[str, int, int], ...]

    def to_api(self) -> dict[str, Any]:
        """The spec's hop (whole-token decimal strings)."""
        return {"tokenIn": self.token_in.symbol, "tokenOut": self.token_out.symbol,
                "legs": [{"dex": dex, "amountIn": decimal_str(self.token_in.to_whole(amount_in)),
                          "amountOut": decimal_str(self.token_out.to_whole(amount_out))}
                         for dex, amount_in, amount_out in self.legs]}

    def to_record(self) -> list:
        """What the chain stores of it (JSON: symbols and exact integers)."""
        return [self.token_in.symbol, self.token_out.symbol, [[d, str(i), str(o)] for d, i, o in self.legs]]

    @classmethod
    def from_record(cls, data: list, find) -> "HopSwap":
        token_in, token_out, legs = data
        return cls(find(token_in), find(token_out), tuple((d, int(i), int(o)) for d, i, o in legs))


@dataclass(frozen=True)
class SwapRequest:
    """A signed swap transaction: the signature is chosen (and stored) before it is sent.

    With `hops`, a route through an intermediate token: every hop in this one transaction
    (all land or none does), `min_amount_out` guarding the last hop's total, `dex` the venue
    it is sent through."""

    signature: str
    order_id: str
    dex: str
    token_in: Token
    token_out: Token
    amount_in: int
    min_amount_out: int
    hops: tuple[HopSwap, ...] = ()


@dataclass(frozen=True)
class SwapResult:
    """What the sender learns when a swap lands, fails, or times out.

    status: "confirmed" (amount_out set), "failed" (error_code set; `retriable` says
    whether a fresh attempt could succeed), or "timeout" (outcome unknown: ask
    `signature_status`).
    """

    signature: str
    status: str
    amount_out: int | None = None
    executed_at: datetime | None = None
    error_code: str | None = None
    message: str | None = None
    retriable: bool = False
    hops: tuple[HopSwap, ...] = ()  # a route's hops as executed (confirmed only)


@dataclass(frozen=True)
class SignatureStatus:
    """The chain's view of one signature: "confirmed", "failed" or "not_found" (never landed)."""

    signature: str
    status: str
    dex: str | None = None
    amount_in: int | None = None
    amount_out: int | None = None
    executed_at: datetime | None = None
    error_code: str | None = None
    hops: tuple[HopSwap, ...] = ()  # a route's hops as executed (confirmed only)


@dataclass(frozen=True)
class PoolView:
    """A pool as `/api/sim/pools` shows it."""

    dex: str
    token_a: Token
    token_b: Token
    reserve_a: int
    reserve_b: int
    fee_rate: Decimal
    price: Decimal  # token_b per token_a, now

    def to_api(self) -> dict[str, Any]:
        return {
            "dex": self.dex,
            "tokenA": self.token_a.symbol,
            "tokenB": self.token_b.symbol,
            "reserveA": decimal_str(self.token_a.to_whole(self.reserve_a)),
            "reserveB": decimal_str(self.token_b.to_whole(self.reserve_b)),
            "feeRate": decimal_str(self.fee_rate),
            "price": decimal_str(self.price),
        }


@dataclass(frozen=True)
class SwapView:
    """An executed swap as `/api/sim/swaps` shows it."""

    tx_hash: str
    dex: str
    order_id: str
    token_in: Token
    token_out: Token
    amount_in: int
    amount_out: int
    executed_at: datetime

    def to_api(self) -> dict[str, Any]:
        return {
            "txHash": self.tx_hash,
            "dex": self.dex,
            "tokenIn": self.token_in.symbol,
            "tokenOut": self.token_out.symbol,
            "amountIn": decimal_str(self.token_in.to_whole(self.amount_in)),
            "amountOut": decimal_str(self.token_out.to_whole(self.amount_out)),
            "executedAt": iso(self.executed_at),
        }


class Venue(ABC):
    """One DEX as the engine sees it."""

    name: str  # "raydium" or "meteora"

    @abstractmethod
    def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        """Quote selling `amount_in` now; VenueError if this venue cannot trade the pair or size.

        The quote carries a `curve` for the router to price every other amount without
        asking again: it must be the state the quote itself was priced from, read in the same
        call. A real client reads the pool's accounts once (for a constant-product pool, the
        two vault balances and the fee rate from one `getMultipleAccounts` at one slot) and
        computes both the quote and a `ConstantProductCurve` from them; a pool of another
        shape (Meteora DLMM bins, a concentrated-liquidity range) brings its own `QuoteCurve`
        over the liquidity it read. A client that cannot leaves `curve` None.
        """

    @abstractmethod
    def quote_latency(self) -> float:
        """Seconds a quote call takes on this venue (drawn per call; 0 for instant)."""

    @abstractmethod
    def swap_latency(self) -> float:
        """Seconds from sending a swap until it lands or fails (drawn per call)."""

    @abstractmethod
    def execute_swap(self, request: SwapRequest) -> SwapResult:
        """Land the swap now at the price of this moment, or fail it, or time out.

        Idempotent per signature: sending the same signature twice never executes twice.
        """

    def execute_swaps(self, requests: list[SwapRequest]) -> list[SwapResult | Exception]:
        """Send several swaps at once; per request its result, or the exception it raised.

        A real client sends them concurrently (each is its own transaction on chain); the
        simulator lands them in one block. This default sends them one by one.
        """
        results: list[SwapResult | Exception] = []
        for request in requests:
            try:
                results.append(self.execute_swap(request))
            except Exception as exc:  # reported per request: the others are unaffected
                results.append(exc)
        return results

    @abstractmethod
    def signature_status(self, signature: str) -> SignatureStatus:
        """What the chain knows of a signature, for a sender about to decide on its own.

        "not_found" must be final: a transaction that has not landed when asked must never
        land afterwards, because the caller then builds a new one (this is how an order that
        changed hands, or resumed after a crash, can never execute twice). The simulator
        records the signature as expired at once; a real Solana client waits until the
        transaction's blockhash has expired (or advances the order's durable nonce) before it
        answers "not_found".
        """


class SimulatedChain(ABC):
    """The explorer view of the simulated world (the `/api/sim` endpoints)."""

    @abstractmethod
    def venue(self, name: str) -> Venue:
        """The venue named `name` ("raydium" or "meteora")."""

    @abstractmethod
    def is_tradable(self, token: Token) -> bool:
        """True when the token trades now: listed, or launched and past its launch time."""

    @abstractmethod
    def pools(self) -> list[PoolView]:
        """Every pool of every venue, priced now."""

    @abstractmethod
    def swaps_for_order(self, order_id: str) -> list[SwapView]:
        """Every swap the chain executed for one order, oldest first."""

    @abstractmethod
    def schedule_launch(self, symbol: str, in_seconds: float) -> datetime:
        """Schedule a not-yet-tradable token's launch; return the launch time (naive UTC)."""

    @abstractmethod
    def launch_times(self) -> dict[str, datetime]:
        """When each scheduled launch happens (or happened), by token symbol (naive UTC)."""

    def close(self) -> None:
        """Release connections the chain holds (at process stop)."""
