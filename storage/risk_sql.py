"""The kept figures of the risk limits (storage/risk.py), in plain SQL on the hot paths' connections.

Two tables (migration 7): `risk_open_orders` (owner → orders open now) and `risk_usage`
(owner, epoch minute → micro-USD accepted in that minute). A check reads one counter row and
at most 1,441 minute rows per owner, whatever the owner's volume (a busy key submits tens of
millions of orders a day: a scan of 24 h of orders per submit is out of the question).

- The intake (`lock_and_read`, `add`) decides and counts a batch in the transaction that
  inserts it. On Postgres it first takes a transaction-level advisory lock per owner, in sorted
  order (no deadlock between two web processes' batches), so two batches of one owner are
  decided one after the other and never both pass a limit; SQLite has one writer.
- The appender (`releases`, then `upsert_sql`) takes back what an order added, in the transaction that stores its
  terminal event (a terminal status never changes: exactly once). An order counts as open until
  its terminal event; its value leaves the 24 h sum only when it is cancelled or expired.

Rows are always locked in (owner, minute) order, the counters before the minutes, by intake and
appender alike, so the two never wait for each other in a cycle.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Sequence

from storage.direct import Transaction
from storage.sql import Dialect

WINDOW_MINUTES = 1440
RISK_LOCK_CLASS = 7243007  # first key of the two-key advisory locks (one per owner); migrations use 7243001
# A cancel or expiry in a minute bucket this old gives nothing back: the bucket is about to leave
# the window (and may be pruned; giving back would re-create it, negative). It errs high, never low.
RELEASE_MINUTES = WINDOW_MINUTES - 10


def epoch_minute(ts: datetime) -> int:
    """The minute (since the epoch, naive UTC) a timestamp falls in."""
    return int((ts - datetime(1970, 1, 1)).total_seconds() // 60)


def lock_key(owner: str) -> int:
    """The owner's advisory lock (a signed 32-bit hash; a collision only serialises two owners)."""
    return int.from_bytes(hashlib.sha256(owner.encode()).digest()[:4], "big", signed=True)


def lock_and_read(tx: Transaction, owners: Sequence[str], client_ids: Sequence[tuple[str, str]],
                  minute: int) -> tuple[dict[str, int], dict[str, int], set[tuple[str, str]]]:
    """Lock the owners (Postgres) and read their figures: (open orders, micro-USD of the 24 h
    window ending in `minute`, the (owner, clientOrderId) pairs among `client_ids` already
    stored: repeats, answered with their order and never refused). One round trip."""
    d = tx.dialect
    ph = d.placeholders(len(owners))
    sql = (f"SELECT 'o', owner, CAST(open_orders AS TEXT) FROM risk_open_orders WHERE owner IN ({ph}) "
           f"UNION ALL SELECT 'u', owner, CAST(SUM(usd_micros) AS TEXT) FROM risk_usage "
           f"WHERE owner IN ({ph}) AND minute >= {d.ph} GROUP BY owner")
    params: list = [*owners, *owners, minute - WINDOW_MINUTES]
    if client_ids:
        sql += " UNION ALL SELECT 'c', owner, client_order_id FROM orders WHERE " + " OR ".join(
            [f"(owner = {d.ph} AND client_order_id = {d.ph})"] * len(client_ids))
        params += [v for pair in client_ids for v in pair]
    if d.postgres:
        locks = "".join(f"SELECT pg_advisory_xact_lock({RISK_LOCK_CLASS}, {key}); "
                        for key in sorted({lock_key(owner) for owner in owners}))
        sql = locks + sql
    open_orders, notional, repeats = {}, {}, set()
    for kind, owner, value in tx.execute(sql, params):
        if kind == "o":
            open_orders[owner] = int(value)
        elif kind == "u":
            notional[owner] = int(value)
        else:
            repeats.add((owner, value))
    return open_orders, notional, repeats


