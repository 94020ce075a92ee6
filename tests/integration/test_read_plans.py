"""Every hot read has an index that matches its filter and its sort (Postgres EXPLAIN).

The plans are taken with sequential and bitmap scans disabled: what is asserted is that an
index exists that serves each query as one ordered range (every condition in the Index Cond,
no Filter, no Sort), which holds at any size. Whether the planner then prefers it is the
planner's call at each size; the history benchmark (`python -m bench.run --scenario history`)
measures that it does, at 10 million orders. Without the switches a table of a few thousand
rows can rightly be read whole, and the test would depend on the planner's costs.
"""
from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import psycopg2
import pytest

from storage import count_sql, order_sql
from storage.sql import Dialect

pytestmark = pytest.mark.integration

_HISTORY = """
INSERT INTO orders (id, owner, type, token_in, token_out, amount, slippage_bps, status, last_seq, worker,
                    created_at, updated_at)
SELECT gen_random_uuid(), (ARRAY['', 'alice', 'bob', 'carol'])[1 + i % 4], (ARRAY['market', 'limit', 'sniper'])[1 + i % 3],
       'SOL', 'USDC', '1', 50,
       CASE WHEN i % 100 = 0 THEN 'waiting' WHEN i % 100 = 1 THEN 'pending' WHEN i % 10 = 5 THEN 'failed'
            ELSE 'confirmed' END,
       3, 'w' || (i % 3), now()::timestamp - make_interval(secs => i), now()::timestamp
FROM generate_series(1, 20000) AS i;
INSERT INTO order_events (order_id, seq, status, attempt, created_at, meta, order_created_at)
SELECT id, n, 'pending', 1, created_at, '{}', created_at FROM orders, generate_series(1, 3) AS n;
ANALYZE orders; ANALYZE order_events
"""


# Partial indexes of unfinished orders only: what they hold is bounded by the work in flight, not
# by the history, so a branch may filter their rows (a list of `building` orders on the first).
UNFINISHED_ONLY = ("orders_unfinished", "orders_armed", "orders_expiring")


# The index each list shape is meant to read: (every owner's, unfiltered) -> index name.
LIST_INDEX = {(True, True): "orders_created", (True, False): "orders_status_type_created",
              (False, True): "orders_owner_created", (False, False): "orders_owner_status_type_created"}


class Recording:
    """A stand-in for a direct connection: records each statement, answers no rows."""

    dialect = Dialect(True)

    def __init__(self):
        self.statements: list[tuple[str, tuple]] = []

    def execute(self, sql, params=()):
        self.statements.append((sql.decode() if isinstance(sql, bytes) else sql, tuple(params)))
        return []


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _hot_queries() -> list[tuple[str, str, tuple]]:
    """(what, sql, params) of every read that must not grow with the history."""
    order_id = UUID(int=7)
    middle = (datetime(2026, 1, 1), UUID(int=2**127))
    found = []

    def record(what, call):
        conn = Recording()
        call(conn)
        found.extend((what, sql, params) for sql, params in conn.statements)

    for owner in (None, "", "alice"):
        for status, type_ in ((None, None), ("confirmed", None), (None, "limit"), ("failed", "sniper")):
            for after in (None, middle):
                record(f"list owner={owner!r} status={status} type={type_} after={after is not None} "
                       f"on {LIST_INDEX[owner is None, status is None and type_ is None]}",
                       lambda c: order_sql.list_page(c, owner, status, type_, 21, after))
    record("one order's events after a seq (listeners)", lambda c: order_sql.events_after(c, order_id, 2))
    record("orders' events (claims)", lambda c: order_sql.events_of(c, [(order_id, middle[0]), (UUID(int=8), middle[0])]))
    record("reconciler, first page", lambda c: order_sql.unfinished(c, datetime(2100, 1, 1), 1000))
    record("reconciler, a later page", lambda c: order_sql.unfinished(c, datetime(2100, 1, 1), 1000, middle))
    record("trigger book: a worker's armed orders", lambda c: order_sql.armed_by(c, "w1", []))
    record("counts by status (/metrics)", count_sql.counts)
    return found


@pytest.fixture
def history(postgres_url):
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(_HISTORY)
        cur.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        yield cur
    conn.close()


def test_every_hot_read_is_one_ordered_index_range_of_orders_and_events(history):
    queries = _hot_queries()
    assert len(queries) >= 30
    for what, sql, params in queries:
        history.execute("EXPLAIN (FORMAT JSON) " + sql, params or None)
        raw = history.fetchone()[0]
        plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
        for node in _nodes(plan):
            ours = node.get("Relation Name") in ("orders", "order_events")
            assert node["Node Type"] != "Sort", (what, json.dumps(plan, indent=1))
            if ours:
                assert node["Node Type"] in ("Index Scan", "Index Only Scan"), (what, json.dumps(plan, indent=1))
                if node.get("Index Name") not in UNFINISHED_ONLY:
                    assert "Filter" not in node, (what, node.get("Index Name"), node["Filter"])
                    if what.startswith("list"):
                        assert what.endswith(" on " + node["Index Name"]), (what, node["Index Name"])
