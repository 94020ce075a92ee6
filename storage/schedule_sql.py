"""Orders over time (twap, dca) in plain SQL: a parent's children, several parents at once.

A child is an ordinary order row that names its parent and slice (migration 12); the pair is
unique, so creating a slice that exists already inserts nothing (`order_sql.insert_orders`).
"""
from __future__ import annotations

from uuid import UUID

from storage.direct import DirectConnection
from storage.order_sql import ORDER_COLUMNS, order_from_row
from storage.records import OrderRecord


def orders_by_id(conn: DirectConnection, ids: list[UUID]) -> dict[UUID, OrderRecord]:
    """The orders among `ids` that exist, without events (one statement)."""
    if not ids:
        return {}
    d = conn.dialect
    rows = conn.execute(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id IN ({d.placeholders(len(ids))})",
                        [d.uuid(i) for i in ids])
    return {o.id: o for o in (order_from_row(d, row) for row in rows)}


def children_of(conn: DirectConnection, parent_ids: list[UUID]) -> dict[UUID, list[OrderRecord]]:
    """Each parent's children by slice, without events (one statement, on orders_parent_slice)."""
    found: dict[UUID, list[OrderRecord]] = {p: [] for p in parent_ids}
    if not parent_ids:
        return found
    d = conn.dialect
    rows = conn.execute(f"SELECT {ORDER_COLUMNS} FROM orders WHERE parent_id IN ({d.placeholders(len(parent_ids))}) "
                        f"ORDER BY parent_id, slice_index", [d.uuid(i) for i in parent_ids])
    for row in rows:
        child = order_from_row(d, row)
        found.setdefault(child.parent_id, []).append(child)
    return found


def set_paused(conn: DirectConnection, order_id: UUID, paused: bool) -> None:
    """Mark a parent paused or running (its schedule creates no child while paused)."""
    d = conn.dialect
    conn.execute(f"UPDATE orders SET paused = {d.ph} WHERE id = {d.ph}", (int(paused), d.uuid(order_id)))
