"""Retention: finished orders older than ORDER_RETENTION_DAYS leave the hot tables, by month.

An archive is the finished orders created in one calendar month (UTC), named by it (`2026-11`),
with all their events; it lives in tables of its own in the same database:
`archive.orders_2026_11` and `archive.events_2026_11` on Postgres (schema `archive`),
`archive_orders_2026_11` and `archive_events_2026_11` on SQLite. A month is archived once it has
ended before the cutoff (now - ORDER_RETENTION_DAYS, or `engine archive --before DATE`), and
only its orders that are terminal and whose last change is older than the cutoff: an unfinished
or armed order is never archived, whatever its age, nor one that ended within the retention.

Postgres: the events table is partitioned by month on `order_created_at` (migration 9), so every
event of an order is in the partition of the month the order was created in. Archiving a month
whose partition is still attached detaches it whole and moves it into the `archive` schema (no
copy of its events), then gives the events of the orders it keeps (unfinished, recent) back to
the hot table, where they land in the default partition. Later runs archive such stragglers row
by row into the same archive. The heavy part (moving the orders) runs before the DETACH, whose
exclusive lock on the events table is held only for the re-homing of the kept orders' events
and the commit. While the DETACH waits for the writers in flight (milliseconds: theirs are
short transactions), new writers of events queue behind it; it waits at most LOCK_TIMEOUT, then
the month fails and the next run tries again, so writers never wait longer than that.

One archiver at a time, whoever runs it (the periodic job of every worker, `engine archive`):
a transaction-level advisory lock; a second archiver finding it taken skips (ArchiveBusy).

Kept counts: archived orders leave `order_counts` (and so /metrics' orders by status), in the
transaction that archives them; a restore counts them in again. Risk figures are untouched:
an order gives back its open-order count at its terminal event, and the 24 h notional is kept
per minute in `risk_usage`, never read from orders (and retention is at least a day).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage import count_sql
from storage.direct import DirectConnection, Transaction
from storage.errors import StorageError
from storage.records import utcnow
from storage.status import TERMINAL

log = logging.getLogger(__name__)

AHEAD_MONTHS = 3  # partitions kept ready ahead of now (the job and `engine archive` keep them)
MIN_AGE = timedelta(days=1)  # never archive anything younger: the 24 h risk window, clock skew
LOCK_KEY = 7243009  # the archiver's advisory lock (migrations use 7243001)
LOCK_TIMEOUT = "2s"
SQLITE_CHUNK = 5000  # orders archived per transaction on SQLite
EVENT_COLUMNS = "order_id, seq, status, attempt, created_at, meta, order_created_at"
_NAME = re.compile(r"^(\d{4})-(\d{2})$")
_TERMINAL = ", ".join(f"'{s}'" for s in sorted(TERMINAL))


class RetentionError(StorageError):
    """An archive or restore that cannot be done as asked (the message says why)."""


class ArchiveBusy(RetentionError):
    """Another archiver holds the lock: this run is skipped."""


@dataclass(frozen=True)
class MonthResult:
    """What one month's archive (or restore) moved."""

    name: str
    orders: int
    events: int
    detached: bool = False


# ---- months and names -----------------------------------------------------------------------

def month_of(ts: datetime) -> datetime:
    """The first instant of ts's month."""
    return datetime(ts.year, ts.month, 1)


def next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1)


def months_between(first: datetime, last: datetime, ahead: int = 0) -> list[datetime]:
    """The months from first's to last's, then `ahead` more."""
    months, m, end = [], month_of(first), month_of(last)
    for _ in range(ahead):
        end = next_month(end)
    while m <= end:
        months.append(m)
        m = next_month(m)
    return months