def figures(conn, owner: str, minute: int) -> tuple[int, int]:
    """An owner's kept figures now, without a lock: (open orders, micro-USD of the 24 h window)."""
    d = conn.dialect
    rows = conn.execute(f"SELECT (SELECT open_orders FROM risk_open_orders WHERE owner = {d.ph}), "
                        f"(SELECT SUM(usd_micros) FROM risk_usage WHERE owner = {d.ph} AND minute >= {d.ph})",
                        (owner, owner, minute - WINDOW_MINUTES))
    open_orders, used = rows[0]
    return int(open_orders or 0), int(used or 0)


def add(tx: Transaction, opened: dict[str, int], used: dict[str, int], minute: int,
        notional_owners: Sequence[str]) -> None:
    """Count a batch's accepted orders in (`opened`: orders per owner, `used`: micro-USD per
    owner in `minute`), prune the minutes that left the window of `notional_owners`, and
    commit (one round trip on Postgres)."""
    d = tx.dialect
    opened_rows = sorted(opened.items())
    used_rows = sorted((owner, minute, usd) for owner, usd in used.items())
    prune_before = minute - WINDOW_MINUTES
    if d.postgres:
        parts = [upsert_sql(d, tx.cursor, opened_rows, used_rows)]
        if notional_owners:
            parts.append(tx.cursor.mogrify("DELETE FROM risk_usage WHERE owner = ANY(%s) AND minute < %s",
                                           (list(notional_owners), prune_before)))
        tx.commit(b"; ".join(p for p in parts if p) or None)
        return
    upsert_sqlite(tx, opened_rows, used_rows)
    if notional_owners:
        tx.execute(f"DELETE FROM risk_usage WHERE owner IN ({d.placeholders(len(notional_owners))}) "
                   f"AND minute < ?", [*notional_owners, prune_before])
    tx.commit()


def releases(ended: list[tuple[str, int, int | None, datetime, bool]], now: datetime
             ) -> tuple[list[tuple[str, int]], list[tuple[str, int, int]]]:
    """What ended orders give back: (owner, -open) per owner and (owner, minute, -micro-USD)
    per minute bucket, sorted. `ended` holds per order (owner, risk_open, risk_usd_micros,
    created_at, whether it gives its value back: cancelled or expired)."""
    opened: dict[str, int] = {}
    used: dict[tuple[str, int], int] = {}
    oldest = epoch_minute(now) - RELEASE_MINUTES
    for owner, risk_open, usd, created_at, gives_back in ended:
        if risk_open:
            opened[owner] = opened.get(owner, 0) - risk_open
        minute = epoch_minute(created_at)
        if gives_back and usd and minute >= oldest:
            used[(owner, minute)] = used.get((owner, minute), 0) - usd
    return sorted(opened.items()), sorted((o, m, usd) for (o, m), usd in used.items())


def upsert_sql(d: Dialect, cursor, opened: list[tuple[str, int]], used: list[tuple[str, int, int]]) -> bytes:
    """Postgres: the statements adding `opened` and `used` (deltas, in lock order) to the figures."""
    parts = []
    if opened:
        parts.append(b"INSERT INTO risk_open_orders (owner, open_orders) VALUES " + d.values(cursor, "(%s, %s)", opened)
                     + b" ON CONFLICT (owner) DO UPDATE SET open_orders = "
                       b"risk_open_orders.open_orders + EXCLUDED.open_orders")
    if used:
        parts.append(b"INSERT INTO risk_usage (owner, minute, usd_micros) VALUES "
                     + d.values(cursor, "(%s, %s, %s)", used) + b" ON CONFLICT (owner, minute) DO UPDATE SET "
                       b"usd_micros = risk_usage.usd_micros + EXCLUDED.usd_micros")
    return b"; ".join(parts)


def upsert_sqlite(tx: Transaction, opened: list[tuple[str, int]], used: list[tuple[str, int, int]]) -> None:
    """SQLite: `upsert_sql`'s statements."""
    if opened:
        tx.executemany("INSERT INTO risk_open_orders (owner, open_orders) VALUES (?, ?) ON CONFLICT (owner) "
                       "DO UPDATE SET open_orders = open_orders + excluded.open_orders", opened)
    if used:
        tx.executemany("INSERT INTO risk_usage (owner, minute, usd_micros) VALUES (?, ?, ?) ON CONFLICT "
                       "(owner, minute) DO UPDATE SET usd_micros = usd_micros + excluded.usd_micros", used)
