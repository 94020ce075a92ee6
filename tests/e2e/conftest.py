"""Fixtures that start real engine processes and always stop them, on the shared servers or,
for the tests that stop a server, on servers of their own (tests/servers.py)."""
from __future__ import annotations

import os
import pwd
import shutil

import pytest

from bench.cluster import EngineProcess, free_port, stop_all, wait_ready
from tests.conftest import not_installed
from tests.e2e.cluster import Client
from tests.servers import PostgresCluster, RedisServer, postgres_bin_dir


class Cluster:
    """web and worker processes on one Postgres database and one Redis index."""

    def __init__(self, env: dict, log_dir, migrated: bool = True):
        self.env = env
        self.migrated = migrated
        self.log_dir = log_dir
        self.webs: list[tuple[EngineProcess, int]] = []
        self.workers: list[EngineProcess] = []

    def start(self, webs: int = 1, workers: int = 2) -> "Cluster":
        if not self.migrated:  # the release phase, where the database is not a copy of the template
            migrate = EngineProcess("migrate", self.env, self.log_dir)
            assert migrate.run() == 0, migrate.log_text()
        for n in range(workers):
            self.add_worker()
        for n in range(webs):
            port = free_port()
            proc = EngineProcess("web", {**self.env, "PORT": str(port)}, self.log_dir, f"web{n}").start()
            self.webs.append((proc, port))
        for proc, port in self.webs:
            wait_ready(port, proc)
        return self

    def add_worker(self) -> EngineProcess:
        proc = EngineProcess("worker", self.env, self.log_dir, f"worker{len(self.workers)}").start()
        self.workers.append(proc)
        return proc

    def client(self, n: int = 0) -> Client:
        return Client(self.webs[n][1])

    @property
    def processes(self) -> list[EngineProcess]:
        return [p for p, _ in self.webs] + self.workers

    def stop(self) -> None:
        stop_all(self.processes)

    def logs(self) -> str:
        return "\n".join(f"==== {p.name}\n{p.log_text()[-3000:]}" for p in [w for w, _ in self.webs] + self.workers)


def _test_failed(request) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


def _clusters(database_url: str, redis_url: str, tmp_path, request, migrated: bool = True):
    """The body of the cluster fixtures: yield `make`, then stop every cluster it started
    and print their logs if the test failed."""
    clusters = []

    def make(webs: int = 1, workers: int = 2, **env):
        base = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIM_SEED": "11",
                "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "LOG_LEVEL": "INFO"}
        cluster = Cluster({**base, **{k: str(v) for k, v in env.items()}}, tmp_path, migrated)
        clusters.append(cluster)
        return cluster.start(webs, workers)

    try:
        yield make
    finally:
        stop_all([proc for cluster in clusters for proc in cluster.processes])
        if _test_failed(request):
            for cluster in clusters:
                print(cluster.logs())  # shown under "Captured stdout teardown"


@pytest.fixture
def make_cluster(postgres_url, redis_url, tmp_path, request):
    """Start a cluster with the given settings: `make_cluster(webs=1, workers=2, VENUE_PROFILE=...)`."""
    yield from _clusters(postgres_url, redis_url, tmp_path, request)


@pytest.fixture(scope="module")
def _module_clusters(postgres_template, tmp_path_factory):
    """The clusters `shared_cluster` started for this module, by their settings; each on a fresh
    database (a copy of the template) and a leased Redis index of its own; all stopped, and
    their databases dropped, at the end of the module."""
    from contextlib import ExitStack

    from bench.cluster import fresh_database, leased_redis
    from tests.conftest import REDIS_BASE_URL, require_server

    require_server("Redis", "127.0.0.1", 6379)
    started: dict[tuple, Cluster] = {}
    with ExitStack() as stack:
        def get(webs: int, workers: int, env: dict) -> Cluster:
            key = (webs, workers, tuple(sorted(env.items())))
            if key not in started:
                database_url = stack.enter_context(fresh_database(prefix="engine_test", template=postgres_template))
                redis_url = stack.enter_context(leased_redis(first_index=15, base_url=REDIS_BASE_URL,
                                                                  seconds=900))
                base = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIM_SEED": "11",
                        "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "LOG_LEVEL": "INFO"}
                cluster = Cluster({**base, **env}, tmp_path_factory.mktemp("shared"))
                started[key] = cluster  # stopped below even if it does not come up
                cluster.start(webs, workers)
            return started[key]

        try:
            yield get
        finally:
            stop_all([proc for cluster in started.values() for proc in cluster.processes])