def name_of(month: datetime) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def parse_name(name: str) -> datetime:
    """`2026-11` -> its month; RetentionError for anything else."""
    match = _NAME.fullmatch(name.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise RetentionError(f"not an archive name (YYYY-MM): {name[:40]!r}")
    return datetime(int(match.group(1)), int(match.group(2)), 1)


def parse_range(text: str) -> list[datetime]:
    """`2026-11` or `2026-09..2026-11` (both ends included) -> the months."""
    first, sep, last = text.partition("..")
    start, end = parse_name(first), parse_name(last) if sep else parse_name(first)
    if end < start:
        raise RetentionError(f"an empty range: {text[:40]!r}")
    return months_between(start, end)


def partition_name(month: datetime) -> str:
    return f"order_events_y{month.year:04d}m{month.month:02d}"


def partition_ddl(month: datetime) -> str:
    """Postgres: the partition of `order_events` for one month."""
    return (f"CREATE TABLE {partition_name(month)} PARTITION OF order_events FOR VALUES FROM "
            f"('{month:%Y-%m-%d}') TO ('{next_month(month):%Y-%m-%d}')")


def _tables(conn: DirectConnection, month: datetime) -> tuple[str, str]:
    """(orders table, events table) of the month's archive."""
    suffix = f"{month.year:04d}_{month.month:02d}"
    sep = "." if conn.dialect.postgres else "_"
    return f"archive{sep}orders_{suffix}", f"archive{sep}events_{suffix}"


# ---- partitions (Postgres) -------------------------------------------------------------------

def _attached(tx, month: datetime) -> bool:
    return bool(tx.execute("SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                           "WHERE i.inhparent = 'order_events'::regclass AND c.relname = %s",
                           (partition_name(month),)))


def ensure_partition(conn: DirectConnection, month: datetime) -> bool:
    """Postgres: give `month` a partition of its own if it has none (its events in the default
    partition, if any, move into it); True if one was made. SQLite: nothing to do."""
    if not conn.dialect.postgres:
        return False
    with conn.transaction() as tx:
        _lock(tx)
        if _attached(tx, month):
            return False
        table, lo, hi = partition_name(month), f"{month:%Y-%m-%d}", f"{next_month(month):%Y-%m-%d}"
        # The ATTACH locks the default partition anyway: lock it first, so that no event lands
        # there in the month's range between the move and the ATTACH (events routed to the
        # monthly partitions never wait for it)
        tx.execute("LOCK TABLE order_events_default IN ACCESS EXCLUSIVE MODE")
        tx.execute(f"CREATE TABLE {table} (LIKE order_events INCLUDING DEFAULTS)")
        tx.execute(f"WITH moved AS (DELETE FROM order_events_default WHERE order_created_at >= %s AND "
                   f"order_created_at < %s RETURNING {EVENT_COLUMNS}) INSERT INTO {table} ({EVENT_COLUMNS}) "
                   f"SELECT {EVENT_COLUMNS} FROM moved", (lo, hi))
        tx.execute(f"ALTER TABLE order_events ATTACH PARTITION {table} FOR VALUES FROM ('{lo}') TO ('{hi}')")
    return True


def ensure_ahead(conn: DirectConnection, now: datetime | None = None) -> list[str]:
    """Postgres: partitions for this month and AHEAD_MONTHS more; the names of those made."""
    if not conn.dialect.postgres:
        return []
    made = []
    for month in months_between(now or utcnow(), now or utcnow(), ahead=AHEAD_MONTHS):
        if ensure_partition(conn, month):
            made.append(partition_name(month))
    return made


def _lock(tx: Transaction) -> None:
    """Postgres: this transaction is the only archiver (ArchiveBusy if another one is)."""
    (got,), = tx.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SELECT pg_try_advisory_xact_lock({LOCK_KEY})")
    if not got:
        raise ArchiveBusy("another archiver is running; try again later")


# ---- archive ------------------------------------------------------------------------------------

def check_cutoff(cutoff: datetime, now: datetime) -> None:
    """RetentionError for a cutoff less than MIN_AGE ago."""
    if cutoff > now - MIN_AGE:
        raise RetentionError(f"the cutoff {cutoff:%Y-%m-%d %H:%M} is less than a day ago: nothing younger than "
                             f"a day is archived (the 24 h risk window)")


def archivable_months(conn: DirectConnection, cutoff: datetime, skip_restored: bool) -> list[datetime]:
    """The months that ended before `cutoff` and still have orders in the hot tables (or, on
    Postgres, an attached partition), oldest first; months restored since their archive are
    left out when `skip_restored` (the periodic job leaves them to the operator)."""
    d = conn.dialect
    (oldest,), = conn.execute("SELECT MIN(created_at) FROM orders WHERE created_at < 'infinity'")
    months = months_between(d.read_ts(oldest), cutoff) if oldest is not None else []
    if d.postgres:
        parts = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                             "WHERE i.inhparent = 'order_events'::regclass")
        named = {m.group(0) for (rel,) in parts if (m := re.fullmatch(r"order_events_y\d{4}m\d{2}", rel))}
        months = sorted(set(months) | {datetime(int(r[14:18]), int(r[19:21]), 1) for r in named})
    months = [m for m in months if next_month(m) <= cutoff]
    if skip_restored and months:
        restored = {row[0] for row in conn.execute(
            "SELECT name FROM order_archives WHERE restored_at IS NOT NULL")}
        months = [m for m in months if name_of(m) not in restored]
    return months


