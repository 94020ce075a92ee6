"""The chain's ledger: landing swaps against pools and recording every outcome by signature.

Every send that reaches the chain leaves one `sim_swaps` row under its signature, so
a repeated signature is answered from the row and never executes twice:
  confirmed  executed; the pool's reserves moved in the same transaction
  failed     landed but failed (slippage, liquidity) or rejected by the node (transient)
  dropped    timed out and never landed; its blockhash has expired, so it never will
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

from pony.orm import db_session, select

from config import find_token
from storage.direct import Transaction
from storage.sql import IntegrityErrors
from storage.venues.base import HopSwap, SignatureStatus, SwapRequest, SwapResult, SwapView, VenueError
from storage.venues.sim import amm
from storage.venues.sim.world import RACE_ERRORS as WORLD_RACE_ERRORS, World, to_datetime

RACE_ERRORS = (*WORLD_RACE_ERRORS, *IntegrityErrors)

# Codes after which a new attempt (new quote, new signature) can succeed.
RETRIABLE = frozenset({"transient", "slippage_exceeded", "expired"})
EXPIRED_MESSAGE = "blockhash expired: the transaction timed out and can never land"


def hops_of(text: str | None) -> tuple[HopSwap, ...]:
    """A route's hops from their stored JSON (none for a plain swap)."""
    return tuple(HopSwap.from_record(hop, find_token) for hop in json.loads(text)) if text else ()


def result_of(row) -> SwapResult:
    """The SwapResult a recorded row stands for (what a repeated send gets back)."""
    if row.status == "confirmed":
        return SwapResult(row.signature, "confirmed", amount_out=int(row.amount_out), executed_at=row.executed_at,
                          hops=hops_of(row.hops))
    if row.status == "dropped":
        return SwapResult(row.signature, "failed", error_code="expired", message=EXPIRED_MESSAGE, retriable=True)
    return SwapResult(row.signature, "failed", error_code=row.error_code, message=row.message,
                      retriable=row.error_code in RETRIABLE)


