"""Webhooks through real processes: `engine web` + `engine worker` on Postgres and Redis, and a
receiver in this test that is down while the orders run.

The receiver is down (nothing listens on its port) while every order executes: the deliveries
wait in the database and are tried again with backoff. Then it comes up but hangs on the
first request it gets: the worker sending it holds that delivery's lease, and is killed
(SIGKILL). A second worker starts and the receiver answers again: the dead worker's lease
expires into the new worker's hands, and every event of every order must arrive, first
arrivals in `seq` order per order, each signed with the owner's secret. Duplicates are
allowed (at least once: the hung request may have reached the receiver), gaps are not.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.cluster import free_port
from tests.e2e.cluster import Client, until

pytestmark = pytest.mark.e2e

ORDERS = 3
ENV = {"VENUE_PROFILE": "instant", "WEBHOOK_ALLOW_PRIVATE": "on", "WEBHOOK_POLL_SECONDS": "0.05",
       "WEBHOOK_BACKOFF_MAX_SECONDS": "0.2", "WEBHOOK_TIMEOUT_SECONDS": "0.3"}  # a lease: 3 x 0.3 + 1 s


class Receiver:
    """An HTTP server on 127.0.0.1:port, started when the test says, keeping every POST it
    answers 204; while `hanging`, it holds each request (`hung` is set) and then answers 503."""

    def __init__(self, port: int):
        self.port = port
        self.received: list[tuple[dict, bytes, dict]] = []  # (headers, body, event), answered 204
        self.hanging = False
        self.hung = threading.Event()
        self.release = threading.Event()
        self._server = None

    def start(self) -> None:
        receiver = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hanging:
                    receiver.hung.set()
                    receiver.release.wait(10)
                    self.send_response(503)
                else:
                    receiver.received.append((dict(self.headers), body, json.loads(body)))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Hook)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def check_received(receiver: Receiver, orders: list[dict], secret: str) -> None:
    """Every event of every order received, signed; first arrivals in seq order per order."""
    for order in orders:
        mine = [(h, body, event) for h, body, event in receiver.received if event["orderId"] == order["orderId"]]
        first_seen: list[int] = []
        for headers, body, event in mine:
            signed = f"{headers['X-Engine-Timestamp']}.".encode() + body
            expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Engine-Signature"], expected)
            assert headers["X-Engine-Event-Seq"] == str(event["seq"]) and headers["X-Engine-Order-Id"] == order["orderId"]
            if event["seq"] not in first_seen:
                first_seen.append(event["seq"])
        assert first_seen == [e["seq"] for e in order["events"]], (first_seen, order["events"])
        assert {e["seq"]: e for _, _, e in mine} == {e["seq"]: e for e in order["events"]}


def test_a_receiver_down_for_a_while_gets_every_event_in_order_even_when_the_sending_worker_is_killed(
        make_cluster):
    cluster = make_cluster(webs=1, workers=1, **ENV)
    client = cluster.client()
    receiver = Receiver(free_port())
    url = f"http://127.0.0.1:{receiver.port}/hook"

    async def scenario():
        ids = []
        for n in range(ORDERS):
            status, body = await client.submit(tokenIn="SOL", tokenOut="USDC", amount="0.1", callbackUrl=url)
            assert status == 202, body
            ids.append(body["orderId"])

        async def all_tried_and_ended():
            orders = [(await client.order(oid))[1] for oid in ids]
            deliveries = [(await client.deliveries(oid))[1]["deliveries"] for oid in ids]
            done = all(o["status"] == "confirmed" for o in orders) and all(
                len(d) == o["events"][-1]["seq"] and d[0]["attempts"] >= 2 for o, d in zip(orders, deliveries))
            return done and (orders, deliveries)

        orders, deliveries = await until(all_tried_and_ended, 30, "orders confirmed, deliveries tried and waiting")
        assert all(d["status"] == "pending" and d["url"] == url for ds in deliveries for d in ds)
        assert all("refused" in ds[0]["error"].lower() for ds in deliveries), deliveries
        receiver.hanging = True
        receiver.start()
        await asyncio.get_running_loop().run_in_executor(None, receiver.hung.wait, 10)
        cluster.workers[0].kill()  # while it holds the lease of the request hanging here
        receiver.hanging = False
        receiver.release.set()
        cluster.add_worker()

        async def all_delivered():
            answers = [(await client.deliveries(oid))[1] for oid in ids]
            return all(d["status"] == "delivered" for a in answers for d in a["deliveries"]) and answers

        await until(all_delivered, 30, "every delivery delivered")
        return orders, (await client.webhook_secret())[1]["secret"]

    try:
        orders, secret = asyncio.run(scenario())
    finally:
        receiver.stop()
    assert receiver.hung.is_set()
    check_received(receiver, orders, secret)


def test_the_cli_submits_with_a_callback_url_and_reads_the_deliveries_on_engine_run(make_engine_run):
    from tests.e2e.test_cli import engine

    _, port = make_engine_run(WEBHOOK_ALLOW_PRIVATE="on", WEBHOOK_POLL_SECONDS="0.05")
    receiver = Receiver(free_port())
    receiver.start()
    try:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        done = engine(port, "submit", "SOL", "USDC", "0.1", "--callback-url", url, "--watch")
        assert done.returncode == 0, done.stderr
        order_id = done.stdout.splitlines()[0].split("\t")[0]

        async def delivered():
            answer = (await Client(port).deliveries(order_id))[1]["deliveries"]
            return len(answer) == 5 and all(d["status"] == "delivered" for d in answer)

        asyncio.run(until(delivered, 20, "the order's five events delivered"))
        header, *rows = [line.split("\t") for line in engine(port, "deliveries", order_id).stdout.splitlines()]
        assert header[:3] == ["seq", "status", "attempts"] and [r[:2] for r in rows] == [
            [str(n), "delivered"] for n in range(1, 6)]
        secret = engine(port, "deliveries", "--secret").stdout.strip()
        headers, body, event = receiver.received[-1]
        signed = f"{headers['X-Engine-Timestamp']}.".encode() + body
        assert headers["X-Engine-Signature"] == "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        assert [e["seq"] for _, _, e in receiver.received] == [1, 2, 3, 4, 5] and event["status"] == "confirmed"
    finally:
        receiver.stop()
