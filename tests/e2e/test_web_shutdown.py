"""A web process stopped with SIGTERM while WebSockets are open: it closes each with 1001
(going away, so clients reconnect elsewhere) and exits 0, well inside the grace platforms
and honcho give before SIGKILL."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest
from tornado.websocket import websocket_connect

pytestmark = pytest.mark.e2e

# The README's bound: generous against a loaded 2-core machine (measured well under a second
# when idle), and inside honcho's 5 s between the first exit and its SIGKILL.
STOP_LIMIT_S = 5.0


async def _first_frame(conn) -> dict:
    message = await asyncio.wait_for(conn.read_message(), 30)
    assert message is not None, f"closed early with {conn.close_code}"
    return json.loads(message)


async def _close_code(conn) -> int | None:
    """Read until the server closes the connection; its close code."""
    while await conn.read_message() is not None:
        pass
    return conn.close_code


def test_a_web_process_stopped_with_sigterm_closes_its_websockets_with_1001_and_exits_0(make_cluster):
    # No worker: the order stays pending, so its stream stays open until the web process stops.
    cluster = make_cluster(webs=1, workers=0)
    web, port = cluster.webs[0]

    async def scenario():
        client = cluster.client()
        feed = await websocket_connect(f"ws://127.0.0.1:{port}/ws")  # every order, live
        code, accepted = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="1")
        assert code == 202, accepted
        listener = await websocket_connect(f"ws://127.0.0.1:{port}{accepted['links']['ws']}")
        assert (await _first_frame(listener))["status"] == "pending"  # registered with the hub
        assert (await _first_frame(feed))["orderId"] == accepted["orderId"]
        client.close()

        web.proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        closes = asyncio.gather(_close_code(feed), _close_code(listener))
        try:
            exit_code = await asyncio.get_running_loop().run_in_executor(None, web.proc.wait, STOP_LIMIT_S * 4)
        except subprocess.TimeoutExpired:
            exit_code = None
        stopped_s = time.monotonic() - began
        codes = await asyncio.wait_for(closes, 10)
        return exit_code, stopped_s, codes

    exit_code, stopped_s, codes = asyncio.run(scenario())
    print(f"web exited with {exit_code} {stopped_s:.2f}s after SIGTERM; WebSocket close codes {codes}")
    assert codes == [1001, 1001], f"the WebSockets were closed with {codes}, not 1001 (going away)"
    assert exit_code == 0, f"exit code {exit_code}:\n{web.log_text()[-3000:]}"
    assert stopped_s < STOP_LIMIT_S, f"the web process took {stopped_s:.1f}s to stop"