@pytest.fixture
def shared_cluster(_module_clusters, request):
    """`make_cluster` for tests that kill, stop or reconfigure nothing: a cluster with the same
    settings is started once per module and shared by its tests, each with its own orders and
    asserting only on them: `shared_cluster(webs=1, workers=2, VENUE_PROFILE=...)`. The tests
    of a module that use it run on one xdist worker (tests/conftest.py). Its logs are printed if
    the test fails."""
    used = []

    def get(webs: int = 1, workers: int = 2, **env) -> Cluster:
        cluster = _module_clusters(webs, workers, {k: str(v) for k, v in env.items()})
        dead = [proc.name for proc in cluster.processes if proc.proc.poll() is not None]
        assert not dead, f"shared engine processes dead before the test: {dead}\n{cluster.logs()}"
        used.append(cluster)
        return cluster

    yield get
    if _test_failed(request):
        for cluster in used:
            print(cluster.logs())


@pytest.fixture(scope="module")
def own_redis():
    """A `redis-server` of this module's own on a free port (nothing persisted), that tests may
    stop and start again; stopped by pid at the end of the module, whatever happened."""
    binary = shutil.which("redis-server")
    if binary is None:
        not_installed("redis-server is not installed", "it is installed with the Redis server")
    server = RedisServer(binary)
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="module")
def own_postgres():
    """A throwaway Postgres cluster of this module's own (initdb + pg_ctl on a free port, fsync
    on), that tests may restart or keep down; stopped at the end of the module, whatever happened."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        not_installed("PostgreSQL's server binaries (initdb, pg_ctl) are not installed",
                      "they are installed with the server")
    if os.geteuid() == 0:  # Postgres refuses root: initdb and pg_ctl run as the postgres user
        if shutil.which("runuser") is None:
            not_installed("runuser is needed to run initdb as the postgres user", "util-linux provides it")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            not_installed("there is no postgres OS user to run initdb as", "the server's package creates it")
    cluster = PostgresCluster(bin_dir)
    try:
        yield cluster.start()
    finally:
        cluster.close()


EMBEDDED_ENV = {"VENUE_PROFILE": "instant", "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0",
                "DATABASE_URL": "", "REDIS_URL": "", "SIM_SEED": "11"}


@pytest.fixture
def make_engine_run(tmp_path):
    """Start `engine run` on the embedded default (SQLite, in-process bus): `make_engine_run(**env)`.

    Returns (process, port); every process started is stopped afterwards and must exit 0.
    """
    started: list[EngineProcess] = []

    def make(**env):
        port = free_port()
        name = f"run{len(started)}"
        settings = {**EMBEDDED_ENV, "ENGINE_DATA_DIR": str(tmp_path / name), "PORT": str(port),
                    **{k: str(v) for k, v in env.items()}}
        proc = EngineProcess("run", settings, tmp_path, name).start()
        started.append(proc)
        wait_ready(port, proc)
        return proc, port

    yield make
    codes = stop_all(started)
    for proc in started:
        print(proc.log_text()[-3000:])
    assert all(code == 0 for code in codes), "engine run exits cleanly on SIGTERM"


@pytest.fixture(scope="module")
def module_engine_run(tmp_path_factory):
    """`make_engine_run` for a whole module: `module_engine_run(**env)` -> port of an `engine run`
    with those settings, started by the first test that asks for them and shared by every later
    one that asks for the same (each test then acts on, and asserts on, its own orders only).

    Every process started is stopped at the end of the module and must exit 0.
    """
    tmp_path = tmp_path_factory.mktemp("engine-run")
    started: dict[tuple, tuple[EngineProcess, int]] = {}

    def make(**env):
        settings = {k: str(v) for k, v in env.items()}
        key = tuple(sorted(settings.items()))
        if key not in started:
            port = free_port()
            name = f"run{len(started)}"
            proc = EngineProcess("run", {**EMBEDDED_ENV, "ENGINE_DATA_DIR": str(tmp_path / name), "PORT": str(port),
                                         **settings}, tmp_path, name).start()
            started[key] = (proc, port)
            wait_ready(port, proc)
        proc, port = started[key]
        assert proc.proc.poll() is None, proc.log_text()[-3000:]
        return port

    yield make
    processes = [proc for proc, _ in started.values()]
    codes = stop_all(processes)
    for proc in processes:
        print(proc.log_text()[-3000:])
    assert all(code == 0 for code in codes), "engine run exits cleanly on SIGTERM"


@pytest.fixture(params=["engine run", "web + 2 workers"])
def start_engine(request):
    """The engine in both topologies, for the clients' main tests: `start_engine(**env)` -> port.

    `engine run` on the embedded default (shared with the module's other tests on the same
    settings, `module_engine_run`, in a module that sets SHARE_ENGINE_RUN), and the production one: `engine web` and two
    `engine worker` processes on Postgres and Redis (events reach the web through pub/sub).
    """
    if request.param == "engine run":
        if getattr(request.module, "SHARE_ENGINE_RUN", False):  # the module's tests on the same settings share it
            return request.getfixturevalue("module_engine_run")
        make_run = request.getfixturevalue("make_engine_run")
        return lambda **env: make_run(**env)[1]
    make_cluster = request.getfixturevalue("make_cluster")
    return lambda **env: make_cluster(webs=1, workers=2, **{"VENUE_PROFILE": "instant", **env}).webs[0][1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so fixtures can tell a failed test."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