def pending(conn: DirectConnection, month: datetime, cutoff: datetime) -> tuple[int, int]:
    """(orders, events) that archiving `month` at `cutoff` would move (a dry run)."""
    d, p = conn.dialect, conn.dialect.ph
    (n, events), = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(last_seq), 0) FROM orders WHERE "
                                f"{_CANDIDATES.format(p=p)}", (d.ts(month), d.ts(next_month(month)), d.ts(cutoff)))
    return int(n), int(events)


# The orders a month's archive takes: created in the month, terminal, last changed before the
# cutoff. `created_at < 'infinity'` lets the planner range-scan `orders_created` (migration 8).
_CANDIDATES = ("created_at >= {p} AND created_at < {p} AND created_at < 'infinity' AND status IN (" + _TERMINAL
               + ") AND updated_at < {p}")


def archive_month(conn: DirectConnection, month: datetime, cutoff: datetime, now: datetime) -> MonthResult:
    """Move `month`'s archivable orders and their events into its archive: on Postgres in one
    transaction; on SQLite SQLITE_CHUNK orders a transaction (its one writer lock is never held
    long: the engine's own writers wait for it at most their busy timeout)."""
    check_cutoff(cutoff, now)
    if next_month(month) > cutoff:
        raise RetentionError(f"{name_of(month)} has not ended before the cutoff {cutoff:%Y-%m-%d}")
    if conn.dialect.postgres:
        return _archive_pass(conn, month, cutoff, now, None)
    done = MonthResult(name_of(month), 0, 0)
    while True:
        step = _archive_pass(conn, month, cutoff, now, SQLITE_CHUNK)
        done = MonthResult(done.name, done.orders + step.orders, done.events + step.events)
        if step.orders < SQLITE_CHUNK:
            return done


def _archive_pass(conn: DirectConnection, month: datetime, cutoff: datetime, now: datetime,
                  limit: int | None) -> MonthResult:
    """One transaction of `archive_month`: its archivable orders (up to `limit`)."""
    d, p = conn.dialect, conn.dialect.ph
    name, lo, hi = name_of(month), d.ts(month), d.ts(next_month(month))
    orders_table, events_table = _tables(conn, month)
    with conn.transaction() as tx:
        if d.postgres:
            _lock(tx)
        _create_archive_tables(tx, d.postgres, orders_table, events_table)
        columns = _sync_columns(tx, d.postgres, orders_table)
        tx.execute("CREATE TEMP TABLE archiving (id " + ("UUID" if d.postgres else "BLOB") + " PRIMARY KEY)"
                   + (" ON COMMIT DROP" if d.postgres else ""))
        tx.execute(f"INSERT INTO archiving (id) SELECT id FROM orders WHERE {_CANDIDATES.format(p=p)}"
                   + (f" LIMIT {int(limit)}" if limit else ""), (lo, hi, d.ts(cutoff)))
        tx.execute(f"INSERT INTO {orders_table} ({columns}) SELECT {columns} FROM orders WHERE id IN "
                   f"(SELECT id FROM archiving)")
        tx.execute(f"INSERT INTO archived_orders (id, owner, client_order_id, archive) SELECT id, owner, "
                   f"client_order_id, {p} FROM orders WHERE id IN (SELECT id FROM archiving)", (name,))
        by_status = tx.execute("SELECT status, COUNT(*), SUM(last_seq) FROM orders WHERE id IN "
                               "(SELECT id FROM archiving) GROUP BY status ORDER BY status")
        orders, events = sum(int(r[1]) for r in by_status), sum(int(r[2]) for r in by_status)  # seq 1..last_seq
        tx.execute("DELETE FROM orders WHERE id IN (SELECT id FROM archiving)")
        # Their webhook deliveries go with them (not kept in the archive: an archived order's
        # deliveries are past reading, and one still pending after the retention is given up).
        tx.execute("DELETE FROM webhook_deliveries WHERE order_id IN (SELECT id FROM archiving)")
        detached = d.postgres and _attached(tx, month)
        began = _detach(tx, month, events_table, lo, hi) if detached else None
        if not detached:
            _move_events(tx, events_table, lo, hi)
        _count(tx, d.postgres, [(s, -int(n)) for s, n, _ in by_status])
        _catalog(tx, d, name, month, orders, events, detached, now)
        if not d.postgres:
            tx.execute("DROP TABLE archiving")
    if began is not None:
        log.info("archive %s: the events table was held %.3f s (detach to commit)", name, time.monotonic() - began)
    return MonthResult(name, orders, events, detached)


