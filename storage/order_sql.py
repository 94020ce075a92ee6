"""The order store's hot paths in plain SQL on Pony's own connection.

Measured (bench/): appending events through Pony entities cost three statements per
event (a locking select, an update, an insert) and a third of a worker's CPU. Here a
batch of events for many orders takes three statements in all: lock the orders, insert
the events, update the orders. The same code serves Postgres and SQLite; `Dialect`
holds what differs (placeholders, how UUIDs, timestamps and JSON travel).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Sequence
from uuid import UUID

from psycopg2.extras import execute_values

from storage.sql import Dialect
from storage.records import EventDraft, EventRecord, OrderRecord
from storage.status import StatusRuleError, check_transition

ORDER_COLUMNS = ("id, owner, status, type, token_in, token_out, amount, slippage_bps, limit_price, "
                 "expires_in_seconds, client_order_id, created_at, updated_at, attempts, attempt, last_seq, "
                 "route, fills, error")


def fills_from_confirmation(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One fill per executed swap, from a `confirmed` event's meta."""
    legs = meta.get("legs")
    if legs:
        return [{k: leg.get(k) for k in ("dex", "amountIn", "amountOut", "txHash")} for leg in legs]
    return [{k: meta.get(k) for k in ("dex", "amountIn", "amountOut", "txHash")}]


def order_from_row(d: Dialect, row: Sequence[Any], events=None) -> OrderRecord:
    """An OrderRecord from a row of ORDER_COLUMNS."""
    (oid, owner, status, type_, token_in, token_out, amount, slippage, limit_price, expires, client_id,
     created, updated, attempts, attempt, last_seq, route, fills, error) = row
    return OrderRecord(
        id=d.read_uuid(oid), owner=owner or "", status=status, type=type_, token_in=token_in,
        token_out=token_out, amount=Decimal(amount), slippage_bps=slippage,
        limit_price=Decimal(limit_price) if limit_price is not None else None,
        expires_in_seconds=expires, client_order_id=client_id, created_at=d.read_ts(created),
        updated_at=d.read_ts(updated), attempts=attempts, attempt=attempt, last_seq=last_seq,
        route=d.read_json(route), fills=d.read_json(fills) or [], error=d.read_json(error), events=events,
    )


def append_events(d: Dialect, cursor, drafts: list[EventDraft]) -> list[EventRecord | StatusRuleError]:
    """Check and append `drafts` in the caller's transaction; a refused draft's slot holds its error."""
    ids = sorted({draft.order_id for draft in drafts})  # lock in one order: no deadlocks between writers
    lock = " FOR UPDATE" if d.postgres else ""
    cursor.execute(f"SELECT id, status, attempt, attempts, last_seq FROM orders "
                   f"WHERE id IN ({d.placeholders(len(ids))}) ORDER BY id{lock}", [d.uuid(i) for i in ids])
    state = {d.read_uuid(r[0]): {"status": r[1], "attempt": r[2], "attempts": r[3], "last_seq": r[4]}
             for r in cursor.fetchall()}
    results: list[EventRecord | StatusRuleError] = []
    events, changed = [], {}
    for draft in drafts:
        order = state.get(draft.order_id)
        if order is None:
            results.append(StatusRuleError(f"order {draft.order_id} does not exist"))
            continue
        try:
            check_transition(order["status"], order["attempt"], draft.status, draft.attempt)
        except StatusRuleError as exc:
            results.append(exc)
            continue
        _apply(order, draft)
        changed[draft.order_id] = order
        events.append((d.uuid(draft.order_id), order["last_seq"], draft.status, draft.attempt,
                       d.ts(draft.timestamp), d.json(draft.meta)))
        results.append(EventRecord(draft.order_id, order["last_seq"], draft.status, draft.attempt,
                                   draft.timestamp, draft.meta))
    if events:
        _insert_events(d, cursor, events)
        _update_orders(d, cursor, changed)
    return results


def _apply(order: dict, draft: EventDraft) -> None:
    """What an event changes on its order (the order row mirrors its latest events)."""
    order["last_seq"] += 1
    order.update(status=draft.status, attempt=draft.attempt, updated_at=draft.timestamp)
    meta = draft.meta
    if draft.status == "routing":
        order["attempts"] = max(order["attempts"], draft.attempt)
        if "route" in meta:
            order["route"] = meta["route"]
    elif draft.status == "confirmed":
        order["fills"] = fills_from_confirmation(meta)
    elif draft.status == "failed":
        order["error"] = meta.get("error")


