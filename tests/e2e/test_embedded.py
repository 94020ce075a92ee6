"""`engine run`: the newcomer's single process on the embedded default (SQLite, in-process bus)."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest

from bench.cluster import EngineProcess, free_port, wait_ready
from tests.e2e.cluster import assert_complete_lifecycle

pytestmark = pytest.mark.e2e


@pytest.fixture
def engine_run(tmp_path):
    port = free_port()
    env = {"ENGINE_DATA_DIR": str(tmp_path / "var"), "PORT": str(port), "VENUE_PROFILE": "instant",
           "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0"}
    for name in ("DATABASE_URL", "REDIS_URL"):
        env[name] = ""
    proc = EngineProcess("run", env, tmp_path).start()
    try:
        wait_ready(port, proc)
        yield proc, port
    finally:
        code = proc.stop()
        print(proc.log_text()[-3000:])
    assert code == 0, "engine run exits cleanly on SIGTERM"


def test_engine_run_executes_an_order_on_the_embedded_default(engine_run, tmp_path):
    from tests.e2e.cluster import Client

    proc, port = engine_run

    async def scenario():
        client = Client(port)
        code, accepted = await client.submit(tokenIn="sol", tokenOut="USDC", amount=1.5, clientOrderId="first")
        assert code == 202
        frames, close_code = await client.listen(accepted["links"]["ws"])
        assert_complete_lifecycle(frames)
        assert close_code == 1000
        code, order = await client.order(accepted["orderId"])
        assert order["status"] == "confirmed" and order["amount"] == "1.5" and order["tokenIn"] == "SOL"
        code, again = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1.50", clientOrderId="first")
        assert code == 200 and again["orderId"] == accepted["orderId"] and again["status"] == "confirmed"
        code, listing = await client.request("GET", "/api/orders?limit=1")
        assert listing["orders"][0]["orderId"] == accepted["orderId"]
        client.close()

    asyncio.run(scenario())
    assert (tmp_path / "var" / "engine.sqlite3").exists()


def test_with_log_format_json_every_line_is_a_json_object_and_an_orders_lines_carry_its_id(make_engine_run):
    from tests.e2e.cluster import Client

    proc, port = make_engine_run(LOG_FORMAT="json", LOG_LEVEL="INFO")

    async def scenario():
        client = Client(port)
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1")
        assert code == 202
        frames, _ = await client.listen(accepted["links"]["ws"])
        client.close()
        return accepted["orderId"], frames

    order_id, frames = asyncio.run(scenario())
    assert frames[-1]["status"] == "confirmed"
    assert proc.stop() == 0  # the lines of the stop too
    lines = proc.log_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, whatever wrote it
    assert len(entries) >= 3 and all(isinstance(e, dict) for e in entries)
    assert all({"time", "level", "logger", "pid", "message"} <= e.keys() for e in entries)
    about = [e["message"] for e in entries if e.get("orderId") == order_id]
    assert any("routed to" in message for message in about), about


def test_engine_web_refuses_to_start_without_postgres_and_redis(tmp_path):
    env = {"DATABASE_URL": "", "REDIS_URL": "", "ENGINE_DATA_DIR": str(tmp_path)}
    proc = EngineProcess("web", env, tmp_path)
    assert proc.run(timeout=30) == 2
    assert "needs DATABASE_URL and REDIS_URL" in proc.log_text()


def test_a_bad_setting_stops_the_process_with_a_message_naming_it(tmp_path):
    proc = EngineProcess("run", {"WORKER_CONCURRENCY": "lots", "ENGINE_DATA_DIR": str(tmp_path)}, tmp_path)
    assert proc.run(timeout=30) == 2
    assert "WORKER_CONCURRENCY" in proc.log_text()


def test_an_api_key_shorter_than_32_characters_stops_the_process_naming_the_variable_not_the_key(tmp_path):
    short = "only-twenty-chars-ok"
    proc = EngineProcess("run", {"API_KEYS": short, "ENGINE_DATA_DIR": str(tmp_path)}, tmp_path)
    assert proc.run(timeout=30) == 2
    assert "API_KEYS" in proc.log_text() and short not in proc.log_text(), proc.log_text()


def test_engine_web_on_an_unmigrated_database_says_to_run_migrate(tmp_path, empty_postgres_url, redis_url):
    env = {"DATABASE_URL": empty_postgres_url, "REDIS_URL": redis_url, "ENGINE_DATA_DIR": str(tmp_path)}
    proc = EngineProcess("web", env, tmp_path)
    assert proc.run(timeout=60) == 2
    assert "run `engine migrate` first" in proc.log_text()
    assert "Traceback" not in proc.log_text()


@pytest.mark.parametrize("command", ["run", "web"])
def test_a_port_in_use_is_one_line_and_exit_2_before_anything_starts(command, tmp_path):
    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen()
    port = taken.getsockname()[1]
    # `web` would need Postgres and Redis: unreachable ones show that nothing is tried first.
    env = {"PORT": str(port), "ENGINE_DATA_DIR": str(tmp_path / "var"), "DATABASE_URL": "", "REDIS_URL": ""}
    if command == "web":
        env.update(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", REDIS_URL="redis://127.0.0.1:1/0")
    try:
        proc = EngineProcess(command, env, tmp_path)
        assert proc.run(timeout=60) == 2
    finally:
        taken.close()
    lines = proc.log_text().strip().splitlines()
    assert lines == [f"engine: port {port} is already in use; stop what listens there or set PORT"], lines
    assert not (tmp_path / "var").exists()  # no database file, no worker: nothing started


def test_without_api_keys_the_engine_says_once_that_it_is_open_to_anyone(engine_run):
    proc, _ = engine_run
    open_lines = [line for line in proc.log_text().splitlines() if "open to anyone" in line]
    assert len(open_lines) == 1 and "WARNING" in open_lines[0] and "API_KEYS" in open_lines[0]
