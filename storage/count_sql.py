"""Kept order counts per status (migration 8), in plain SQL on the hot paths' connections.

/metrics reads how many orders are in each status once a second per web process: a COUNT(*)
over the history cost 84 ms of Postgres at a million orders. Instead `order_counts` is kept up
to date in the transactions that change a status, and read in a few hundred rows, whatever
the history:
- the intake adds its inserted orders to `pending` in the statement that inserts them;
- the appender adds a batch's net change per status (an order that went pending -> routing ->
  building in one batch moves one count, from pending to building) in the statement that
  updates the orders: one row per status the batch touched, never one per event.

A counter row would be a hot row (every writer's transaction holding it until commit), so
each status has shards: a writer on Postgres adds to the shard of its backend
(pg_backend_pid() % SHARDS), so two connections meet on a row only when their pids collide,
and then wait, never deadlock: every transaction writes its count rows in status order, after
the order rows and before the risk figures (storage/risk_sql.py), intake and appender alike.
SQLite has one writer: shard 0. A shard may go negative (orders counted in by the web's
backend, out by a worker's); the sum per status is the count.
"""
from __future__ import annotations

from typing import Iterable

from storage.direct import Transaction
from storage.sql import Dialect

SHARDS = 64


def deltas(moves: Iterable[tuple[str, str]]) -> list[tuple[str, int]]:
    """The net change per status of a batch of (status before, status after) moves, in status
    order, without the statuses whose changes cancel out."""
    net: dict[str, int] = {}
    for before, after in moves:
        if before != after:
            net[before] = net.get(before, 0) - 1
            net[after] = net.get(after, 0) + 1
    return sorted((status, n) for status, n in net.items() if n)


def upsert_sql(d: Dialect, cursor, changes: list[tuple[str, int]]) -> bytes:
    """Postgres: the statement adding `changes` (status, delta) to this backend's shards."""
    if not changes:
        return b""
    return (b"INSERT INTO order_counts (status, shard, orders) VALUES "
            + d.values(cursor, f"(%s, mod(pg_backend_pid(), {SHARDS}), %s)", changes)
            + b" ON CONFLICT (status, shard) DO UPDATE SET orders = order_counts.orders + EXCLUDED.orders")


def upsert_sqlite(tx: Transaction, changes: list[tuple[str, int]]) -> None:
    """SQLite: `upsert_sql`'s statement, on shard 0."""
    if changes:
        tx.executemany("INSERT INTO order_counts (status, shard, orders) VALUES (?, 0, ?) ON CONFLICT "
                       "(status, shard) DO UPDATE SET orders = orders + excluded.orders", changes)


# Postgres: a CTE to join to the intake's `WITH ins AS (INSERT INTO orders ... RETURNING id, ...)`
# statement, counting what it inserted in the same statement (nothing when it inserted nothing).
INTAKE_CTE = (f"cnt AS (INSERT INTO order_counts (status, shard, orders) SELECT 'pending', "
              f"mod(pg_backend_pid(), {SHARDS}), COUNT(*) FROM ins HAVING COUNT(*) > 0 ON CONFLICT (status, shard) "
              f"DO UPDATE SET orders = order_counts.orders + EXCLUDED.orders)")


def counts(conn) -> dict[str, int]:
    """How many orders are in each status now (statuses with none may be absent or 0)."""
    return {status: int(n) for status, n in
            conn.execute("SELECT status, SUM(orders) FROM order_counts GROUP BY status")}

