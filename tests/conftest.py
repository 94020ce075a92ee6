"""Shared fixtures: real Postgres and Redis where the tests need them.

A test that needs a server which is not running skips on a laptop and fails in CI
(`CI=true`), so a missing service can never turn CI green.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys

import pytest

# Bytecode caches on, for this run and the processes it starts. Where the environment forbids
# them (PYTHONDONTWRITEBYTECODE, as on this machine), every test process rewrote and compiled
# every test module again (~2.4 s of CPU each) and every engine process the end-to-end tests
# start compiled the engine again (~0.1 s each, hundreds of starts). The caches go to
# __pycache__ directories, which git ignores.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# tornado.testing's bound on one gen_test (read when the test modules are imported): its 5 s
# default is a clock a loaded 2-core machine running five tests at once can miss; a test
# still waits on conditions, this only bounds a hung one.
os.environ.setdefault("ASYNC_TEST_TIMEOUT", "30")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI) when a server the test needs is not reachable."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service fails the run)")
    pytest.skip(message)


def require_tool(name: str, *commands: str) -> list[str]:
    """Paths of the commands a test needs: skip (laptop) or fail (CI) when one is missing.

    `.ci/run` installs them (chromium, chromium-driver, newman, promtool), so in CI a missing one is a
    broken install step, never a reason to skip.
    """
    paths = [shutil.which(command) for command in commands]
    if all(paths):
        return paths
    missing = ", ".join(c for c, p in zip(commands, paths) if not p)
    not_installed(f"{name} is not installed (missing: {missing})", ".ci/run installs it")


def not_installed(message: str, in_ci: str = "a missing tool fails the run") -> None:
    """Skip (laptop) or fail (CI) a test whose tools are missing; `message` says which."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: {in_ci})")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_template():
    """A database with the current schema, built once (per schema) and copied for each test."""
    require_server("PostgreSQL", "127.0.0.1", 5432)
    from bench.cluster import migrated_template

    return migrated_template()


@pytest.fixture(scope="session")
def _postgres_pool(postgres_template):
    """Copies of the template this test process reuses (tests/db_pool.py), dropped at its end."""
    from tests.db_pool import DatabasePool

    pool = DatabasePool(postgres_template)
    yield pool
    pool.close()


@pytest.fixture
def postgres_url(request, postgres_template):
    """A Postgres database with the current schema and the template's rows for one test: a fresh
    copy of the migrated template, dropped afterwards; or, for a test marked `reused_database`, a
    copy an earlier test of this process used and that was put back as the template holds it
    (tests/db_pool.py: a copy costs Postgres ~0.1-0.3 s of CPU, putting one back milliseconds)."""
    if request.node.get_closest_marker("reused_database"):
        pool = request.getfixturevalue("_postgres_pool")
        url = pool.take()
        try:
            yield url
        finally:
            pool.give_back(url)
        return
    from bench.cluster import fresh_database

    with fresh_database(prefix="engine_test", template=postgres_template) as url:
        yield url


@pytest.fixture
def empty_postgres_url():
    """A fresh, empty Postgres database (no schema: what `engine migrate` starts from)."""
    require_server("PostgreSQL", "127.0.0.1", 5432)
    from bench.cluster import fresh_database

    with fresh_database(prefix="engine_test") as url:
        yield url


@pytest.fixture
def redis_url():
    """A Redis database index of its own, flushed before and after the test.

    The index is leased (bench.cluster.leased_redis: a key in database 0), so test runs and
    benches sharing one Redis server, and tests that flush their own index, never flush each
    other's data.
    """
    require_server("Redis", "127.0.0.1", 6379)
    from bench.cluster import leased_redis

    with leased_redis(first_index=15, base_url=REDIS_BASE_URL, seconds=900) as url:
        yield url


def _settings(tmp_path, database_url: str | None = None):
    from config import load_settings

    env = {"ENGINE_DATA_DIR": str(tmp_path), "SIM_SEED": "7"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return load_settings(env, dotenv=None)


@pytest.fixture(params=["sqlite", "postgres"])
def database_settings(request, tmp_path):
    """Settings for a database with the current schema and no rows: the embedded SQLite file
    (migrated by the test's own `open_database(..., migrate=True)`), then a Postgres copy of
    the migrated template."""
    return _settings(tmp_path, request.getfixturevalue("postgres_url") if request.param == "postgres" else None)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_settings(request, tmp_path):
    """Settings for a database with no schema at all: SQLite, then Postgres."""
    return _settings(tmp_path, request.getfixturevalue("empty_postgres_url") if request.param == "postgres" else None)


# Fixtures that stop and start servers of a module's own: the tests that use them run on one
# xdist worker, one at a time, sharing the module's servers (and never racing each other).
# So do the tests that use `shared_cluster` (tests/e2e/conftest.py), to start its cluster once.
OWN_SERVERS = {"own_redis", "own_postgres", "redis_cluster"}


# The longest start first (a module that runs on one worker counts as the sum of its tests,
# --durations), so that the many short tests fill the xdist workers at the end instead of one
# long test or module running alone.
LONGEST_FIRST = ("test_schemathesis", "test_outages", "test_dashboard", "test_cli", "test_orders_over_time",
                 "test_order_types", "test_protective_orders", "test_generated_requests", "test_cluster",
                 "test_process_faults", "test_procfile", "test_redis_cluster", "test_takeover")


# Every test's Postgres database is a reused copy (tests/db_pool.py), but for these modules':
# they assert on query plans, which a reused copy's statistics could change.
FRESH_DATABASE = {"tests.integration.test_read_plans"}


def _shares(item) -> bool:
    return "shared_cluster" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    """Longest modules first; the tests of a module that owns servers, or that shares a cluster,
    on one xdist worker. In a module that shares a cluster its other tests run first, so that the
    shared one (started at its first use, stopped at the module's end) never runs beside theirs:
    a worker has one cluster at a time, as many connections to the shared Postgres as before."""
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    first: dict[str, int] = {}
    for n, item in enumerate(items):
        first.setdefault(item.module.__name__, n)
    items.sort(key=lambda item: (rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)),
                                 first[item.module.__name__], _shares(item)))
    sharing = {item.module.__name__ for item in items if _shares(item)}
    for item in items:
        if item.module.__name__ not in FRESH_DATABASE:
            item.add_marker(pytest.mark.reused_database)
        if OWN_SERVERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(f"own-servers-{item.module.__name__}"))
        elif item.module.__name__ in sharing:
            item.add_marker(pytest.mark.xdist_group(f"shared-cluster-{item.module.__name__}"))