def _create_archive_tables(tx: Transaction, postgres: bool, orders_table: str, events_table: str) -> None:
    if postgres:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {orders_table} (LIKE orders INCLUDING DEFAULTS)")
        tx.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {orders_table.split('.')[1]}_id ON {orders_table} (id)")
        return
    tx.execute(f"CREATE TABLE IF NOT EXISTS {orders_table} AS SELECT * FROM orders WHERE 0")
    tx.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {orders_table}_id ON {orders_table} (id)")
    tx.execute(f"CREATE TABLE IF NOT EXISTS {events_table} AS SELECT {EVENT_COLUMNS} FROM order_events WHERE 0")
    tx.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {events_table}_key ON {events_table} (order_id, seq)")


def _columns(tx: Transaction, postgres: bool, table: str) -> list[tuple[str, str]]:
    """(name, type) of a table's columns, in order."""
    if postgres:
        schema, _, name = table.rpartition(".")
        return [tuple(r) for r in tx.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = "
            "to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f"{schema or 'public'}.{name}",))]
    return [(r[1], r[2]) for r in tx.execute(f"PRAGMA table_info({table})")]


def _sync_columns(tx: Transaction, postgres: bool, orders_table: str) -> str:
    """Give an archive made before a later migration the orders' new columns; the column list."""
    have = {name for name, _ in _columns(tx, postgres, orders_table)}
    hot = _columns(tx, postgres, "orders")
    for name, type_ in hot:
        if name not in have:
            tx.execute(f"ALTER TABLE {orders_table} ADD COLUMN {name} {type_}")
    return ", ".join(name for name, _ in hot)


def _detach(tx: Transaction, month: datetime, events_table: str, lo, hi) -> float:
    """Postgres: detach the month's partition into the archive; its events of orders kept hot go
    back to the events table (the default partition: the month has no partition any more).
    The orders kept are found before the DETACH, whose lock holds every writer of events until
    the commit: under it, only index probes for those few orders. When the DETACH began."""
    part, (schema, table) = partition_name(month), events_table.split(".")
    tx.execute("CREATE TEMP TABLE keeping ON COMMIT DROP AS SELECT id, created_at FROM orders WHERE "
               "created_at >= %s AND created_at < %s AND created_at < 'infinity'", (lo, hi))
    tx.execute("ANALYZE keeping")  # its true size (a few rows), so the planner probes the partition's key
    began = time.monotonic()
    tx.execute(f"ALTER TABLE order_events DETACH PARTITION {part}")
    tx.execute(f"ALTER TABLE {part} SET SCHEMA {schema}")
    if tx.execute("SELECT to_regclass(%s)", (events_table,))[0][0] is None:
        tx.execute(f"ALTER TABLE {schema}.{part} RENAME TO {table}")
        source = events_table
    else:  # the archive exists already (a partition made again by hand for an archived month)
        source = f"{schema}.{part}"
    tx.execute(f"WITH kept AS (DELETE FROM {source} e USING keeping k WHERE e.order_id = k.id AND "
               f"e.order_created_at = k.created_at RETURNING e.*) INSERT INTO order_events ({EVENT_COLUMNS}) "
               f"SELECT {EVENT_COLUMNS} FROM kept")
    if source != events_table:
        tx.execute(f"INSERT INTO {events_table} ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM {source}")
        tx.execute(f"DROP TABLE {source}")
    return began


def _move_events(tx: Transaction, events_table: str, lo, hi) -> None:
    """The archived orders' events, row by row (SQLite; Postgres months without a partition)."""
    d = tx.dialect
    if d.postgres:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {events_table} (LIKE order_events INCLUDING DEFAULTS)")
        tx.execute(f"WITH moved AS (DELETE FROM order_events WHERE order_created_at >= %s AND order_created_at < %s "
                   f"AND order_id IN (SELECT id FROM archiving) RETURNING {EVENT_COLUMNS}) INSERT INTO {events_table} "
                   f"({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM moved", (lo, hi))
        return
    tx.execute(f"INSERT INTO {events_table} ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM order_events "
               f"WHERE order_id IN (SELECT id FROM archiving)")
    tx.execute("DELETE FROM order_events WHERE order_id IN (SELECT id FROM archiving)")


def _count(tx: Transaction, postgres: bool, changes: list[tuple[str, int]]) -> None:
    """The kept counts per status: archived orders leave them, restored ones come back."""
    changes = sorted((s, n) for s, n in changes if n)
    if postgres:
        if changes:
            tx.execute(count_sql.upsert_sql(tx.dialect, tx.cursor, changes))
    else:
        count_sql.upsert_sqlite(tx, changes)


def _catalog(tx: Transaction, d, name: str, month: datetime, orders: int, events: int, detached: bool,
             now: datetime) -> None:
    p = d.ph
    tx.execute(f"INSERT INTO order_archives (name, range_start, range_end, orders, events, detached, archived_at) "
               f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (name) DO UPDATE SET orders = "
               f"order_archives.orders + excluded.orders, events = order_archives.events + excluded.events, "
               f"detached = order_archives.detached OR excluded.detached, archived_at = excluded.archived_at, "
               f"restored_at = NULL",
               (name, d.ts(month), d.ts(next_month(month)), orders, events, detached, d.ts(now)))


def archive(conn: DirectConnection, cutoff: datetime, *, now: datetime | None = None,
            skip_restored: bool = False) -> list[MonthResult]:
    """Archive every month that ended before `cutoff`, oldest first, a transaction each."""
    now = now or utcnow()
    check_cutoff(cutoff, now)
    return [archive_month(conn, m, cutoff, now) for m in archivable_months(conn, cutoff, skip_restored)
            if pending(conn, m, cutoff)[0]]  # a month with only kept orders stays as it is


# ---- restore ------------------------------------------------------------------------------------

def restore_month(conn: DirectConnection, month: datetime, now: datetime | None = None) -> MonthResult:
    """Bring a month's archive back into the hot tables (its tables dropped after), in one
    transaction; RetentionError if there is no such archive."""
    d, p = conn.dialect, conn.dialect.ph
    name = name_of(month)
    orders_table, events_table = _tables(conn, month)
    with conn.transaction() as tx:
        if d.postgres:
            _lock(tx)
        if not _columns(tx, d.postgres, orders_table):
            raise RetentionError(f"no archive {name}")
        columns = ", ".join(n for n, _ in _columns(tx, d.postgres, orders_table))
        tx.execute(f"INSERT INTO orders ({columns}) SELECT {columns} FROM {orders_table}")
        tx.execute(f"INSERT INTO order_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM {events_table}")
        (events,), = tx.execute(f"SELECT COUNT(*) FROM {events_table}")
        back = tx.execute(f"SELECT status, COUNT(*) FROM {orders_table} GROUP BY status ORDER BY status")
        tx.execute(f"DELETE FROM archived_orders WHERE archive = {p}", (name,))
        _count(tx, d.postgres, [(s, int(n)) for s, n in back])
        tx.execute(f"DROP TABLE {orders_table}")
        tx.execute(f"DROP TABLE {events_table}")
        tx.execute(f"UPDATE order_archives SET orders = 0, events = 0, restored_at = {p} WHERE name = {p}",
                   (d.ts(now or utcnow()), name))
    return MonthResult(name, sum(int(n) for _, n in back), int(events))


def restore(conn: DirectConnection, text: str) -> list[MonthResult]:
    """Restore `NAME` or `FIRST..LAST`: every archive in the range (RetentionError if none)."""
    months = parse_range(text)
    names = {row[0] for row in conn.execute("SELECT name FROM order_archives WHERE restored_at IS NULL")}
    found = [m for m in months if name_of(m) in names]
    if not found:
        raise RetentionError(f"no archive in {text[:40]}")
    return [restore_month(conn, m) for m in found]


def archives(conn: DirectConnection) -> list[dict]:
    """The archives, oldest first."""
    d = conn.dialect
    rows = conn.execute("SELECT name, orders, events, detached, archived_at, restored_at FROM order_archives "
                        "ORDER BY name")
    return [{"name": n, "orders": int(o), "events": int(e), "detached": bool(det),
             "archivedAt": d.read_ts(a), "restoredAt": d.read_ts(r) if r is not None else None}
            for n, o, e, det, a, r in rows]


# ---- reads --------------------------------------------------------------------------------------

def archived_in(conn: DirectConnection, order_id, owner: str | None) -> str | None:
    """The archive holding this order of `owner` (None: anyone's), or None."""
    d, p = conn.dialect, conn.dialect.ph
    rows = conn.execute(f"SELECT owner, archive FROM archived_orders WHERE id = {p}", (d.uuid(order_id),))
    if not rows or (owner is not None and rows[0][0] != owner):
        return None  # another key's archived order: as if it never existed
    return rows[0][1]


def archived_client_ids(conn: DirectConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """{(owner, clientOrderId): (order id, archive)} of these keys whose orders were archived."""
    d, p = conn.dialect, conn.dialect.ph
    if not keys:
        return {}
    where = " OR ".join([f"(owner = {p} AND client_order_id = {p})"] * len(keys))
    rows = conn.execute(f"SELECT owner, client_order_id, id, archive FROM archived_orders WHERE {where}",
                        [v for key in keys for v in key])
    return {(o, c): (d.read_uuid(i), a) for o, c, i, a in rows}
