"""Direct connections for the hot paths: one raw DB-API connection per thread that uses one.

Pony's pool ends every `db_session` with a ROLLBACK and a `DISCARD ALL` (and opens it
with a BEGIN): three round trips around each batch. The batch paths (order intake,
event appends, claims, the chain's blocks) instead run on a connection in autocommit
mode and send their transaction's statements themselves, on Postgres several per round
trip (`BEGIN; SELECT ...`, `INSERT ...; UPDATE ...; COMMIT`). Pony stays the model and
serves every other read and write.

The few threads that run batches (the web's intake thread, the event writer, the job
consumer, the venue gateways) each hold one connection for their life; a connection
that breaks (a database restart) is dropped and opened again on next use.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import psycopg2
import psycopg2.extras

from storage.errors import StorageUnavailable
from storage.sql import Dialect

log = logging.getLogger(__name__)

psycopg2.extras.register_uuid()  # UUID parameters and columns as uuid.UUID, as Pony has them

_BROKEN = (psycopg2.OperationalError, psycopg2.InterfaceError, sqlite3.OperationalError)


def connector(db) -> Callable[[], Any]:
    """A function opening a new raw connection to the database Pony's `db` is bound to."""
    pool = db.provider.pool
    if Dialect.of(db).postgres:
        def connect():
            conn = psycopg2.connect(*pool.args, **pool.kwargs)
            conn.set_client_encoding("UTF8")
            conn.autocommit = True
            return conn
        return connect

    def connect_sqlite():
        conn = sqlite3.connect(pool.filename, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    return connect_sqlite


class DirectConnection:
    """One raw connection in autocommit mode; transactions are explicit."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect):
        self._connect = connect
        self.dialect = dialect
        self._conn = None

    def cursor(self):
        """A cursor on the (re)opened connection."""
        if self._conn is None:
            try:
                self._conn = self._connect()
            except _BROKEN as exc:
                raise StorageUnavailable(f"database unavailable: {exc}") from exc
        return self._conn.cursor()

    @contextmanager
    def transaction(self) -> Iterator["Transaction"]:
        """A transaction: committed by `Transaction.commit`, rolled back if the block raises.

        A driver error that means the server is gone becomes StorageUnavailable and drops
        the connection, so the next call opens a new one.
        """
        tx = Transaction(self.cursor(), self.dialect)
        try:
            yield tx
            if not tx.finished:
                tx.commit()
        except _BROKEN as exc:
            self.close()
            raise StorageUnavailable(f"database unavailable: {exc}") from exc
        except BaseException:
            tx.rollback_quietly()
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """One statement in its own (autocommit) transaction; its rows, if it returns any.

        A read that fails on a connection opened earlier is sent once more on a new one: after a
        database restart every thread's link is stale, and a read (unlike a write, which may have
        landed before the link broke) is safe to repeat, as Pony's sessions repeat theirs.
        """
        stale_possible = self._conn is not None
        try:
            cursor = self.cursor()
            cursor.execute(sql, (params or None) if self.dialect.postgres else params)
            return cursor.fetchall() if cursor.description is not None else []
        except _BROKEN as exc:
            self.close()
            if stale_possible and _is_read(sql):
                return self.execute(sql, params)
            raise StorageUnavailable(f"database unavailable: {exc}") from exc

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing left to release
                pass


class Transaction:
    """Statements of one explicit transaction. On Postgres, BEGIN rides with the first
    statement and COMMIT with the last one sent through `commit(sql)`: one round trip each."""

    def __init__(self, cursor, dialect: Dialect):
        self.cursor = cursor
        self.dialect = dialect
        self.finished = False
        self._begun = False

    def _begin_prefix(self) -> str:
        if self._begun:
            return ""
        self._begun = True
        if self.dialect.postgres:
            return "BEGIN; "
        self.cursor.execute("BEGIN IMMEDIATE")  # SQLite: take the write lock now, not on upgrade
        return ""

    def execute(self, sql: str | bytes, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (Postgres: `sql` may hold several; the last one's rows come back).

        `sql` may be text already rendered with `Dialect.values` (bytes on Postgres).
        """
        self.cursor.execute(_join(self._begin_prefix(), sql), self._params(params))
        return self.cursor.fetchall() if self.cursor.description is not None else []

    def _params(self, params: Sequence[Any]):
        # psycopg2 formats the text with `%` whenever params are given (even empty ones), and
        # rendered VALUES lists may hold a literal `%`; sqlite3 wants a sequence.
        if self.dialect.postgres:
            return params or None
        return params

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """SQLite: one statement for many rows (Postgres batches build a VALUES list instead)."""
        self._begin_prefix()
        self.cursor.executemany(sql, rows)

    def commit(self, sql: str | None = None, params: Sequence[Any] = ()) -> None:
        """Send `sql` (if any) and COMMIT, together on Postgres."""
        self.finished = True
        if self.dialect.postgres:
            if not self._begun and sql is None:
                return
            text = _join(self._begin_prefix(), _join(sql, "; COMMIT") if sql else "COMMIT")
            self.cursor.execute(text, self._params(params))
            return
        if sql:
            self.execute(sql, params)
        if self._begun:
            self.cursor.execute("COMMIT")

    def rollback_quietly(self) -> None:
        """Undo what was sent (nothing to do when nothing was begun or the link is gone)."""
        self.finished = True
        if not self._begun:
            return
        try:
            self.cursor.execute("ROLLBACK")
        except Exception:  # the connection is broken: the server rolls back on its own
            pass


def _is_read(sql: str | bytes) -> bool:
    """Whether one statement only reads (a SELECT), so that sending it twice changes nothing."""
    head = sql[:16].lstrip()
    return (head.decode() if isinstance(head, bytes) else head)[:6].upper() == "SELECT"


def _join(first: str | bytes, second: str | bytes) -> str | bytes:
    """Concatenate SQL text, whether each part is str or (rendered) bytes."""
    if isinstance(first, bytes) or isinstance(second, bytes):
        return (first.encode() if isinstance(first, str) else first) + \
            (second.encode() if isinstance(second, str) else second)
    return first + second


class DirectConnections:
    """A DirectConnection per thread, opened on first use, to the database Pony's `db` is bound to."""

    def __init__(self, db):
        self._connect = connector(db)
        self.dialect = Dialect.of(db)
        self._local = threading.local()
        self._all: list[DirectConnection] = []
        self._lock = threading.Lock()

    def get(self) -> DirectConnection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = DirectConnection(self._connect, self.dialect)
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (at process stop)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
