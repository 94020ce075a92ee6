"""Versioned schema migrations of our own (Pony 0.7 has none and never alters a table).

Each migration is a version, a name and its SQL per dialect. `migrate()` applies
the missing ones in order, each in its own transaction, recorded in
`schema_migrations`; on Postgres an advisory lock lets many processes call it at once.
"""
from __future__ import annotations

import logging
from typing import Any

from pony.orm import Database, db_session

log = logging.getLogger(__name__)

_ORDERS_POSTGRES = """
CREATE TABLE orders (
    id UUID PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    client_order_id TEXT,
    type TEXT NOT NULL,
    token_in TEXT NOT NULL,
    token_out TEXT NOT NULL,
    amount TEXT NOT NULL,
    slippage_bps INTEGER NOT NULL,
    limit_price TEXT,
    expires_in_seconds INTEGER,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    job_id TEXT,
    worker TEXT,
    route JSONB,
    fills JSONB NOT NULL DEFAULT '[]',
    error JSONB,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT orders_client_order_id_key UNIQUE (owner, client_order_id)
);
CREATE INDEX orders_owner_created ON orders (owner, created_at DESC, id DESC);
CREATE INDEX orders_status ON orders (status);
CREATE TABLE order_events (
    order_id UUID NOT NULL REFERENCES orders (id),
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    meta JSONB NOT NULL,
    PRIMARY KEY (order_id, seq)
);
"""

_ORDERS_SQLITE = (
    _ORDERS_POSTGRES.replace("UUID", "TEXT").replace("JSONB", "TEXT").replace(" DESC", "")
)

_SIM_POSTGRES = """
CREATE TABLE sim_world (
    id INTEGER PRIMARY KEY,
    seed TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE sim_pools (
    dex TEXT NOT NULL,
    token_a TEXT NOT NULL,
    token_b TEXT NOT NULL,
    reserve_a BIGINT NOT NULL,
    reserve_b BIGINT NOT NULL,
    fee_bps INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dex, token_a, token_b)
);
CREATE TABLE sim_swaps (
    signature TEXT PRIMARY KEY,
    dex TEXT NOT NULL,
    order_id TEXT NOT NULL,
    token_in TEXT NOT NULL,
    token_out TEXT NOT NULL,
    amount_in TEXT NOT NULL,
    amount_out TEXT,
    status TEXT NOT NULL,
    error_code TEXT,
    message TEXT,
    executed_at TIMESTAMP NOT NULL
);
CREATE INDEX sim_swaps_order ON sim_swaps (order_id, executed_at);
CREATE TABLE sim_launches (
    symbol TEXT PRIMARY KEY,
    launch_at TIMESTAMP NOT NULL,
    scheduled_at TIMESTAMP NOT NULL
);
"""

# The same SQL is valid SQLite: BIGINT and TIMESTAMP map to its INTEGER and NUMERIC affinities.
_SIM_SQLITE = _SIM_POSTGRES

# Fencing: every claim of an order raises its fence; only the holder of the current fence may
# append its events or land its swaps. The chain keeps, per order, the highest fence it was
# asked about: a transaction built under a lower one can never land (a durable nonce).
# The reconciler's query (unfinished orders, oldest first) gets a partial index of its own.
_FENCING = """
ALTER TABLE orders ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
CREATE INDEX orders_unfinished ON orders (created_at)
    WHERE status IN ('pending', 'waiting', 'routing', 'building', 'submitted');
CREATE TABLE sim_nonces (
    order_id TEXT PRIMARY KEY,
    fence INTEGER NOT NULL
)
"""

# Limit and sniper orders: when an order expires (created_at + expires_in_seconds, kept as a
# column so it can be indexed), and the armed orders of each worker (its trigger book
# rebuilds from them).
_ARMED = """
ALTER TABLE orders ADD COLUMN expires_at TIMESTAMP;
CREATE INDEX orders_expiring ON orders (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('pending', 'waiting');
CREATE INDEX orders_armed ON orders (worker) WHERE status = 'waiting'
"""

