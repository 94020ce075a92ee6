"""Webhook deliveries in plain SQL: recorded with their events, leased one head per order.

A delivery is one event of an order that names a callbackUrl, to be POSTed there. It is
written by the statement or transaction that stores the event itself (the intake's for
`pending`, the appender's for every later one), so an event is never stored without its
delivery: a crash in between loses nothing. Orders without a callbackUrl add nothing to
either path (no CTE, no statement).

Workers send an order's deliveries in `seq` order: only the oldest pending one of an order
(its head) is ever leased, and the next becomes the head only once that one is delivered or
given up. A lease is a random token and an expiry; whoever holds an unexpired lease is the
only sender, and a worker that dies holding one loses it at its expiry to another worker
(which may send the event a second time: delivery is at least once).
"""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

from storage.direct import DirectConnection, Transaction
from storage.records import EventRecord
from storage.sql import Dialect

_COLUMNS = "order_id, seq, url, owner, created_at, next_at"

# Postgres: joined to the intake's `WITH ins AS (INSERT INTO orders ... RETURNING id, created_at,
# owner, callback_url)` when the batch has an order with a callbackUrl: its `pending` deliveries.
INTAKE_CTE = ("wh AS (INSERT INTO webhook_deliveries (" + _COLUMNS + ") SELECT id, 1, callback_url, owner, "
              "created_at, created_at FROM ins WHERE callback_url IS NOT NULL), ")


def deliveries(d: Dialect, state: dict, results: list) -> list[tuple]:
    """The delivery rows of the events just accepted whose order has a callbackUrl (a row per
    event: order id, seq, url, owner, created at, due at)."""
    if not any(order["callback_url"] for order in state.values()):  # the usual batch: nothing to do
        return []
    rows = []
    for result in results:
        if isinstance(result, EventRecord):
            url = state[result.order_id]["callback_url"]
            if url:
                ts = d.ts(result.timestamp)
                rows.append((d.uuid(result.order_id), result.seq, url, result.owner, ts, ts))
    return rows


def insert_sql(d: Dialect, cursor, rows: list[tuple]) -> bytes:
    """Postgres: the statement inserting these delivery rows (joined to the appender's commit)."""
    return (b"INSERT INTO webhook_deliveries (" + _COLUMNS.encode() + b") VALUES "
            + d.values(cursor, "(%s, %s, %s, %s, %s, %s)", rows))


def insert_sqlite(tx: Transaction, rows: list[tuple]) -> None:
    """SQLite: insert these delivery rows in the transaction `tx`."""
    if rows:
        tx.executemany(f"INSERT INTO webhook_deliveries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)


def claim(conn: DirectConnection, token: str, now: datetime, lease_until: datetime, limit: int) -> list[tuple]:
    """Lease up to `limit` due heads (the oldest pending delivery of each order) to `token`.

    The outer conditions repeat the lease test so that two workers racing for one head never
    both win: Postgres re-checks them on the row the other's UPDATE left behind.
    Rows: (order id, seq, url, owner, attempts including this one, created at)."""
    d, p = conn.dialect, conn.dialect.ph
    free = "(lease_until IS NULL OR lease_until < {p})".format(p=p)
    rows = conn.execute(
        f"UPDATE webhook_deliveries SET lease_token = {p}, lease_until = {p}, attempts = attempts + 1, "
        f"last_attempt_at = {p} WHERE state = 'pending' AND {free} AND (order_id, seq) IN ("
        f"SELECT w.order_id, w.seq FROM webhook_deliveries w JOIN (SELECT order_id, MIN(seq) AS seq "
        f"FROM webhook_deliveries WHERE state = 'pending' GROUP BY order_id) h "
        f"ON h.order_id = w.order_id AND h.seq = w.seq WHERE w.next_at <= {p} AND "
        f"(w.lease_until IS NULL OR w.lease_until < {p}) ORDER BY w.next_at LIMIT {int(limit)}) "
        f"RETURNING order_id, seq, url, owner, attempts, created_at",
        (token, d.ts(lease_until), d.ts(now), d.ts(now), d.ts(now), d.ts(now)))
    return [(d.read_uuid(o), seq, url, owner or "", attempts, d.read_ts(created))
            for o, seq, url, owner, attempts, created in rows]


def events(conn: DirectConnection, keys: list[tuple[UUID, int]]) -> dict[tuple[UUID, int], EventRecord]:
    """The stored events with these (order id, seq) keys."""
    d = conn.dialect
    where = " OR ".join([f"(order_id = {d.ph} AND seq = {d.ph})"] * len(keys))
    rows = conn.execute(f"SELECT order_id, seq, status, attempt, created_at, meta FROM order_events WHERE {where}",
                        [v for oid, seq in keys for v in (d.uuid(oid), seq)])
    found = {}
    for oid, seq, status, attempt, ts, meta in rows:
        oid = d.read_uuid(oid)
        found[(oid, seq)] = EventRecord(oid, seq, status, attempt, d.read_ts(ts), d.read_json(meta) or {})
    return found


def settle(conn: DirectConnection, order_id: UUID, seq: int, token: str, state: str, now: datetime,
           next_at: datetime, response_status: int | None, error: str | None) -> bool:
    """Record an attempt's outcome and release the lease, if `token` still holds it: `state`
    'delivered', 'failed' (given up), or 'pending' again, due at `next_at`. False when the
    lease was lost meanwhile (another worker took the delivery over)."""
    d, p = conn.dialect, conn.dialect.ph
    rows = conn.execute(
        f"UPDATE webhook_deliveries SET state = {p}, next_at = {p}, response_status = {p}, error = {p}, "
        f"delivered_at = {p}, lease_token = NULL, lease_until = NULL "
        f"WHERE order_id = {p} AND seq = {p} AND lease_token = {p} RETURNING seq",
        (state, d.ts(next_at), response_status, error, d.ts(now) if state == "delivered" else None,
         d.uuid(order_id), seq, token))
    return bool(rows)


READ_COLUMNS = ("seq", "url", "state", "attempts", "created_at", "last_attempt_at", "delivered_at", "next_at",
                "response_status", "error")


def of_order(conn: DirectConnection, order_id: UUID) -> list[tuple]:
    """Every delivery of one order, by seq: rows of READ_COLUMNS (timestamps as datetimes)."""
    d = conn.dialect
    rows = conn.execute(f"SELECT {', '.join(READ_COLUMNS)} FROM webhook_deliveries WHERE order_id = {d.ph} "
                        f"ORDER BY seq", (d.uuid(order_id),))
    return [(seq, url, state, attempts, d.read_ts(created), _ts(d, last), _ts(d, delivered), d.read_ts(next_at),
             status, error) for seq, url, state, attempts, created, last, delivered, next_at, status, error in rows]


def _ts(d: Dialect, value) -> datetime | None:
    return None if value is None else d.read_ts(value)
