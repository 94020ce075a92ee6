"""Reads that cost the same at any history (migration 8): the kept order counts stay equal to the
real ones through every kind of write, and lists page on (created_at, id) row cursors exactly
as the newest-first ordering says. On SQLite and on the real Postgres: the same tests on both."""
from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import pytest

from storage.orders import OrderStore, decode_cursor, encode_cursor
from storage.records import ORDER_TYPES, EventDraft, OrderDraft
from storage.risk import RiskLimits, RiskTicket
from storage.status import StatusRuleError

pytestmark = pytest.mark.integration


def draft(**kw) -> OrderDraft:
    base = dict(token_in="SOL", token_out="USDC", amount=Decimal("1.5"))
    return OrderDraft(**{**base, **kw})


def real_counts(store: OrderStore) -> dict[str, int]:
    return {s: int(n) for s, n in store.direct.get().execute("SELECT status, COUNT(*) FROM orders GROUP BY status")}


def kept_counts(store: OrderStore) -> dict[str, int]:
    """The kept counts, summed over their shards (straight from the table /metrics reads)."""
    rows = store.direct.get().execute("SELECT status, SUM(orders) FROM order_counts GROUP BY status")
    return {s: int(n) for s, n in rows if n}


def assert_counts_match(store: OrderStore) -> None:
    assert kept_counts(store) == real_counts(store)


def new_orders(store: OrderStore, n: int, **kw) -> list:
    return [created.order for created in store.create_orders([draft(**kw) for _ in range(n)])]


def test_kept_counts_equal_the_real_counts_through_every_kind_of_status_change(store):
    a, b, c, d, e, f, g = new_orders(store, 7)
    assert_counts_match(store)
    assert kept_counts(store) == {"pending": 7}
    # one batch moving orders through several statuses each: only the net change is counted
    store.append_events([EventDraft(a.id, "routing", 1, {}), EventDraft(a.id, "building", 1, {}),
                         EventDraft(a.id, "submitted", 1, {}), EventDraft(b.id, "routing", 1, {}),
                         EventDraft(c.id, "cancelled", 1, {}), EventDraft(d.id, "waiting", 1, {})])
    assert_counts_match(store)
    store.append_events([EventDraft(a.id, "confirmed", 1, {"dex": "raydium", "amountIn": "1", "amountOut": "2"}),
                         EventDraft(b.id, "failed", 1, {"error": {"code": "x", "message": "y"}}),
                         EventDraft(d.id, "expired", 1, {}), EventDraft(e.id, "waiting", 1, {})])
    assert_counts_match(store)
    store.append_events([EventDraft(e.id, "cancelled", 1, {}),  # an armed order cancelled
                         EventDraft(f.id, "routing", 1, {}), EventDraft(f.id, "routing", 2, {}),  # a retry
                         EventDraft(g.id, "routing", 1, {}), EventDraft(g.id, "building", 1, {}),
                         EventDraft(g.id, "failed", 1, {"error": {"code": "x", "message": "y"}})])
    assert_counts_match(store)
    assert kept_counts(store) == {"confirmed": 1, "failed": 2, "cancelled": 2, "expired": 1, "routing": 1}


def test_the_counts_for_metrics_are_read_from_the_kept_table_not_counted_from_the_orders(store):
    new_orders(store, 3)
    assert store.counts_by_status() == {"pending": 3}
    store.direct.get().execute("INSERT INTO order_counts (status, shard, orders) VALUES ('pending', 99, 1000)")
    assert store.counts_by_status() == {"pending": 1003}  # what the table says: no COUNT(*) of the history


def test_refused_events_and_repeated_submits_leave_the_counts_alone(store):
    (order,) = new_orders(store, 1, client_order_id="k1")
    before = kept_counts(store)
    results = store.append_events([EventDraft(order.id, "confirmed", 1, {}),  # skips the lifecycle
                                   EventDraft(order.id, "routing", 3, {})])  # skips an attempt
    assert all(isinstance(r, StatusRuleError) for r in results)
    assert store.create_order(draft(client_order_id="k1")).created is False  # found, not created
    assert kept_counts(store) == before == {"pending": 1}
    store.append_events([EventDraft(order.id, "cancelled", 1, {})])
    (late,) = store.append_events([EventDraft(order.id, "expired", 1, {})])  # ended already
    assert isinstance(late, StatusRuleError)
    assert_counts_match(store)
    assert kept_counts(store) == {"cancelled": 1}