def _insert_events(d: Dialect, cursor, rows: list[tuple]) -> None:
    sql = "INSERT INTO order_events (order_id, seq, status, attempt, created_at, meta) VALUES "
    if d.postgres:
        execute_values(cursor, sql + "%s", rows, template="(%s, %s, %s, %s, %s, %s::jsonb)", page_size=1000)
    else:
        cursor.executemany(sql + "(?, ?, ?, ?, ?, ?)", rows)


def _update_orders(d: Dialect, cursor, changed: dict[UUID, dict]) -> None:
    # route, fills and error are only ever set, never cleared: COALESCE keeps the old value.
    rows = [(d.uuid(oid), o["status"], o["attempt"], o["attempts"], o["last_seq"], d.ts(o["updated_at"]),
             d.json(o.get("route")), d.json(o.get("fills")), d.json(o.get("error")))
            for oid, o in changed.items()]
    if d.postgres:
        execute_values(cursor, """
            UPDATE orders AS o SET status = v.status, attempt = v.attempt, attempts = v.attempts,
                last_seq = v.last_seq, updated_at = v.updated_at, route = COALESCE(v.route::jsonb, o.route),
                fills = COALESCE(v.fills::jsonb, o.fills), error = COALESCE(v.error::jsonb, o.error)
            FROM (VALUES %s) AS v (id, status, attempt, attempts, last_seq, updated_at, route, fills, error)
            WHERE o.id = v.id""", rows,
            template="(%s::uuid, %s, %s::int, %s::int, %s::int, %s::timestamp, %s, %s, %s)", page_size=1000)
    else:
        cursor.executemany("""
            UPDATE orders SET status = ?, attempt = ?, attempts = ?, last_seq = ?, updated_at = ?,
                route = COALESCE(?, route), fills = COALESCE(?, fills), error = COALESCE(?, error)
            WHERE id = ?""", [r[1:] + (r[0],) for r in rows])


def claim_order(d: Dialect, cursor, order_id: UUID, job_id: str, worker: str) -> OrderRecord | None | bool:
    """Bind the order to `job_id` (run by `worker`) and read it with its events.

    Returns the order, False when another job owns it, or None when there is no such order.
    """
    p = d.ph
    cursor.execute(f"UPDATE orders SET job_id = {p}, worker = {p} WHERE id = {p} AND (job_id IS NULL OR job_id = {p}) "
                   f"RETURNING {ORDER_COLUMNS}", (job_id, worker, d.uuid(order_id), job_id))
    row = cursor.fetchone()
    if row is None:
        cursor.execute(f"SELECT 1 FROM orders WHERE id = {p}", (d.uuid(order_id),))
        return False if cursor.fetchone() else None
    order = order_from_row(d, row)
    if order.last_seq == 1:  # a fresh order: its one event is `pending`
        events = (EventRecord(order.id, 1, "pending", 1, order.created_at, {}),)
    else:
        events = tuple(events_after(d, cursor, order_id, 0))
    return order.__class__(**{**order.__dict__, "events": events})


def events_after(d: Dialect, cursor, order_id: UUID, after: int) -> Iterable[EventRecord]:
    """Stored events of one order with seq > after, in seq order."""
    p = d.ph
    cursor.execute(f"SELECT seq, status, attempt, created_at, meta FROM order_events "
                   f"WHERE order_id = {p} AND seq > {p} ORDER BY seq", (d.uuid(order_id), after))
    return [EventRecord(order_id, seq, status, attempt, d.read_ts(ts), d.read_json(meta) or {})
            for seq, status, attempt, ts, meta in cursor.fetchall()]


def insert_order(d: Dialect, cursor, row: dict[str, Any]) -> None:
    """Insert one order row and its `pending` event (seq 1) in the caller's transaction."""
    columns = ("id, owner, client_order_id, type, token_in, token_out, amount, slippage_bps, limit_price, "
               "expires_in_seconds, status, attempt, attempts, last_seq, fills, created_at, updated_at")
    values = (d.uuid(row["id"]), row["owner"], row["client_order_id"], row["type"], row["token_in"],
              row["token_out"], row["amount"], row["slippage_bps"], row["limit_price"],
              row["expires_in_seconds"], "pending", 1, 0, 1, "[]", d.ts(row["created_at"]), d.ts(row["created_at"]))
    cursor.execute(f"INSERT INTO orders ({columns}) VALUES ({d.placeholders(len(values))})", values)
    cursor.execute(f"INSERT INTO order_events (order_id, seq, status, attempt, created_at, meta) "
                   f"VALUES ({d.placeholders(6)})", (d.uuid(row["id"]), 1, "pending", 1, d.ts(row["created_at"]), "{}"))
