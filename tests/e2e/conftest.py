"""Fixtures that start real engine processes and always stop them."""
from __future__ import annotations

import pytest

from bench.cluster import EngineProcess, free_port, wait_ready
from tests.e2e.cluster import Client


class Cluster:
    """web and worker processes on one Postgres database and one Redis index."""

    def __init__(self, env: dict, log_dir):
        self.env = env
        self.log_dir = log_dir
        self.webs: list[tuple[EngineProcess, int]] = []
        self.workers: list[EngineProcess] = []

    def start(self, webs: int = 1, workers: int = 2) -> "Cluster":
        code = EngineProcess("migrate", self.env, self.log_dir).run()
        assert code == 0, EngineProcess("migrate", self.env, self.log_dir).log_text()
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

    def stop(self) -> None:
        for proc in [p for p, _ in self.webs] + self.workers:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"==== {p.name}\n{p.log_text()[-3000:]}" for p in [w for w, _ in self.webs] + self.workers)


@pytest.fixture
def make_cluster(postgres_url, redis_url, tmp_path, request):
    """Start a cluster with the given settings: `make_cluster(webs=1, workers=2, VENUE_PROFILE=...)`."""
    clusters = []

    def make(webs: int = 1, workers: int = 2, **env):
        base = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "SIM_SEED": "11",
                "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "LOG_LEVEL": "INFO"}
        cluster = Cluster({**base, **{k: str(v) for k, v in env.items()}}, tmp_path)
        clusters.append(cluster)
        return cluster.start(webs, workers)

    yield make
    for cluster in clusters:
        cluster.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for cluster in clusters:
            print(cluster.logs())  # shown under "Captured stdout teardown"


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
    codes = [proc.stop() for proc in started]
    for proc in started:
        print(proc.log_text()[-3000:])
    assert all(code == 0 for code in codes), "engine run exits cleanly on SIGTERM"


@pytest.fixture(params=["engine run", "web + 2 workers"])
def start_engine(request):
    """The engine in both topologies, for the clients' main tests: `start_engine(**env)` -> port.

    `engine run` on the embedded default, and the production one: `engine web` and two
    `engine worker` processes on Postgres and Redis (events reach the web through pub/sub).
    """
    if request.param == "engine run":
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