class Ledger:
    """Records and lands swaps for one world (both venues share it), a block at a time.

    A block is the swaps a venue sends together: one transaction locks the pools they
    touch (in one order, so blocks of the two venues never deadlock), lands them in
    order at the block's one timestamp, records every outcome and moves each pool once.
    Before, every swap held its pool's row lock through a commit of its own, so all
    SOL/USDC swaps queued behind one another's fsync.
    """

    def __init__(self, world: World):
        self.world = world
        self.E = world.E
        self.direct = world.direct
        self.dialect = self.direct.dialect

    def recorded(self, signature: str) -> SwapResult | None:
        """The outcome already recorded for a signature, or None."""
        with db_session:
            row = self.E.SimSwap.get(signature=signature)
            return result_of(row) if row is not None else None

    def record(self, request: SwapRequest, status: str, error_code: str, message: str) -> SwapResult:
        """Record an outcome that moved no reserves (a rejection or a drop); first record wins."""
        return self.apply_block([BlockEntry(request, status, error_code, message)])[0]

    def land(self, request: SwapRequest) -> SwapResult:
        """Execute at this moment's price (or fail it) and record the outcome, atomically."""
        return self.apply_block([BlockEntry(request, "land")])[0]

    def apply_block(self, entries: list["BlockEntry"]) -> list[SwapResult]:
        """Land or record every entry in one transaction; per entry its result, in order.

        A signature recorded before (or earlier in the block) is answered from its record
        and never executes twice.
        """
        pairs = {}
        for entry in entries:
            if entry.kind == "land":
                request = entry.request
                try:
                    pairs[id(entry)] = ([self.world.require_pair(hop.token_in, hop.token_out) for hop in request.hops]
                                        or [self.world.require_pair(request.token_in, request.token_out)])
                except VenueError as error:
                    entry.kind, entry.error_code, entry.message = "failed", error.code, error.message
        conn = self.direct.get()
        try:
            with conn.transaction() as tx:
                block = _Block(self, tx, entries, pairs)
                results = block.run()
                block.write()
            return results
        except RACE_ERRORS:  # another process recorded one of these signatures meanwhile: ask again
            if len(entries) == 1:
                found = self.recorded(entries[0].request.signature)
                if found is not None:
                    return [found]
            return [r for entry in entries for r in self.apply_block([entry])]

    def signature_status(self, signature: str) -> SignatureStatus:
        """confirmed (with amounts), failed (with its code), or not_found: never landed, and now
        never will (an unknown signature is recorded as expired before the answer, so a copy
        of it still on its way is refused when it arrives)."""
        if not isinstance(signature, str):
            return SignatureStatus(str(signature), "not_found")
        d, conn = self.dialect, self.direct.get()
        expired = conn.execute(
            f"INSERT INTO sim_swaps ({_SWAP_COLUMNS}) VALUES ({d.placeholders(12)}) "
            f"ON CONFLICT (signature) DO NOTHING RETURNING signature",
            (signature, "", "", "", "", "0", None, "dropped", "expired", EXPIRED_MESSAGE, d.ts(self.world.now()), None))
        if expired:
            return SignatureStatus(signature, "not_found")
        # It exists (committed: a concurrent landing was waited for by the INSERT); read it now.
        (status, dex, amount_in, amount_out, executed_at, error_code, hops), = conn.execute(
            f"SELECT status, dex, amount_in, amount_out, executed_at, error_code, hops FROM sim_swaps "
            f"WHERE signature = {d.ph}", (signature,))
        if status == "dropped":
            return SignatureStatus(signature, "not_found")
        confirmed = status == "confirmed"
        return SignatureStatus(signature, status, dex=dex, amount_in=int(amount_in),
                               amount_out=int(amount_out) if confirmed else None,
                               executed_at=d.read_ts(executed_at), error_code=error_code,
                               hops=hops_of(hops) if confirmed else ())

    def swaps_for_order(self, order_id) -> list[SwapView]:
        """Confirmed swaps of one order, oldest first."""
        with db_session:
            rows = select(s for s in self.E.SimSwap if s.order_id == str(order_id) and s.status == "confirmed")
            rows = sorted(rows, key=lambda s: (s.executed_at, s.signature))
            views = []
            for s in rows:
                hops = hops_of(s.hops)
                if not hops:
                    views.append(SwapView(s.signature, s.dex, s.order_id, find_token(s.token_in),
                                          find_token(s.token_out), int(s.amount_in), int(s.amount_out), s.executed_at))
                # A route is one transaction: each of its hops' swaps under the one signature.
                views += [SwapView(s.signature, dex, s.order_id, hop.token_in, hop.token_out, amount_in, amount_out,
                                   s.executed_at) for hop in hops for dex, amount_in, amount_out in hop.legs]
            return views