def test_orders_decided_under_risk_limits_are_counted_in_the_same_transaction(store):
    ticket = RiskTicket(RiskLimits(max_open_orders=2), None)
    results = store.create_orders([draft(owner="risky") for _ in range(3)], [ticket] * 3)
    assert sum(1 for r in results if isinstance(r, Exception)) == 1  # the third is refused
    assert_counts_match(store)
    assert kept_counts(store) == {"pending": 2}


def test_concurrent_writers_on_two_connections_keep_the_counts_exact(store):
    """Two threads (each its own connection) create orders and walk them to their ends at once."""
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            for round_ in range(8):
                orders = new_orders(store, 5)
                steps = [("routing",), ("building",), ("submitted",), ("confirmed",)]
                if (seed + round_) % 2:
                    steps = [("waiting",), ("cancelled",)]
                for (status,) in steps:
                    store.append_events([EventDraft(o.id, status, 1, {"dex": "raydium", "amountIn": "1",
                                                                        "amountOut": "2"}) for o in orders])
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert_counts_match(store)
    assert sum(kept_counts(store).values()) == 80


def all_pages(store: OrderStore, owner, status, type_, limit: int) -> list[UUID]:
    ids, cursor = [], None
    for _ in range(1000):
        page, cursor = store.list_orders(owner, status=status, type=type_, limit=limit, cursor=cursor)
        ids += [o.id for o in page]
        if cursor is None:
            return ids
        assert len(page) == limit
    raise AssertionError("the pages never ended")


def test_pages_with_row_cursors_follow_the_newest_first_order_under_every_filter(store):
    """Batches share one created_at (ties broken by id), owners and types mixed, some orders
    moved on: every filter, with and without an owner, pages to exactly the sorted list."""
    for i, owner in enumerate(["", "alice", "", "bob", "alice", ""]):
        orders = store.create_orders([draft(owner=owner, type=ORDER_TYPES[(i + j) % 3],
                                            limit_price=None if (i + j) % 3 == 0 else Decimal("100"))
                                      for j in range(7)])
        ids = [c.order.id for c in orders]
        store.append_events([EventDraft(oid, "routing", 1, {}) for oid in ids[: i % 4]]
                            + [EventDraft(oid, "cancelled", 1, {}) for oid in ids[4: 4 + i % 3]])
    rows = store.direct.get().execute("SELECT id, owner, status, type, created_at FROM orders")
    d = store.dialect
    everything = sorted(((d.read_ts(ts), d.read_uuid(oid), owner, status, t) for oid, owner, status, t, ts in rows),
                        reverse=True)
    # The types of the orders above, and one type no order has ("nobody" and "confirmed" match
    # nothing too): the other absent types would run the same query for the same empty answer.
    types = (None,) + ORDER_TYPES[:4]
    checked = 0
    for owner in (None, "", "alice", "nobody"):
        for status in (None, "pending", "routing", "cancelled", "confirmed"):
            for type_ in types:
                expected = [oid for _, oid, o, s, t in everything
                            if owner in (None, o) and status in (None, s) and type_ in (None, t)]
                # A cursor after every single row (limit 1) on each owner's whole list; under the
                # status and type filters (the same keyset condition after another WHERE), pages
                # of 4 (cursors inside and across the 7-order batches that share a created_at)
                # and of 50 (one page, no cursor).
                for limit in (1, 4, 50) if status is None and type_ is None else (4, 50):
                    assert all_pages(store, owner, status, type_, limit) == expected, (owner, status, type_, limit)
                    checked += 1
    assert checked == 4 * (3 + (5 * len(types) - 1) * 2)


def test_a_cursor_between_rows_continues_after_its_position(store):
    """A cursor is a position in the keyset, not a row: the page after it starts strictly after."""
    new_orders(store, 5)
    page, cursor = store.list_orders(None, limit=2)
    at, last_id = decode_cursor(cursor)
    assert (page[-1].created_at, page[-1].id) == (at, last_id)
    rest, _ = store.list_orders(None, limit=10, cursor=cursor)
    assert [o.id for o in page + rest] == [o.id for o in store.list_orders(None, limit=10)[0]]
    later = encode_cursor(datetime(2100, 1, 1), UUID(int=2**128 - 1))
    assert len(store.list_orders(None, limit=10, cursor=later)[0]) == 5  # all are before 2100
