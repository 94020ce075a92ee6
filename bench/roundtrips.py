"""Round trips to Postgres and Redis, counted from the outside, for `python -m bench.trace`.

- Postgres: the bench database is created with `log_statement = 'all'` (ALTER DATABASE,
  that database only), so the server logs every statement any session of it receives, with
  its backend pid. `PgStatementLog` follows the server log from its current end.
- Redis: `RedisMonitor` holds a MONITOR connection; each line names the db index and the
  client address of one command.
- Windows: `mark()` sends a marker (a `SELECT 'bench-trace-mark-N'`, an `ECHO`) on a
  connection of the bench's own and waits until it shows in the log or the monitor, so a
  window is exactly the statements and commands between two markers, whatever the delays
  of the log or of the socket. The marker connections' own lines are not counted.
- Who sent it: `ports_by_process` maps the local TCP ports of the engine processes (from
  /proc/<pid>/fd and /proc/net/tcp) to their names; a Redis client address carries its
  port, and a Postgres backend's client port is in pg_stat_activity.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bench.cluster import BenchError

PG_LOG = Path(os.environ.get("BENCH_PG_LOG", "/var/log/postgresql/postgresql-15-main.log"))
PG_KINDS = ("BEGIN", "COMMIT", "ROLLBACK", "DISCARD ALL", "SELECT", "INSERT", "UPDATE", "DELETE", "other")
# Columns of the trace's Postgres table: statements by kind, then round trips (one per query
# text: the hot paths send `BEGIN; SELECT ...` or `INSERT ...; UPDATE ...; COMMIT` as one).
MARK = "bench-trace-mark-"


# ---- which process owns a local port -------------------------------------------------------

def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _local_ports_by_inode() -> dict[int, int]:
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            ports[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return ports


def ports_by_process(pids: dict[str, int]) -> dict[int, str]:
    """{local TCP port: process name} of every socket the named processes hold now."""
    by_inode = _local_ports_by_inode()
    return {by_inode[inode]: name for name, pid in pids.items() for inode in _socket_inodes(pid) if inode in by_inode}


# ---- Postgres: the statement log -----------------------------------------------------------

# '%m [%p] %q%u@%d ': "2026-12-01 16:45:00.123 UTC [1234] postgres@bench_x LOG:  statement: BEGIN"
_PG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (?:(\S*)@(\S*) )?([A-Z0-9]+):  (.*)$")
_PG_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$", re.S)
_LOCKING_SELECT = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.I)
_WRITING_OTHER = {"CREATE", "ALTER", "DROP", "TRUNCATE", "COPY", "MERGE", "GRANT", "REVOKE", "COMMENT"}


def statement_kind(sql: str) -> str:
    """BEGIN, COMMIT, ROLLBACK, DISCARD ALL, SELECT, INSERT, UPDATE, DELETE or other."""
    words = sql.lstrip(" \t\n(").split(None, 2)
    first = words[0].upper().rstrip(";") if words else ""
    if first in ("BEGIN", "START"):
        return "BEGIN"
    if first in ("COMMIT", "END"):
        return "COMMIT"
    if first == "DISCARD" and len(words) > 1 and words[1].upper().rstrip(";") == "ALL":
        return "DISCARD ALL"
    if first == "WITH":  # a CTE counts as the statement it ends in
        found = re.search(r"\b(INSERT|UPDATE|DELETE)\b", sql, re.I)
        return found.group(1).upper() if found else "SELECT"
    return first if first in PG_KINDS else "other"


def writes(kind: str, sql: str) -> bool:
    """Does the statement make its transaction write (and so its commit wait for the WAL flush)?
    Row locks count: SELECT ... FOR UPDATE gives the transaction an xid and a WAL record."""
    if kind in ("INSERT", "UPDATE", "DELETE"):
        return True
    if kind == "SELECT":
        return bool(_LOCKING_SELECT.search(sql))
    words = sql.split(None, 1)
    return kind == "other" and bool(words) and words[0].upper() in _WRITING_OTHER


def split_statements(sql: str) -> list[str]:
    """The statements of one query text (`BEGIN; SELECT ...` is one round trip, two statements):
    split on `;` outside quoted strings and identifiers."""
    parts, start, quote = [], 0, None
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = None  # a doubled quote reopens at once on the next character
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            parts.append(sql[start:i])
            start = i + 1
    parts.append(sql[start:])
    return [p.strip() for p in parts if p.strip()]


@dataclass
class Statement:
    """One query (one round trip) a backend of the bench database received, and its statements."""

    backend: int
    sql: str
    kinds: list = None  # the kind of each statement in it
    durable_commit: bool = False  # it ended a transaction that wrote (or wrote on its own, autocommit)


class _TransactionTracker:
    """Per backend: in a transaction or not, and whether it wrote; marks the durable commits."""

    def __init__(self):
        self.open: dict[int, bool] = {}  # backend -> wrote (present while in a transaction)

    def see(self, st: Statement) -> None:
        st.kinds = []
        for sql in split_statements(st.sql) or [st.sql]:
            kind = statement_kind(sql)
            st.kinds.append(kind)
            if kind == "BEGIN":
                self.open[st.backend] = False
            elif kind == "COMMIT":
                st.durable_commit = self.open.pop(st.backend, False) or st.durable_commit
            elif kind == "ROLLBACK" and not re.search(r"\bTO\b", sql, re.I):
                self.open.pop(st.backend, None)
            elif writes(kind, sql):
                if st.backend in self.open:
                    self.open[st.backend] = True
                else:
                    st.durable_commit = True  # autocommit: the statement is its own transaction


class PgStatementLog:
    """Statements of one database, read from the server log as it grows (from now on)."""

    def __init__(self, database_url: str, log_path: Path = PG_LOG):
        import psycopg2

        self.database = urlparse(database_url).path.lstrip("/")
        try:
            self._file = open(log_path, "rb")
        except OSError as exc:
            raise BenchError(f"cannot read the Postgres log {log_path} ({exc}); set BENCH_PG_LOG") from exc
        self._file.seek(0, os.SEEK_END)
        self._partial = b""
        self._last: Statement | None = None
        self._tracker = _TransactionTracker()
        self.statements: list[Statement] = []
        self._classified = 0  # statements before this index have their kind and commit flag
        self._conn = psycopg2.connect(database_url)
        self._conn.autocommit = True
        self.own_backend = self._query("SELECT pg_backend_pid()")[0][0]
        self._marks = 0

    def _query(self, sql: str):
        with self._conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()

    def _read(self) -> None:
        data = self._partial + self._file.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for its end
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        head = _PG_LINE.match(line)
        if head is None:  # a continuation of the previous entry (multi-line SQL)
            if self._last is not None:
                self._last.sql += "\n" + line
            return
        pid, _, database, level, message = head.groups()
        self._last = None
        statement = _PG_STATEMENT.match(message) if level == "LOG" and database == self.database else None
        if statement is not None:
            self._last = Statement(int(pid), statement.group(1))
            self.statements.append(self._last)

    def mark(self, timeout: float = 10.0) -> int:
        """Log a marker and read up to it; the index of the first statement after the mark."""
        self._marks += 1
        token = f"{MARK}{self._marks}"
        self._query(f"SELECT '{token}'")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read()
            for index in range(len(self.statements) - 1, -1, -1):
                st = self.statements[index]
                if st.backend == self.own_backend and token in st.sql:
                    self._classify()
                    return index + 1
            time.sleep(0.005)
        raise BenchError(f"marker {token} never reached the Postgres log: is log_statement set on the database?")

    def _classify(self) -> None:
        """Kinds and durable commits, in log order, for the statements not classified yet."""
        for st in self.statements[self._classified:]:
            self._tracker.see(st)
        self._classified = len(self.statements)

    def client_ports(self) -> dict[int, int]:
        """{backend pid: client port} of the database's sessions now (the marker's excluded)."""
        rows = self._query("SELECT pid, client_port FROM pg_stat_activity "
                           "WHERE datname = current_database() AND client_port IS NOT NULL")
        return {pid: port for pid, port in rows if pid != self.own_backend}

    def count(self, start: int, end: int, backend_names: dict[int, str]) -> Counter:
        """{(process, kind): statements} plus (process, 'round trips') and (process, 'durable commits')."""
        counts = Counter()
        for st in self.statements[start:end]:
            if st.backend == self.own_backend:
                continue
            name = backend_names.get(st.backend, "unmapped")
            for kind in st.kinds:
                counts[(name, kind)] += 1
            counts[(name, "round trips")] += 1
            if st.durable_commit:
                counts[(name, "durable commits")] += 1
        return counts

    def listing(self, start: int, end: int, backend_names: dict[int, str], width: int = 110) -> list[str]:
        """The window's statements in log order: `process [backend] first line of the SQL`."""
        return [f"{backend_names.get(st.backend, 'unmapped'):8} [{st.backend}] "
                f"{' '.join(st.sql.split())[:width]}{' (durable commit)' if st.durable_commit else ''}"
                for st in self.statements[start:end] if st.backend != self.own_backend]

    def close(self) -> None:
        """Close the log file and the marker connection."""
        self._file.close()
        self._conn.close()


