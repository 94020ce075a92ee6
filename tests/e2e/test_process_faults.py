"""Engine processes stopped under load, on the shared servers (no server is disturbed):
a worker's SIGTERM drains it, and the listeners of a web process killed with SIGKILL
resume on another one with `after=` and get every event exactly once."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from tests.e2e.guarantees import check_orders, not_confirmed, report
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e

ORDERS = 20  # the SIGTERM test: 10 mid-swap on each worker (WORKER_CONCURRENCY 10)
WEB_KILL_ORDERS = 12  # 2 workers x 5 slots: 10 mid-swap and 2 queued at the kill, 6 followed on the killed web
SETTLE_S = 75  # from the first submit, every order has this long to end
DRAIN_LIMIT_S = 30  # README: a worker stops within its in-flight orders' time, at most 25 s (+ the tree's stop)
SIGNAL_GRACE_S = 1.0
RETRY_ATTEMPTS = 8


def _timestamp(event: dict) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")


def started_after(orders: list[dict], worker_pid: int, sigterm_at: datetime) -> list[str]:
    """Attempts (`routing` events) the worker with `worker_pid` started after its SIGTERM
    (and `SIGNAL_GRACE_S`: an order the consumer started as the signal arrived is no new start)."""
    late = []
    for order in orders:
        for event in order["events"]:
            worker = event["meta"].get("worker", "") if event["status"] == "routing" else ""
            after_s = (_timestamp(event) - sigterm_at).total_seconds()
            if f"-{worker_pid}-" in worker and after_s > SIGNAL_GRACE_S:
                late.append(f"order {order['orderId'][:8]}: attempt {event['attempt']} started at "
                            f"{event['timestamp']}, {after_s:.1f}s after the SIGTERM "
                            f"({event['meta'].get('retryReason', 'first attempt')})")
    return late


def exhausted(order: dict) -> bool:
    """Failed after every attempt: with half the swaps failing, an order may legitimately do so."""
    return order["attempts"] == RETRY_ATTEMPTS


def test_a_worker_stopped_with_sigterm_under_load_drains_and_starts_nothing_new(make_cluster):
    # Half the swaps fail: of the ~10 orders in flight on the worker at its SIGTERM, some need
    # a retry while it drains (all of them succeeding has odds of 1 in 1,000).
    # Realistic venues at 0.3 of their latency: swaps of 0.6-0.9 s, still in flight at the SIGTERM;
    # retries wait at most 1 s (not 5), so an order failing seven times does not hold the test;
    # the other worker looks for the jobs it hands back twice a second (not every 5 s).
    cluster = make_cluster(workers=2, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=10, VENUE_FAILURE_RATE="0.5",
                           RETRY_ATTEMPTS=str(RETRY_ATTEMPTS), VENUE_LATENCY_SCALE="0.3", RETRY_MAX_DELAY_SECONDS="1",
                           CLAIM_INTERVAL_SECONDS="0.5")
    draining = cluster.workers[0]

    async def scenario():
        client = cluster.client()
        load = Load(client, [cluster.webs[0][1]])
        await load.submit(ORDERS, time.monotonic() + SETTLE_S)
        await load.wait_for("submitted", ORDERS)  # each worker has 10 orders mid-swap
        sigterm_at = datetime.now(timezone.utc).replace(tzinfo=None)
        draining.proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, draining.proc.wait, DRAIN_LIMIT_S + 5)
        except subprocess.TimeoutExpired:
            code = None
        stopped_s = time.monotonic() - began
        problems, orders = await check_orders(client, await load.finish())
        client.close()
        return sigterm_at, code, stopped_s, problems, orders

    sigterm_at, code, stopped_s, problems, orders = asyncio.run(scenario())
    print(f"worker0 exited with {code} {stopped_s:.1f}s after SIGTERM;",
          [line for line in draining.log_text().splitlines() if "drained" in line])
    assert code == 0 and stopped_s < DRAIN_LIMIT_S, f"exit code {code} after {stopped_s:.1f}s"
    assert not problems, report(problems)
    failed = not_confirmed(orders, may_fail=exhausted)
    assert not failed, report(failed)
    late = started_after(orders, draining.pid, sigterm_at)
    assert not late, "the draining worker started new attempts instead of handing the jobs back:\n" + report(late)


def test_listeners_of_a_web_killed_with_sigkill_resume_elsewhere_with_after_and_get_every_event_once(make_cluster):
    cluster = make_cluster(webs=2, workers=2, VENUE_PROFILE="realistic", WORKER_CONCURRENCY=5,
                           VENUE_LATENCY_SCALE="0.5")  # swaps of 1-1.5 s: most orders still run at the kill
    (_, survivor), (killed, doomed) = cluster.webs

    async def scenario():
        client = cluster.client(0)
        load = Load(client, [doomed, survivor])  # half the listeners start on the web about to be killed
        await load.submit(WEB_KILL_ORDERS, time.monotonic() + SETTLE_S)
        await load.wait_for("submitted", 3)
        killed.kill()
        followers = await load.finish()
        problems, orders = await check_orders(client, followers)
        client.close()
        return followers, problems, orders

    followers, problems, orders = asyncio.run(scenario())
    assert not problems, report(problems)
    assert not not_confirmed(orders), report(not_confirmed(orders))
    resumed = [f for f in followers if f.resumed]
    assert len(resumed) >= WEB_KILL_ORDERS // 4, f"only {len(resumed)} listeners resumed after the kill"
