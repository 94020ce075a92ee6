"""The chain's ledger: landing swaps against pools and recording every outcome by signature.

Every send that reaches the chain leaves one `sim_swaps` row under its signature, so
a repeated signature is answered from the row and never executes twice:
  confirmed  executed; the pool's reserves moved in the same transaction
  failed     landed but failed (slippage, liquidity) or rejected by the node (transient)
  dropped    timed out and never landed; its blockhash has expired, so it never will
"""
from __future__ import annotations

from types import SimpleNamespace

from pony.orm import db_session, select

from config import find_token
from storage.venues.base import SignatureStatus, SwapRequest, SwapResult, SwapView, VenueError
from storage.venues.sim import amm
from storage.sql import Dialect
from storage.venues.sim.world import RACE_ERRORS, World

# Codes after which a new attempt (new quote, new signature) can succeed.
RETRIABLE = frozenset({"transient", "slippage_exceeded", "expired"})
EXPIRED_MESSAGE = "blockhash expired: the transaction timed out and can never land"


def result_of(row) -> SwapResult:
    """The SwapResult a recorded row stands for (what a repeated send gets back)."""
    if row.status == "confirmed":
        return SwapResult(row.signature, "confirmed", amount_out=int(row.amount_out), executed_at=row.executed_at)
    if row.status == "dropped":
        return SwapResult(row.signature, "failed", error_code="expired", message=EXPIRED_MESSAGE, retriable=True)
    return SwapResult(row.signature, "failed", error_code=row.error_code, message=row.message,
                      retriable=row.error_code in RETRIABLE)