def _shares(amount: int, planned: list[int]) -> list[int]:
    """`amount` split in the proportions of `planned` (rounded down; the last takes the rest)."""
    whole = sum(planned)
    if whole <= 0:
        return [amount] + [0] * (len(planned) - 1)
    shares = [amount * part // whole for part in planned[:-1]]
    return shares + [amount - sum(shares)]


@dataclass
class BlockEntry:
    """One swap in a block: land it (`kind` "land"), or record it as "failed" or "dropped"."""

    request: SwapRequest
    kind: str
    error_code: str | None = None
    message: str | None = None


_SWAP_COLUMNS = ("signature, dex, order_id, token_in, token_out, amount_in, amount_out, status, "
                 "error_code, message, executed_at, hops")


class _Block:
    """The work of one `Ledger.apply_block` inside its transaction."""

    def __init__(self, ledger: Ledger, tx: Transaction, entries: list[BlockEntry], pairs: dict):
        self.ledger, self.tx, self.entries, self.pairs = ledger, tx, entries, pairs
        self.d = ledger.dialect
        self.clock = ledger.world.clock()
        self.now = to_datetime(self.clock)
        self.rows: list[tuple] = []
        # key -> [reserve_a, reserve_b, fee_bps, updated_at]: the rows, moved as swaps land
        self.pools: dict[tuple[str, str, str], list] = {}
        self.moved: set[tuple[str, str, str]] = set()

    def run(self) -> list[SwapResult]:
        self._lock_pools()
        known = self._recorded()
        results = []
        for entry in self.entries:
            signature = entry.request.signature
            if signature in known:
                results.append(known[signature])
                continue
            result = self._apply(entry)
            known[signature] = result
            results.append(result)
        return results

    def _lock_pools(self) -> None:
        keys = sorted({(dex, a.symbol, b.symbol) for e in self.entries if id(e) in self.pairs
                       for dex, (a, b) in self._pools_of(e)})
        if not keys:
            return
        d, p = self.d, self.d.ph
        where = " OR ".join([f"(dex = {p} AND token_a = {p} AND token_b = {p})"] * len(keys))
        rows = self.tx.execute(f"SELECT dex, token_a, token_b, reserve_a, reserve_b, fee_bps, updated_at "
                               f"FROM sim_pools WHERE {where} "
                               f"ORDER BY dex, token_a, token_b{' FOR UPDATE' if d.postgres else ''}",
                               [v for key in keys for v in key])
        self.pools = {(dex, a, b): [ra, rb, fee, d.read_ts(at)] for dex, a, b, ra, rb, fee, at in rows}

    def _recorded(self) -> dict[str, SwapResult]:
        signatures = sorted({e.request.signature for e in self.entries})
        d = self.d
        rows = self.tx.execute(f"SELECT signature, status, amount_out, error_code, message, executed_at, hops "
                               f"FROM sim_swaps WHERE signature IN ({d.placeholders(len(signatures))})", signatures)
        return {sig: result_of(SimpleNamespace(signature=sig, status=status, amount_out=out, error_code=code,
                                               message=message, executed_at=d.read_ts(at), hops=hops))
                for sig, status, out, code, message, at, hops in rows}

    def _pools_of(self, entry: BlockEntry) -> list[tuple[str, tuple]]:
        """(dex, (token_a, token_b)) of every pool the entry's swap touches."""
        pairs, hops = self.pairs[id(entry)], entry.request.hops
        if not hops:
            return [(entry.request.dex, pairs[0])]
        return [(leg[0], pair) for hop, pair in zip(hops, pairs) for leg in hop.legs]

    def _apply(self, entry: BlockEntry) -> SwapResult:
        request = entry.request
        if entry.kind != "land":
            return self._record(request, entry.kind, None, entry.error_code, entry.message)
        if request.hops:
            return self._apply_route(entry)
        (token_a, token_b), = self.pairs[id(entry)]
        staged: dict[tuple[str, str, str], list] = {}
        try:
            amount_out = self._swap(staged, request.dex, token_a, token_b, request.token_in, request.amount_in)
        except VenueError as error:
            return self._record(request, "failed", None, error.code, error.message)
        return self._settle(request, staged, amount_out)

    def _apply_route(self, entry: BlockEntry) -> SwapResult:
        """Every hop of a route, in order, on staged pools: the next hop sells what the last one
        gave, split as planned; the pools move only if the last hop's total meets the minimum."""
        request, staged, amount = entry.request, {}, entry.request.amount_in
        executed = []
        try:
            for hop, (token_a, token_b) in zip(request.hops, self.pairs[id(entry)]):
                legs = []
                for (dex, _, _), leg_in in zip(hop.legs, _shares(amount, [leg[1] for leg in hop.legs])):
                    if leg_in > 0:
                        legs.append((dex, leg_in, self._swap(staged, dex, token_a, token_b, hop.token_in, leg_in)))
                amount = sum(out for _, _, out in legs)
                executed.append(HopSwap(hop.token_in, hop.token_out, tuple(legs)))
        except VenueError as error:
            return self._record(request, "failed", None, error.code, error.message)
        return self._settle(request, staged, amount, tuple(executed))

    def _swap(self, staged: dict, dex: str, token_a, token_b, token_in, amount_in: int) -> int:
        """Sell `amount_in` into the pool, moving its staged copy; its output (VenueError if it cannot)."""
        key = (dex, token_a.symbol, token_b.symbol)
        pool = staged.get(key) or self.pools.get(key)
        if pool is None:
            raise VenueError("no_pool", "no pool for this pair")
        reserve_a, reserve_b, fee_bps, updated_at = pool
        eff_a, eff_b, root = self.ledger.world.pool_now(key, reserve_a, reserve_b, updated_at, self.clock)
        sells_a = token_in.symbol == token_a.symbol
        math = amm.swap_out(*((eff_a, eff_b) if sells_a else (eff_b, eff_a)), amount_in, fee_bps)
        new_a, new_b = (math.reserve_in, math.reserve_out) if sells_a else (math.reserve_out, math.reserve_in)
        new_a, new_b = amm.stored(new_a, new_b, root)
        if max(new_a, new_b) > amm.MAX_RESERVE:
            raise VenueError("insufficient_liquidity", "the pool cannot absorb an order this large")
        staged[key] = [new_a, new_b, fee_bps, self.now]  # relaxed up to now: the next swap starts here
        return math.amount_out

    def _settle(self, request: SwapRequest, staged: dict, amount_out: int, hops=()) -> SwapResult:
        """Confirm (moving the staged pools) when the output meets the minimum, else fail it all."""
        if amount_out < request.min_amount_out:
            message = (f"slippage tolerance exceeded: output {amount_out} is below the minimum "
                       f"{request.min_amount_out}")
            return self._record(request, "failed", amount_out, "slippage_exceeded", message)
        for key, pool in staged.items():
            self.pools[key][:] = pool
            self.moved.add(key)
        return self._record(request, "confirmed", amount_out, None, None, hops)

    def _record(self, request: SwapRequest, status, amount_out, error_code, message, hops=()) -> SwapResult:
        out = None if amount_out is None else str(amount_out)
        text = json.dumps([hop.to_record() for hop in hops]) if hops else None
        self.rows.append((request.signature, request.dex, str(request.order_id), request.token_in.symbol,
                          request.token_out.symbol, str(request.amount_in), out, status, error_code, message,
                          self.d.ts(self.now), text))
        return result_of(SimpleNamespace(signature=request.signature, status=status, amount_out=out,
                                         error_code=error_code, message=message, executed_at=self.now, hops=text))

    def write(self) -> None:
        """Insert the block's records and move its pools; commit."""
        d = self.d
        updates = [(self.pools[k][0], self.pools[k][1], d.ts(self.now), *k) for k in sorted(self.moved)]
        if not self.rows:
            return self.tx.commit()
        if d.postgres:
            cursor = self.tx.cursor
            sql = (b"INSERT INTO sim_swaps (" + _SWAP_COLUMNS.encode() + b") VALUES "
                   + d.values(cursor, "(" + ", ".join(["%s"] * 12) + ")", self.rows))
            if updates:
                sql += (b"; UPDATE sim_pools AS p SET reserve_a = v.ra, reserve_b = v.rb, updated_at = v.at "
                        b"FROM (VALUES " + d.values(cursor, "(%s::bigint, %s::bigint, %s::timestamp, %s, %s, %s)",
                                                    updates)
                        + b") AS v (ra, rb, at, dex, a, b) WHERE p.dex = v.dex AND p.token_a = v.a AND p.token_b = v.b")
            return self.tx.commit(sql)
        self.tx.executemany(f"INSERT INTO sim_swaps ({_SWAP_COLUMNS}) VALUES ({d.placeholders(12)})", self.rows)
        if updates:
            self.tx.executemany("UPDATE sim_pools SET reserve_a = ?, reserve_b = ?, updated_at = ? "
                                "WHERE dex = ? AND token_a = ? AND token_b = ?", updates)
        self.tx.commit()
