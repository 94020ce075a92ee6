"""A queue write whose reply is lost after Redis applied it: the stored order is the commit
point, so the client is told 202 and the order executes exactly once.

The web process reaches Redis through a TCP proxy of this test's own; the workers reach it
directly. While armed, the proxy passes each command that adds a job (XADD) to Redis, then
drops Redis's reply and the connection: the jobs are in the stream, the web process sees a
connection error (on every retry redis-py makes).
"""
from __future__ import annotations

import asyncio
import socket
import threading
from urllib.parse import urlparse

import pytest

from bench.cluster import EngineProcess, free_port, stop_all, wait_ready
from tests.e2e.cluster import Client, until, wait_terminal
from tests.e2e.guarantees import executed
from tests.e2e.load import SOL_USDC

pytestmark = pytest.mark.e2e


class ReplyDroppingProxy:
    """127.0.0.1:port -> Redis; while `armed`, a chunk holding XADD is forwarded and the
    reply to it dropped, with the connection (a reply lost after the write was applied)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.armed = threading.Event()
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open += [client, upstream]
            drop = threading.Event()
            threading.Thread(target=self._pipe, args=(client, upstream, drop, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, drop, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, drop: threading.Event, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and self.armed.is_set() and b"XADD" in data.upper():
                    drop.set()  # Redis gets the write; its answer will not come back
                elif not requests and drop.is_set():
                    self.dropped += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self._server.close()
        for end in self._open:
            try:
                end.close()
            except OSError:
                pass


def test_a_queue_write_whose_reply_is_lost_is_answered_202_and_executes_once(postgres_url, redis_url, tmp_path):
    target = urlparse(redis_url)
    proxy = ReplyDroppingProxy(target.port or 6379)
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "SIM_SEED": "11", "VENUE_PROFILE": "instant",
           "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0"}
    port = free_port()
    web_redis = f"redis://127.0.0.1:{proxy.port}{target.path}"
    worker = EngineProcess("worker", env, tmp_path, "worker0").start()
    web = EngineProcess("web", {**env, "REDIS_URL": web_redis, "PORT": str(port)}, tmp_path, "web0").start()
    try:
        wait_ready(port, web)

        async def submit_while_replies_are_lost():
            client = Client(port)
            proxy.armed.set()
            try:
                return await client.submit(**SOL_USDC)
            finally:
                proxy.armed.clear()
                client.close()

        code, accepted = asyncio.run(submit_while_replies_are_lost())
        assert proxy.dropped >= 1, "the fault was not hit: no reply to a queue write was dropped"
        assert code == 202, f"the order is stored: the client must be told it was accepted, got {code} {accepted}"
        order = wait_terminal(port, accepted["orderId"])
        assert order["status"] == "confirmed", order

        async def swaps():
            client = Client(port)
            try:
                return (await client.request("GET", f"/api/sim/swaps?orderId={accepted['orderId']}"))[1]
            finally:
                client.close()

        assert len(executed(asyncio.run(swaps()))) == 1, "executed exactly once"
        assert "queue write failed" in web.log_text()

        async def written_again():  # the requeuer's write (a second job) went through meanwhile or soon
            return "stored orders whose first queue write had failed" in web.log_text()

        asyncio.run(until(written_again, 10, "the web process to write the job again"))
        assert len(executed(asyncio.run(swaps()))) == 1, "the job written twice ran the order once"
    finally:
        codes = stop_all([web, worker])
        proxy.close()
        print(web.log_text()[-3000:])
    assert codes == [0, 0]