# ---- Redis: MONITOR ------------------------------------------------------------------------

# +1733000000.123456 [14 127.0.0.1:50000] "XADD" "engine:jobs" ...   (or [14 lua] inside a script)
_MONITOR_LINE = re.compile(r'^\+?\d+\.\d+ \[(\d+) ([^\]]+)\] "((?:[^"\\]|\\.)*)"')


def _sender(addr: str, port_names: dict[int, str]) -> str:
    """The process behind a MONITOR client address (`127.0.0.1:50000`), or `lua` for a script."""
    if addr == "lua":
        return "lua"
    port = addr.rsplit(":", 1)[1]
    return port_names.get(int(port), "unmapped") if port.isdigit() else "unmapped"


class RedisMonitor:
    """Every command sent to one db index of the Redis server, from a MONITOR connection."""

    def __init__(self, redis_url: str):
        import redis

        parsed = urlparse(redis_url)
        self.db = int(parsed.path.lstrip("/") or 0)
        self.lines: list[str] = []
        self._sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=5)
        self._sock.settimeout(None)
        self._sock.sendall(b"MONITOR\r\n")
        self._reader = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self._reader.start()
        self._marker = redis.Redis.from_url(redis_url)
        self._marker_addr: str | None = None
        self._marks = 0

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            *complete, buffer = (buffer + chunk).split(b"\r\n")
            self.lines.extend(line.decode("utf-8", "replace") for line in complete)

    def mark(self, timeout: float = 10.0) -> int:
        """ECHO a marker and wait until MONITOR shows it; the index of the first line after it."""
        self._marks += 1
        token = f"{MARK}{self._marks}-{uuid.uuid4().hex[:6]}"
        self._marker.echo(token)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = len(self.lines)
            for index in range(seen, lines):
                if token in self.lines[index]:
                    found = _MONITOR_LINE.match(self.lines[index])
                    self._marker_addr = found.group(2) if found else self._marker_addr
                    return index + 1
            seen = lines
            time.sleep(0.005)
        raise BenchError(f"marker {token} never showed on the Redis MONITOR connection")

    def count(self, start: int, end: int, port_names: dict[int, str]) -> Counter:
        """{(process, COMMAND): n} sent by clients on the leased db; commands that Lua scripts
        ran are counted as (process 'lua', 'lua:COMMAND'), apart: they are not round trips."""
        counts = Counter()
        for line in self.lines[start:end]:
            found = _MONITOR_LINE.match(line)
            if found is None or int(found.group(1)) != self.db or found.group(2) == self._marker_addr:
                continue
            name, command = _sender(found.group(2), port_names), found.group(3).upper()
            if name == "lua":
                counts[("lua", f"lua:{command}")] += 1
                continue
            counts[(name, command)] += 1
            counts[(name, "total")] += 1
        return counts

    def listing(self, start: int, end: int, port_names: dict[int, str], width: int = 110) -> list[str]:
        """The window's commands on the leased db in order: `process command args...`."""
        lines = []
        for line in self.lines[start:end]:
            found = _MONITOR_LINE.match(line)
            if found is None or int(found.group(1)) != self.db or found.group(2) == self._marker_addr:
                continue
            lines.append(f"{_sender(found.group(2), port_names):8} {line[found.start(3) - 1:][:width]}")
        return lines

    def close(self) -> None:
        """Stop monitoring (closing the socket ends the reader thread)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._marker.close()
        self._reader.join(timeout=5)
