"""Postgres databases copied from the migrated template once and reused from test to test.

A copy of the template (CREATE DATABASE ... TEMPLATE) costs its Postgres backend ~0.1-0.3 s of
CPU; putting a used copy back as it came from the template costs a few milliseconds. After a
test, its database is handed back: every other connection to it is ended, every table emptied
and refilled with the rows the template holds, every sequence set back to where the template
has it. A database whose structure a test changed (a table, a column, an index, a constraint, a
trigger, a function, a setting of its own: anything the catalog fingerprint below covers) is
dropped instead, and the next test gets a new copy. What it does not restore: planner
statistics (a reused database keeps the row estimates of its earlier tests), so a test that
asserts on query plans keeps a fresh copy (it does not opt in: `pytest.mark.reused_database`).
"""
from __future__ import annotations

import io
import uuid

_SYSTEM = "('pg_catalog', 'information_schema')"

# Everything about the database's structure a test could change, as one digest.
_FINGERPRINT = f"""
SELECT md5(string_agg(x, E'\\n' ORDER BY x)) FROM (
    SELECT 'rel ' || c.oid::regclass::text || ' ' || c.relkind::text || ' ' || coalesce((
        SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text
                          || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY a.attnum)
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
        || coalesce(' ' || pg_get_expr(c.relpartbound, c.oid), '') AS x
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN {_SYSTEM} AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN {_SYSTEM} AND n.nspname NOT LIKE 'pg_toast%'
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN {_SYSTEM})
    UNION ALL
    SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN {_SYSTEM}
    UNION ALL
    SELECT 'type ' || t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname NOT IN {_SYSTEM} AND n.nspname NOT LIKE 'pg_toast%' AND t.typrelid = 0 AND t.typelem = 0
    UNION ALL
    SELECT 'setting ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT IN {_SYSTEM} AND nspname NOT LIKE 'pg_%'
) parts
"""
# The tables that hold rows (partitioned parents hold none of their own).
_TABLES = f"""
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN {_SYSTEM} AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1
"""
_SEQUENCES = "SELECT format('%I.%I', schemaname, sequencename), last_value, start_value FROM pg_sequences ORDER BY 1"


class _Snapshot:
    """What a fresh copy of the template holds: its fingerprint, its rows, its sequences."""

    def __init__(self, cur):
        cur.execute(_FINGERPRINT)
        self.fingerprint = cur.fetchone()[0]
        cur.execute(_TABLES)
        self.tables = [name for (name,) in cur.fetchall()]
        self.rows = {}
        for table in self.tables:
            out = io.StringIO()
            cur.copy_expert(f"COPY {table} TO STDOUT", out)
            if out.getvalue():
                self.rows[table] = out.getvalue()
        cur.execute(_SEQUENCES)
        self.sequences = cur.fetchall()


class DatabasePool:
    """Copies of `template` for the tests of one process, one test at a time each."""

    def __init__(self, template: str, prefix: str = "engine_test"):
        self.template, self.prefix = template, prefix
        self.free: list[str] = []
        self.all: set[str] = set()
        self.snapshot: _Snapshot | None = None

    def take(self) -> str:
        """The URL of a database as the template holds it, for one test."""
        from bench.cluster import _database_url

        if self.free:
            return _database_url(self.free.pop())
        name = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        _as_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.all.add(name)
        if self.snapshot is None:
            with self._connect(name) as db, db.cursor() as cur:
                self.snapshot = _Snapshot(cur)
        return _database_url(name)

    def give_back(self, url: str) -> None:
        """Put the test's database back as the template holds it, or drop it if that cannot be done."""
        name = url.rsplit("/", 1)[1]
        try:
            self._reset(name)
        except Exception:
            self._drop(name)
        else:
            self.free.append(name)

    def close(self) -> None:
        for name in list(self.all):
            self._drop(name)

    # ---- internals ----------------------------------------------------------------------

    def _connect(self, name: str):
        import psycopg2

        from bench.cluster import _database_url

        conn = psycopg2.connect(_database_url(name))
        return _Closing(conn)

    def _reset(self, name: str) -> None:
        _as_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # the test's, leaked ones too
                  "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        snapshot = self.snapshot
        with self._connect(name) as db, db.cursor() as cur:
            cur.execute(_FINGERPRINT)
            if cur.fetchone()[0] != snapshot.fingerprint:
                raise RuntimeError(f"the structure of {name} changed")
            cur.execute("SET LOCAL session_replication_role = replica")  # no foreign keys, no triggers
            for table in snapshot.tables:
                cur.execute(f"DELETE FROM {table}")
            for table, rows in snapshot.rows.items():
                cur.copy_expert(f"COPY {table} FROM STDIN", io.StringIO(rows))
            for sequence, last_value, start_value in snapshot.sequences:
                if last_value is None:
                    cur.execute("SELECT setval(%s, %s, false)", (sequence, start_value))
                else:
                    cur.execute("SELECT setval(%s, %s, true)", (sequence, last_value))
            db.commit()

    def _drop(self, name: str) -> None:
        self.all.discard(name)
        _as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_admin(sql: str, params: tuple | None = None) -> None:
    """One statement on the server's admin database (CREATE and DROP DATABASE need autocommit)."""
    from bench.cluster import _admin

    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
    finally:
        conn.close()


class _Closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()
