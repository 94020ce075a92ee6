"""A large finished history, generated in Postgres (not executed): the `history` scenario's data.

`build_history` fills a freshly migrated database with `orders` finished orders and their
events with INSERT ... SELECT generate_series, the orders' and events' indexes dropped first
and built again afterwards (one sort per index instead of millions of random inserts), then
fills the kept counts, VACUUM ANALYZEs and CHECKPOINTs, as a database that grew over months
would be when read. Ten million orders (46.7 million events, 11.5 GB) take ~4 minutes on 2 cores.

The history: created over the `days` before now, oldest first; a quarter of it under owner ""
(no API keys), a quarter under `key_owner` (the bench key's), the rest spread over 1,000
other owners; 80% market, 10% limit, 10% sniper orders; 85% confirmed (5 events each), 10%
failed (3), 3% cancelled (2), 2% expired (3): ~4.6 events an order.
"""
from __future__ import annotations

import time

import psycopg2

_ORDERS = """
INSERT INTO orders (id, owner, client_order_id, type, token_in, token_out, amount, slippage_bps, limit_price,
    expires_in_seconds, status, attempt, attempts, last_seq, job_id, worker, route, fills, error, created_at,
    updated_at, fence, expires_at, risk_open, risk_usd_micros)
SELECT gen_random_uuid(),
    CASE i %% 4 WHEN 0 THEN '' WHEN 1 THEN %(key_owner)s ELSE 'owner-' || (i %% 1000) END,
    NULL, t.type, 'SOL', 'USDC', '0.1', 50, CASE WHEN t.type = 'market' THEN NULL ELSE '150' END, NULL,
    s.status, 1, 1, s.last_seq, 'job-' || i, 'worker-0',
    CASE WHEN s.status = 'confirmed' THEN '{"kind": "single", "legs": [{"dex": "raydium"}]}'::jsonb END,
    CASE WHEN s.status = 'confirmed' THEN '[{"dex": "raydium", "amountIn": "0.1", "amountOut": "15.2", '
        '"txHash": "5j7s"}]'::jsonb ELSE '[]'::jsonb END,
    CASE WHEN s.status = 'failed' THEN '{"code": "slippage_exceeded", "message": "price moved"}'::jsonb END,
    ts, ts + interval '1 second', 1, NULL, 0, NULL
FROM generate_series(1, %(orders)s) AS i,
    LATERAL (SELECT now()::timestamp - make_interval(days => %(days)s)
                    + make_interval(secs => (i::float8 / %(orders)s) * %(days)s * 86400) AS ts) AS c,
    LATERAL (SELECT random() + i * 0 AS r, random() + i * 0 AS q) AS draw,
    LATERAL (SELECT CASE WHEN r < 0.8 THEN 'market' WHEN r < 0.9 THEN 'limit' ELSE 'sniper' END AS type) AS t,
    LATERAL (SELECT CASE WHEN q < 0.85 THEN 'confirmed' WHEN q < 0.95 THEN 'failed'
                         WHEN q < 0.98 THEN 'cancelled' ELSE 'expired' END AS status) AS s0,
    LATERAL (SELECT s0.status, CASE s0.status WHEN 'confirmed' THEN 5 WHEN 'cancelled' THEN 2 ELSE 3 END
             AS last_seq) AS s
"""

_EVENTS = """
INSERT INTO order_events (order_id, seq, status, attempt, created_at, meta, order_created_at)
SELECT o.id, n, (CASE o.status
        WHEN 'confirmed' THEN ARRAY['pending', 'routing', 'building', 'submitted', 'confirmed']
        WHEN 'failed' THEN ARRAY['pending', 'routing', 'failed']
        WHEN 'cancelled' THEN ARRAY['pending', 'cancelled']
        ELSE ARRAY['pending', 'waiting', 'expired'] END)[n],
    1, o.created_at + n * interval '10 milliseconds',
    CASE WHEN n = o.last_seq AND o.status = 'confirmed'
         THEN '{"dex": "raydium", "amountIn": "0.1", "amountOut": "15.2", "txHash": "5j7s"}'::jsonb
         ELSE '{}'::jsonb END,
    o.created_at
FROM orders o, generate_series(1, o.last_seq) AS n
"""

_TABLES = ("orders", "order_events")


def _indexes(cur) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(table, name, definition) of the constraints and (name, CREATE INDEX ...) of the other
    indexes of the orders and their events."""
    cur.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid::regclass::text = ANY(%s) AND contype IN ('p', 'u', 'f') "
                "ORDER BY contype = 'f', conname", (list(_TABLES),))
    constraints = cur.fetchall()
    cur.execute("SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) "
                "AND i.indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY i.indexname", (list(_TABLES),))
    return constraints, cur.fetchall()


def _partitions(cur, days: int) -> None:
    """The events' monthly partitions (migration 9) for the months the history covers, as a
    database that grew over those months has them (the migration made the months ahead only)."""
    from datetime import timedelta

    from storage.records import utcnow
    from storage.retention import months_between, partition_ddl, partition_name

    now = utcnow()
    for month in months_between(now - timedelta(days=days + 1), now):
        cur.execute("SELECT to_regclass(%s)", (partition_name(month),))
        if cur.fetchone()[0] is None:
            cur.execute(partition_ddl(month))


def build_history(database_url: str, orders: int, key_owner: str, days: int = 100) -> dict:
    """Fill the (migrated, empty) database with `orders` finished orders and their events;
    what was built and how long each step took."""
    steps: dict[str, float] = {}
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 2")
            started = time.monotonic()
            constraints, indexes = _indexes(cur)
            for table, name, _ in reversed(constraints):  # foreign keys first
                cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _ in indexes:
                cur.execute(f'DROP INDEX "{name}"')
            _partitions(cur, days)
            cur.execute("SELECT setseed(0.13)")  # the same history every time
            cur.execute(_ORDERS, {"orders": orders, "key_owner": key_owner, "days": days})
            steps["ordersSeconds"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            cur.execute(_EVENTS)
            cur.execute("SELECT COUNT(*) FROM order_events")
            events = cur.fetchone()[0]
            steps["eventsSeconds"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            for table, name, definition in constraints:
                # The foreign key is not validated again: the rows were made from the orders.
                not_valid = " NOT VALID" if definition.startswith("FOREIGN KEY") else ""
                cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}{not_valid}')
            for _, definition in indexes:
                cur.execute(definition)
            steps["indexesSeconds"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            cur.execute("DELETE FROM order_counts")
            cur.execute("INSERT INTO order_counts (status, shard, orders) "
                        "SELECT status, 0, COUNT(*) FROM orders GROUP BY status")
            cur.execute("VACUUM ANALYZE orders")
            cur.execute("VACUUM ANALYZE order_events")
            cur.execute("ANALYZE order_counts")
            # Write the build's dirty pages out now: a history that grew over months is not in the
            # middle of flushing gigabytes when it is read (the reads measured that, at first).
            cur.execute("CHECKPOINT")
            steps["vacuumSeconds"] = round(time.monotonic() - started, 1)
            cur.execute("SELECT pg_database_size(current_database())")
            size = cur.fetchone()[0]
    finally:
        conn.close()
    return {"orders": orders, "events": events, "databaseMB": round(size / 2**20), **steps}