# Secrets the engine's processes share through the database (the key derivation secret of
# owner ids), created once by whichever process needs one first.
_SECRETS = """
CREATE TABLE engine_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""

# Operators: trading keys managed through the API (stored as SHA-256 digests of random
# 256-bit keys; a key's orders are stored under its owner, which two keys may share so a key
# can be rotated), halts of trading (active while resumed_at is NULL; one active halt per
# scope and target), and the audit log of every operator action.
_OPERATORS = """
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    limits TEXT NOT NULL DEFAULT '{{}}',
    created_at TIMESTAMP NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TIMESTAMP,
    revoked_by TEXT
);
CREATE INDEX api_keys_owner ON api_keys (owner);
CREATE TABLE halts (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    key_id TEXT,
    reason TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT NOT NULL,
    resumed_at TIMESTAMP,
    resumed_by TEXT
);
CREATE UNIQUE INDEX halts_active ON halts (scope, target) WHERE resumed_at IS NULL;
CREATE TABLE audit_log (
    id {serial} PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    request TEXT NOT NULL DEFAULT '{{}}',
    status INTEGER NOT NULL,
    answer TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX audit_log_at ON audit_log (at, id)
"""

# Pre-trade risk limits (storage/risk.py), kept figures so a check reads a few rows, never 24 h
# of orders: the open orders of each owner (a counter, raised by the intake, lowered by the
# order's terminal event), and the USD value accepted per owner and minute (epoch minutes; the
# 24 h notional is the sum of the last 1,441 minutes). Each order records what it added
# (`risk_open`, `risk_usd_micros`) so that its end takes back exactly that.
_RISK = """
ALTER TABLE orders ADD COLUMN risk_open SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN risk_usd_micros BIGINT;
CREATE TABLE risk_open_orders (
    owner TEXT PRIMARY KEY,
    open_orders INTEGER NOT NULL
);
CREATE TABLE risk_usage (
    owner TEXT NOT NULL,
    minute BIGINT NOT NULL,
    usd_micros BIGINT NOT NULL,
    PRIMARY KEY (owner, minute)
)
"""

# Reads that cost the same at any history (issue 13): an index for every list's filter and sort,
# newest first, with the (created_at, id) keyset last so a page after a cursor is one range of
# one index. An unfiltered list reads `orders_owner_created`, or for every owner's orders (no
# API keys, operators) `orders_created`; a filtered list is a merge of ranges, one per (status,
# type) pair its filter allows (storage/order_sql.py `list_page`), on
# `orders_owner_status_type_created`, or for every owner's orders `orders_status_type_created`.
# Three of them hold every row but are partial on an always-true condition that only the lists
# meant for them state (order_sql.LIST_GUARD, order_sql.EVERY_ORDER): the planner can never
# serve a list by walking the newest orders of everyone, or of the owner, and filtering them (a
# filter matching only old orders would cost a scan of the history).
# The bare status index served only COUNT(*) GROUP BY status, which the kept counts replace; the
# index of unfinished orders gets the id too, so the reconciler's keyset pages need no sort.
# On an existing database this migration builds five indexes and counts the orders once.
# `order_counts` keeps how many orders are in each status, in shards (a writer adds to the shard
# of its own Postgres backend, so concurrent writers never wait for one another's row); /metrics
# sums the shards. Filled here from the orders that exist (one scan, at migration time only).
_READS_INDEXES = """
DROP INDEX IF EXISTS orders_status;
CREATE INDEX orders_status_type_created ON orders (status, type, created_at{desc}, id{desc})
    WHERE created_at > '1970-01-01';
CREATE INDEX orders_created ON orders (created_at{desc}, id{desc}) WHERE created_at < 'infinity';
DROP INDEX orders_owner_created;
CREATE INDEX orders_owner_created ON orders (owner, created_at{desc}, id{desc}) WHERE created_at > '1970-01-01';
CREATE INDEX orders_owner_status_type_created ON orders (owner, status, type, created_at{desc}, id{desc});
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (created_at, id)
    WHERE status IN ('pending', 'waiting', 'routing', 'building', 'submitted');
CREATE TABLE order_counts (
    status TEXT NOT NULL,
    shard INTEGER NOT NULL,
    orders BIGINT NOT NULL,
    PRIMARY KEY (status, shard)
);
INSERT INTO order_counts (status, shard, orders) SELECT status, 0, COUNT(*) FROM orders GROUP BY status
"""

# A route through an intermediate token lands as one transaction, one signature: its row keeps
# the route's totals and, here, every hop as executed (JSON, exact integers as text).
_SIM_ROUTES = "ALTER TABLE sim_swaps ADD COLUMN hops TEXT"


# Retention (issue 13, storage/retention.py): finished orders older than ORDER_RETENTION_DAYS
# leave the hot tables for archive tables, named by the month the orders were created in.
# Postgres: `order_events` becomes a table partitioned by month on `order_created_at`, a copy of
# its order's created_at, so that every event of an order lives in one partition: the key
# (order_id, seq, order_created_at) is as unique as (order_id, seq) was (a partitioned table's
# unique keys must hold the partition key). A month's partition, once old, is detached whole into
# the `archive` schema. The foreign key to `orders` goes: archiving deletes orders in bulk (the
# key would probe every partition per deleted order), and events are only ever written in the
# transaction that locks and updates their order (order_sql.append_events) or inserts it.
# Existing events are copied once (run it with the engine stopped on a large database: the copy
# rewrites every event), joined with their orders for the partition key; the foreign key made
# every event have its order, and a division by zero aborts the migration should the copy hold
# fewer events than the table it replaces. Partitions: one per month from the oldest
# order's to three months ahead (storage/retention.py keeps three ahead), and a default one.
# `archived_orders` answers "was this order archived, and where" in one probe (its owner, so
# another key's archived order stays not_found; its clientOrderId, so a repeat is never a new
# order); `order_archives` lists the archives.
_RETENTION_COMMON = """
CREATE TABLE archived_orders (
    id {uuid} PRIMARY KEY,
    owner TEXT NOT NULL,
    client_order_id TEXT,
    archive TEXT NOT NULL
);
CREATE UNIQUE INDEX archived_orders_client ON archived_orders (owner, client_order_id)
    WHERE client_order_id IS NOT NULL;
CREATE INDEX archived_orders_archive ON archived_orders (archive);
CREATE TABLE order_archives (
    name TEXT PRIMARY KEY,
    range_start TIMESTAMP NOT NULL,
    range_end TIMESTAMP NOT NULL,
    orders BIGINT NOT NULL,
    events BIGINT NOT NULL,
    detached BOOLEAN NOT NULL,
    archived_at TIMESTAMP NOT NULL,
    restored_at TIMESTAMP
)
"""

_RETENTION_POSTGRES_HEAD = """
CREATE SCHEMA IF NOT EXISTS archive;
ALTER TABLE order_events RENAME TO order_events_unpartitioned;
ALTER TABLE order_events_unpartitioned RENAME CONSTRAINT order_events_pkey TO order_events_unpartitioned_pkey;
CREATE TABLE order_events (
    order_id UUID NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    meta JSONB NOT NULL,
    order_created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (order_id, seq, order_created_at)
) PARTITION BY RANGE (order_created_at);
CREATE TABLE order_events_default PARTITION OF order_events DEFAULT
"""

_RETENTION_POSTGRES_TAIL = """
INSERT INTO order_events (order_id, seq, status, attempt, created_at, meta, order_created_at)
    SELECT e.order_id, e.seq, e.status, e.attempt, e.created_at, e.meta, o.created_at
    FROM order_events_unpartitioned e JOIN orders o ON o.id = e.order_id;
SELECT 1 / (SELECT (SELECT COUNT(*) FROM order_events) = (SELECT COUNT(*) FROM order_events_unpartitioned))::int;
DROP TABLE order_events_unpartitioned;
ANALYZE order_events
"""

_RETENTION_SQLITE = """
ALTER TABLE order_events ADD COLUMN order_created_at TIMESTAMP;
UPDATE order_events SET order_created_at = (SELECT o.created_at FROM orders o WHERE o.id = order_events.order_id)
"""


class _RetentionPostgres:
    """Migration 9 on Postgres: the partitioned events table with a partition for every month
    from the oldest order's to three ahead (computed from the database: a function of it, with
    a repr that names its SQL, as the template's digest wants), then the copy."""

    def __call__(self, db: Database) -> list[str]:
        from storage.records import utcnow
        from storage.retention import AHEAD_MONTHS, months_between, partition_ddl

        oldest = db.select("SELECT MIN(created_at) FROM orders")[0]
        now = utcnow()
        months = months_between(oldest or now, now, ahead=AHEAD_MONTHS)
        return (_statements(_RETENTION_POSTGRES_HEAD) + [partition_ddl(m) for m in months]
                + _statements(_RETENTION_POSTGRES_TAIL) + _statements(_RETENTION_COMMON.format(uuid="UUID")))

    def __repr__(self) -> str:
        return repr((_RETENTION_POSTGRES_HEAD, "monthly partitions", _RETENTION_POSTGRES_TAIL, _RETENTION_COMMON))



# Webhooks (issue 12): an order may name a callbackUrl (a managed key may name a default one); each
# of its events is then recorded as a delivery in the transaction that stores the event, so a
# crash between the two loses nothing. Workers send the oldest pending delivery of each order
# (`head`), leased (`lease_token`, `lease_until`) so one worker sends it and a dead worker's
# lease expires into another's hands. `webhook_pending` holds only what is still to be sent.
# No foreign key to orders: whatever archives or deletes orders deletes their deliveries with them
# (a key would make such a DELETE fail for every order that had a callbackUrl).
_WEBHOOKS = """
ALTER TABLE orders ADD COLUMN callback_url TEXT;
ALTER TABLE api_keys ADD COLUMN callback_url TEXT;
CREATE TABLE webhook_deliveries (
    order_id {uuid} NOT NULL,
    seq INTEGER NOT NULL,
    url TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    next_at TIMESTAMP NOT NULL,
    lease_token TEXT,
    lease_until TIMESTAMP,
    last_attempt_at TIMESTAMP,
    delivered_at TIMESTAMP,
    response_status INTEGER,
    error TEXT,
    PRIMARY KEY (order_id, seq)
);
CREATE INDEX webhook_pending ON webhook_deliveries (order_id, seq) WHERE state = 'pending'
"""
# Protective orders: the price a stop_loss order fires at (tokenOut per tokenIn, as limit_price).
_PROTECTIVE = "ALTER TABLE orders ADD COLUMN stop_price TEXT"
# The rest of the protective orders: a stop's floor (stop-limit: stop_loss's limitPrice, oco's
# stopLoss.limitPrice) and a trailing stop's distance in percent. An oco keeps its takeProfit's
# targetPrice in limit_price and its stopLoss's stopPrice in stop_price. A trailing stop's best
# price seen (its high-water mark) is kept in its `waiting` events, not here.
_PROTECTIVE_MORE = ("ALTER TABLE orders ADD COLUMN stop_limit_price TEXT; "
                    "ALTER TABLE orders ADD COLUMN trail_percent TEXT")
# A trailing stop's distance in price (trailAmount, tokenOut per tokenIn) instead of in percent.
_TRAIL_AMOUNT = "ALTER TABLE orders ADD COLUMN trail_amount TEXT"

# Orders over time (twap, dca): a child names its parent and its slice; (parent_id, slice_index)
# is unique, so a schedule resumed by another worker can never create a slice twice. A parent
# keeps its schedule (JSON text) and whether it is paused. The unfinished orders' index takes
# in the parents' `scheduled` status (the reconciler pages through it).
_SCHEDULES = """
ALTER TABLE orders ADD COLUMN parent_id {uuid};
ALTER TABLE orders ADD COLUMN slice_index INTEGER;
ALTER TABLE orders ADD COLUMN schedule TEXT;
ALTER TABLE orders ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX orders_parent_slice ON orders (parent_id, slice_index) WHERE parent_id IS NOT NULL;
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (created_at, id)
    WHERE status IN ('pending', 'scheduled', 'waiting', 'routing', 'building', 'submitted')
"""

MIGRATIONS: list[tuple[int, str, dict[str, Any]]] = [
    (1, "orders and their status events", {"postgres": _ORDERS_POSTGRES, "sqlite": _ORDERS_SQLITE}),
    (2, "the simulated chain: world, pools, swaps, launches", {"postgres": _SIM_POSTGRES, "sqlite": _SIM_SQLITE}),
    (3, "fencing tokens, the chain's nonces, an index of unfinished orders", {"postgres": _FENCING, "sqlite": _FENCING}),
    (4, "expiry of limit and sniper orders, the armed orders of each worker", {"postgres": _ARMED, "sqlite": _ARMED}),
    (5, "secrets the processes share", {"postgres": _SECRETS, "sqlite": _SECRETS}),
    (6, "operators: managed API keys, halts, the audit log",
     {"postgres": _OPERATORS.format(serial="BIGSERIAL"), "sqlite": _OPERATORS.format(serial="INTEGER")}),
    (7, "risk limits: open orders and notional per minute, per owner", {"postgres": _RISK, "sqlite": _RISK}),
    (8, "reads flat in history: list indexes, kept order counts per status",
     {"postgres": _READS_INDEXES.format(desc=" DESC"), "sqlite": _READS_INDEXES.format(desc="")}),
    (9, "retention: events partitioned by month, the archived orders and the archives",
     {"postgres": _RetentionPostgres(), "sqlite": _RETENTION_SQLITE + ";" + _RETENTION_COMMON.format(uuid="BLOB")}),
    (10, "webhooks: callback URLs of orders and keys, deliveries recorded with their events",
     {"postgres": _WEBHOOKS.format(uuid="UUID"), "sqlite": _WEBHOOKS.format(uuid="TEXT")}),
    (11, "protective orders: the stop price of a stop_loss order", {"postgres": _PROTECTIVE, "sqlite": _PROTECTIVE}),
    (12, "orders over time: a child's parent and slice, a parent's schedule",
     {"postgres": _SCHEDULES.format(uuid="UUID"), "sqlite": _SCHEDULES.format(uuid="TEXT")}),
    (13, "the simulated chain: routes through an intermediate token", {"postgres": _SIM_ROUTES, "sqlite": _SIM_ROUTES}),
    (14, "protective orders: a stop's floor (stop-limit) and a trailing stop's distance",
     {"postgres": _PROTECTIVE_MORE, "sqlite": _PROTECTIVE_MORE}),
    (15, "protective orders: a trailing stop's distance in price", {"postgres": _TRAIL_AMOUNT, "sqlite": _TRAIL_AMOUNT}),
]


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def applied_versions(db: Database) -> set[int]:
    """Versions already applied (empty when the table does not exist yet)."""
    with db_session:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
    with db_session:
        return {row for row in db.select("SELECT version FROM schema_migrations")}


def pending_versions(db: Database) -> list[int]:
    """Versions not applied yet."""
    done = applied_versions(db)
    return [v for v, _, _ in MIGRATIONS if v not in done]


def migrate(db: Database) -> list[int]:
    """Apply every missing migration; return the versions applied now."""
    dialect = db.provider.dialect.lower()
    dialect = "postgres" if dialect.startswith("postgres") else "sqlite"
    applied_now = []
    applied_versions(db)
    for version, name, sql in MIGRATIONS:
        with db_session:
            if dialect == "postgres":
                db.execute("SELECT pg_advisory_xact_lock(7243001)")
            if db.select("SELECT version FROM schema_migrations WHERE version = $version"):
                continue
            step = sql[dialect]  # SQL, or a function of the database giving its statements
            for statement in (step(db) if callable(step) else _statements(step)):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($version, $name, CURRENT_TIMESTAMP)"
            )
            applied_now.append(version)
            log.info("applied migration %s: %s", version, name)
    return applied_now
