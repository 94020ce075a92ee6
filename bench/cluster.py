"""Real servers and processes for the bench (and the end-to-end tests, which import
`EngineProcess`, `free_port` and `wait_ready` from here): a fresh Postgres database, a
leased Redis index, and `engine ...` processes that are always stopped, by pid.
"""
from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from web.client.api import ClientError, EngineClient

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# Leases of Redis database indexes, shared by the bench and the test suite, live in database 0,
# which neither ever leases: a test that flushes its own index (what a Redis restart without
# persistence does) must not drop its lease and let a concurrent test take the index too.
LEASE_KEY = "engine-redis-lease:{index}"
LEASE_SECONDS = 3600
_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class BenchError(Exception):
    """The bench could not set up or run a scenario; the message says why."""


def machine_info() -> dict:
    """nproc, CPU model and Python version, recorded with every result."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpuModel": model, "python": platform.python_version(),
            "platform": platform.platform()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin():
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    return conn


def _database_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


@contextmanager
def fresh_database(prefix: str = "bench", settings: dict[str, str] | None = None, template: str | None = None):
    """CREATE DATABASE <prefix>_<random> (a copy of `template` if given, else empty); yield its
    URL; DROP it afterwards.

    `settings` are set on that database only (ALTER DATABASE ... SET), before anything
    connects to it, so every session of the run has them (the trace's log_statement).
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        for key, value in (settings or {}).items():
            cur.execute(f'ALTER DATABASE "{name}" SET {key} = %s', (value,))
    conn.close()
    try:
        yield _database_url(name)
    finally:
        conn = _admin()
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


TEMPLATE_LOCK = 7243002  # a pg_advisory_lock key: one process at a time builds a template


# Applies the migrations and nothing else (`engine migrate` would also create the simulated
# world, with its own seed, which each test's processes must create with theirs).
_SCHEMA_ONLY = ("from config import load_settings; from storage.database import open_database; "
                "open_database(load_settings(dotenv=None), migrate=True)")


def migrated_template() -> str:
    """The name of a database holding the current schema and no rows, to copy with
    `fresh_database(template=...)`: a copy takes milliseconds, migrating takes a process
    and a second. Its name carries a digest of the migrations, so a changed schema gets a
    template of its own; the first caller builds it (under an advisory lock, so concurrent
    test processes build it once) and every later one, in this run or the next, reuses it.
    """
    import hashlib

    from storage.migrations import MIGRATIONS

    digest = hashlib.sha256(repr((MIGRATIONS, _SCHEMA_ONLY)).encode()).hexdigest()[:12]
    name = f"engine_template_{digest}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s AND datistemplate", (name,))
            if cur.fetchone() is None:
                building = f"{name}_building"
                cur.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{building}"')
                env = {**os.environ, "DATABASE_URL": _database_url(building), "REDIS_URL": ""}
                done = subprocess.run([sys.executable, "-c", _SCHEMA_ONLY], cwd=REPO, env=env,
                                      capture_output=True, text=True, timeout=120)
                if done.returncode != 0:
                    raise BenchError(f"migrating the template failed:\n{done.stdout}{done.stderr}")
                cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
                cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
            cur.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
    finally:
        conn.close()
    return name


@contextmanager
def leased_redis(first_index: int = 14, base_url: str = REDIS_BASE_URL, seconds: int = LEASE_SECONDS):
    """Lease a Redis database index (1..15) for `seconds`, flush it before and after; yield its URL.

    The lease is a key set NX in database 0, outside the index it guards, so flushing the
    leased index (as some tests do on purpose) keeps it leased."""
    import redis

    token = uuid.uuid4().hex
    leases = redis.Redis.from_url(f"{base_url}/0")
    try:
        for index in [first_index] + [i for i in range(15, 0, -1) if i != first_index]:
            if leases.set(LEASE_KEY.format(index=index), token, nx=True, ex=seconds):
                break
        else:
            raise BenchError("no free Redis database index (1..15 all leased)")
        client = redis.Redis.from_url(f"{base_url}/{index}")
        client.flushdb()
        try:
            yield f"{base_url}/{index}"
        finally:
            client.flushdb()
            client.close()
            leases.eval(_RELEASE_LUA, 1, LEASE_KEY.format(index=index), token)
    finally:
        leases.close()


