"""The Procfile as a process manager runs it: the `release` entry, then honcho with several
workers on Postgres and Redis, and SIGTERM (a deploy) while orders are in flight."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tornado.websocket import websocket_connect

from bench.cluster import REPO, free_port, ready
from tests.e2e.cluster import Client, assert_complete_lifecycle

pytestmark = pytest.mark.e2e

GRACE_S = 30  # what Heroku-style platforms give between SIGTERM and SIGKILL
ORDERS = 20


def procfile() -> dict[str, str]:
    """The Procfile's entries: process type -> command."""
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


class Honcho:
    """`honcho start ...` on the repository's Procfile, its output in a log file; stopped by pid."""

    def __init__(self, env: dict, log_path: Path, *args: str):
        self.log_path = log_path
        bin_dir = str(Path(sys.executable).parent)  # `engine` and `honcho` of this environment
        self.env = {**os.environ, **env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    "PYTHONUNBUFFERED": "1"}
        empty_env_file = log_path.with_suffix(".env")
        empty_env_file.write_text("")  # not a developer's .env
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [os.path.join(bin_dir, "honcho"), "-f", str(REPO / "Procfile"), "-e", str(empty_env_file),
                 "start", *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_ready(self, port: int, workers: int = 0, timeout: float = 60) -> None:
        """Until the web answers on `port` and `workers` workers have logged their start (a
        worker signalled while it still imports dies of the signal: it had nothing to drain)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            if ready(port) and len(re.findall(r"actors\.supervisor: worker \S+ started", self.log())) >= workers:
                return
            time.sleep(0.1)
        raise AssertionError("web or workers not ready:\n" + self.log())

    def terminate(self) -> float:
        """SIGTERM to honcho, as a platform sends on deploy; seconds until it exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(GRACE_S + 5)
        except subprocess.TimeoutExpired:
            pass
        return time.monotonic() - started

    def kill(self) -> None:
        """Whatever is left of this honcho's process group (the test failed)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def assert_clean_shutdown(honcho: Honcho, seconds: float, processes: list[str]) -> None:
    """Every process stopped by itself with code 0 within the grace period; no crash logged."""
    log = honcho.log()
    assert honcho.proc.returncode is not None and seconds < GRACE_S, f"still running after {seconds:.1f}s:\n{log}"
    stopped = dict(re.findall(r"(\S+) stopped \(rc=(-?\d+)\)", log))
    assert stopped == {name: "0" for name in processes}, log[-6000:]
    assert "SIGKILL" not in log, log[-6000:]
    for crash in ("Traceback", "CRITICAL", " ERROR "):
        assert crash not in log, log[-6000:]


async def submit_with_listeners(client: Client, count: int):
    """Submit `count` orders, each with a listener; return (ids, listener tasks, first-submitted event)."""
    in_flight = asyncio.Event()
    ids = []
    for _ in range(count):
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="0.5")
        assert code == 202, accepted
        ids.append(accepted["orderId"])

    async def listen(order_id):
        frames = []
        try:
            conn = await websocket_connect(f"{client.ws_base}/ws?orderId={order_id}")
        except OSError:  # the web process was already stopping: the next one tells the rest
            return frames, None
        while (message := await conn.read_message()) is not None:
            frames.append(json.loads(message))
            if frames[-1]["status"] == "submitted":
                in_flight.set()
        return frames, conn.close_code

    tasks = [asyncio.ensure_future(listen(order_id)) for order_id in ids]
    return ids, tasks, in_flight


def test_the_procfile_execs_each_command_and_python_is_pinned_for_buildpacks():
    # `exec`: the engine itself gets the platform's SIGTERM and its exit code is what the
    # process manager reports; under `sh -c` without it honcho reported rc=-15 (the shell,
    # killed by the signal) for processes that had drained and exited 0.
    assert all(command.startswith("exec engine ") for command in procfile().values())
    assert procfile()["release"] == "exec engine migrate"
    pinned = (REPO / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", pinned) and f"python_requires = >={pinned}" in (REPO / "setup.cfg").read_text()


def test_procfile_release_then_honcho_then_sigterm_mid_flight_ends_every_order(empty_postgres_url, redis_url, tmp_path):
    entries = procfile()
    assert {"web", "worker", "release"} <= set(entries)
    port = free_port()
    env = {"DATABASE_URL": empty_postgres_url, "REDIS_URL": redis_url, "PORT": str(port), "SIM_SEED": "11",
           "VENUE_PROFILE": "realistic", "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0",
           "WORKER_CONCURRENCY": "5", "LOG_LEVEL": "INFO",
           "VENUE_LATENCY_SCALE": "0.4"}  # swaps of 0.8-1.2 s: some still in flight at the SIGTERM
    bin_dir = str(Path(sys.executable).parent)
    release = subprocess.run(entries["release"], shell=True, cwd=REPO, capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env, "PATH": bin_dir + os.pathsep + os.environ["PATH"]})
    assert release.returncode == 0, release.stdout + release.stderr

    first = Honcho(env, tmp_path / "honcho-1.log", "-c", "worker=2", "web", "worker")  # web gets $PORT
    second = None
    try:
        first.wait_ready(port, workers=2)

        async def deploy():
            client = Client(port)
            ids, listeners, in_flight = await submit_with_listeners(client, ORDERS)
            await asyncio.wait_for(in_flight.wait(), 30)  # swaps are on their way (0.8-1.2 s each)
            seconds = await asyncio.get_running_loop().run_in_executor(None, first.terminate)
            before = await asyncio.gather(*listeners)
            client.close()
            return ids, before, seconds

        ids, before, seconds = asyncio.run(deploy())
        assert_clean_shutdown(first, seconds, ["web.1", "worker.1", "worker.2"])
        assert re.search(r"web\.1 +\| .* engine: listening on port", first.log())  # logs on stdout
        # A listener not done got 1001 (the web process stopping), or never connected (None: it
        # was stopping already); one that connected just before the signal may have got no frame.
        unfinished = [code for frames, code in before if not frames or frames[-1]["status"] != "confirmed"]
        assert all(code in (1001, None) for code in unfinished), unfinished

        # The next release: the same Procfile starts again and resumes what was left.
        second = Honcho(env, tmp_path / "honcho-2.log", "web", "worker")
        second.wait_ready(port)

        async def resume():
            client = Client(port)
            results = []
            for order_id, (frames, _) in zip(ids, before):
                after = frames[-1]["seq"] if frames else 0
                rest, code = await client.listen(f"/ws?orderId={order_id}&after={after}", timeout=90)
                results.append((frames + rest, code))
            client.close()
            return results

        for events, code in asyncio.run(resume()):
            assert code == 1000
            assert_complete_lifecycle(events)  # seq 1..n, nothing lost or repeated, confirmed
        seconds = second.terminate()
        assert_clean_shutdown(second, seconds, ["web.1", "worker.1"])
    finally:
        for honcho in (first, second):
            if honcho is not None:
                honcho.kill()