class Ledger:
    """Records and lands swaps for one world (both venues share it)."""

    def __init__(self, world: World):
        self.world = world
        self.E = world.E
        self.db = world.E.SimPool._database_
        self.dialect = Dialect(self.db)

    def _cursor(self):
        """A cursor on this db_session's connection (Pony commits at the session's end)."""
        return self.db.get_connection().cursor()

    def recorded(self, signature: str) -> SwapResult | None:
        """The outcome already recorded for a signature, or None."""
        with db_session:
            row = self.E.SimSwap.get(signature=signature)
            return result_of(row) if row is not None else None

    def record(self, request: SwapRequest, status: str, error_code: str, message: str) -> SwapResult:
        """Record an outcome that moved no reserves (a rejection or a drop); first record wins."""
        try:
            with db_session:
                if self.E.SimSwap.get(signature=request.signature) is None:
                    return self._record_raw(self._cursor(), request, status, None, error_code, message)
        except RACE_ERRORS:
            pass  # the same signature was recorded concurrently; its row is the answer
        return self.recorded(request.signature)

    def land(self, request: SwapRequest) -> SwapResult:
        """Execute at this moment's price (or fail it) and record the outcome, atomically."""
        try:
            token_a, token_b = self.world.require_pair(request.token_in, request.token_out)
        except VenueError as error:
            return self.record(request, "failed", error.code, error.message)
        try:
            with db_session:
                return self._land_locked(self._cursor(), request, token_a, token_b)
        except RACE_ERRORS:
            return self.recorded(request.signature)

    def _land_locked(self, cursor, request: SwapRequest, token_a, token_b) -> SwapResult:
        # Plain SQL: this runs once per swap and Pony's entities measured ~20% of a worker.
        # Lock the pool first: a concurrent send of the same signature then waits here and
        # finds this one's row below (on SQLite the lock is BEGIN IMMEDIATE).
        d, p = self.dialect, self.dialect.ph
        lock = " FOR UPDATE" if d.postgres else ""
        cursor.execute(f"SELECT reserve_a, reserve_b, fee_bps FROM sim_pools "
                       f"WHERE dex = {p} AND token_a = {p} AND token_b = {p}{lock}",
                       (request.dex, token_a.symbol, token_b.symbol))
        pool = cursor.fetchone()
        cursor.execute(f"SELECT signature, status, amount_out, error_code, message, executed_at "
                       f"FROM sim_swaps WHERE signature = {p}", (request.signature,))
        existing = cursor.fetchone()
        if existing is not None:
            signature, status, amount_out, error_code, message, executed_at = existing
            return result_of(SimpleNamespace(signature=signature, status=status, amount_out=amount_out,
                                             error_code=error_code, message=message,
                                             executed_at=d.read_ts(executed_at)))
        if pool is None:
            return self._record_raw(cursor, request, "failed", None, "no_pool", "no pool for this pair")
        reserve_a, reserve_b, fee_bps = pool
        root = self.world.drift(request.dex, token_a.symbol, token_b.symbol).root(self.world.clock())
        eff_a, eff_b = amm.effective(reserve_a, reserve_b, root)
        sells_a = request.token_in.symbol == token_a.symbol
        try:
            math = amm.swap_out(*((eff_a, eff_b) if sells_a else (eff_b, eff_a)), request.amount_in, fee_bps)
            new_a, new_b = (math.reserve_in, math.reserve_out) if sells_a else (math.reserve_out, math.reserve_in)
            new_a, new_b = amm.stored(new_a, new_b, root)
            if max(new_a, new_b) > amm.MAX_RESERVE:
                raise VenueError("insufficient_liquidity", "the pool cannot absorb an order this large")
        except VenueError as error:
            return self._record_raw(cursor, request, "failed", None, error.code, error.message)
        if math.amount_out < request.min_amount_out:
            message = (f"slippage tolerance exceeded: output {math.amount_out} is below the minimum "
                       f"{request.min_amount_out}")
            return self._record_raw(cursor, request, "failed", math.amount_out, "slippage_exceeded", message)
        cursor.execute(f"UPDATE sim_pools SET reserve_a = {p}, reserve_b = {p}, updated_at = {p} "
                       f"WHERE dex = {p} AND token_a = {p} AND token_b = {p}",
                       (new_a, new_b, d.ts(self.world.now()), request.dex, token_a.symbol, token_b.symbol))
        return self._record_raw(cursor, request, "confirmed", math.amount_out, None, None)

    def _record_raw(self, cursor, request: SwapRequest, status, amount_out, error_code, message) -> SwapResult:
        now = self.world.now()
        row = SimpleNamespace(signature=request.signature, status=status,
                              amount_out=None if amount_out is None else str(amount_out),
                              error_code=error_code, message=message, executed_at=now)
        cursor.execute(
            f"INSERT INTO sim_swaps (signature, dex, order_id, token_in, token_out, amount_in, amount_out, "
            f"status, error_code, message, executed_at) VALUES ({self.dialect.placeholders(11)})",
            (request.signature, request.dex, str(request.order_id), request.token_in.symbol,
             request.token_out.symbol, str(request.amount_in), row.amount_out, status, error_code, message,
             self.dialect.ts(now)))
        return result_of(row)

    def signature_status(self, signature: str) -> SignatureStatus:
        """confirmed (with amounts), failed (with its code), or not_found (never landed)."""
        with db_session:
            row = self.E.SimSwap.get(signature=signature) if isinstance(signature, str) else None
            if row is None or row.status == "dropped":
                return SignatureStatus(signature, "not_found")
            return SignatureStatus(
                signature, row.status, dex=row.dex, amount_in=int(row.amount_in),
                amount_out=int(row.amount_out) if row.status == "confirmed" else None,
                executed_at=row.executed_at, error_code=row.error_code,
            )

    def swaps_for_order(self, order_id) -> list[SwapView]:
        """Confirmed swaps of one order, oldest first."""
        with db_session:
            rows = select(s for s in self.E.SimSwap if s.order_id == str(order_id) and s.status == "confirmed")
            rows = sorted(rows, key=lambda s: (s.executed_at, s.signature))
            return [
                SwapView(s.signature, s.dex, s.order_id, find_token(s.token_in), find_token(s.token_out),
                         int(s.amount_in), int(s.amount_out), s.executed_at)
                for s in rows
            ]