class EngineProcess:
    """One `engine <role>` process started by the bench; its output goes to a log file."""

    def __init__(self, role: str, env: dict, log_dir: Path, name: str | None = None):
        self.role = role
        self.name = name or role
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "EngineProcess":
        self._terminated = False
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "engine", self.role], cwd=REPO, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def run(self, timeout: float = 120) -> int:
        """Run to completion (for `migrate`); killed if it overruns."""
        self.start()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(0)
            raise BenchError(f"`engine {self.role}` did not finish within {timeout}s") from None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM this pid (once), then SIGKILL it if it has not exited within `timeout`;
        its exit code, None when it had to be killed."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def terminate(self) -> None:
        """Send SIGTERM once and return at once (`stop_all` then waits for every process together)."""
        if self.proc is not None and self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what a crash or an out-of-memory kill does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop_all(procs: list[EngineProcess], timeout: float = 30) -> list[int | None]:
    """Stop every process at once: SIGTERM to all, then wait for each (SIGKILL past `timeout`),
    so stopping a cluster takes its slowest process's drain, not the sum of them."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + timeout
    return [proc.stop(max(0.0, deadline - time.monotonic())) for proc in procs]


def ready(port: int) -> bool:
    """True when the web process on `port` answers /readyz with 200."""
    try:
        return EngineClient(f"http://127.0.0.1:{port}", timeout=1).request("GET", "/readyz").status == 200
    except ClientError:
        return False


def wait_ready(port: int, proc: EngineProcess, timeout: float = 60) -> None:
    """Poll /readyz until it answers 200; fail with the process log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise BenchError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_text()[-4000:]}")
        if ready(port):
            return
        time.sleep(0.1)
    raise BenchError(f"{proc.name} not ready after {timeout}s:\n{proc.log_text()[-4000:]}")


@contextmanager
def _redis():
    """A leased index of the shared Redis; or, when BENCH_REDIS_CLUSTER names a Redis Cluster of
    the caller's own (`redis+cluster://host:port`), that cluster, emptied before the run."""
    url = os.environ.get("BENCH_REDIS_CLUSTER")
    if not url:
        with leased_redis() as leased:
            yield leased
        return
    import redis

    client = redis.RedisCluster.from_url(url.replace("+cluster", "", 1))
    try:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    finally:
        client.close()
    yield url


@contextmanager
def cluster(env: dict, workers: int, log_dir: Path, database_settings: dict[str, str] | None = None,
            prepare: Callable[[str], None] | None = None):
    """Fresh database + leased Redis, `engine migrate`, `workers` workers and one web.

    Yields (port, {name: EngineProcess}, database_url). Every process started here is
    stopped in the `finally`, whatever happened. `database_settings` go to the fresh
    database (see `fresh_database`); `prepare(database_url)`, if given, runs after the
    migration and before any process starts (the history scenario fills the database there).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with fresh_database(settings=database_settings) as database_url, _redis() as redis_url:
        base = {**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        started: list[EngineProcess] = []
        try:
            migrate = EngineProcess("migrate", base, log_dir)
            started.append(migrate)
            if migrate.run() != 0:
                raise BenchError(f"engine migrate failed:\n{migrate.log_text()[-4000:]}")
            if prepare is not None:
                prepare(database_url)
            for n in range(workers):
                started.append(EngineProcess("worker", base, log_dir, f"worker{n}").start())
            port = free_port()
            web = EngineProcess("web", {**base, "PORT": str(port)}, log_dir, "web0").start()
            started.append(web)
            wait_ready(port, web)
            for proc in started[1:]:
                if proc.proc.poll() is not None:
                    raise BenchError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log_text()[-4000:]}")
            yield port, {p.name: p for p in started[1:]}, database_url
        finally:
            stop_all(list(reversed(started)))
