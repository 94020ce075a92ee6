"""Redis and Postgres failing under load, on servers this module starts itself
(tests/servers.py): the shared ones serve other people and must never be stopped.

One `engine web` + two `engine worker` processes with realistic venues at 0.3 of their
latency (swaps take 0.6-0.9 s, so some are in flight when the fault comes), started once for
the module: the engine must come through every fault whole, so each test meets the cluster
the previous fault left (all of that test's orders ended) and asserts only on its own orders.
Each test: 12 orders each followed by a WebSocket listener, the fault once the first three
have confirmed (others mid-swap, starting, or waiting in the queue), probing submits
throughout, 5 more orders right after.
Then, over HTTP and WebSocket: every accepted order terminal (confirmed: nothing else
fails here), its stream seq 1..n exactly once, executed at most once, no engine process
dead; every submit answered 202 or 503 `not_ready` within a bound.
"""
from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import Counter

import psycopg2
import pytest

from tests.e2e.cluster import until
from tests.e2e.conftest import Cluster, _test_failed
from tests.e2e.guarantees import RETRY_LATER, check_answers, check_orders, not_confirmed, report
from tests.e2e.load import SOL_USDC, Load, SubmitProbe

pytestmark = pytest.mark.e2e

ORDERS = 12  # 2 workers x 3 slots: at the fault, 3 orders done, about 6 mid-swap or starting, 3 queued
LATE_ORDERS = 5
OUTAGE_S = 3  # six probing submits meet it, and swaps of 0.6-0.9 s settle while it lasts
SETTLE_S = 60  # from the first submit, every order has the fault's length + this to end (a swap's watchdog is 30 s)
ANSWER_BOUND_S = 10  # a submit is answered within this, outage or not
ENV = {"VENUE_PROFILE": "realistic", "WORKER_CONCURRENCY": "3", "VENUE_LATENCY_SCALE": "0.3"}
EPOCH_MADE = "the bus's data is new"  # a worker's log line when it finds the bus's data new (start, or lost)


async def _blocking(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def restart(stop, start):
    """The fault: stop the server and start it again at once."""
    async def fault():
        await _blocking(stop)
        await _blocking(start)
    return fault


def keep_down(stop, start, seconds: float = OUTAGE_S):
    """The fault: stop the server, keep it down for `seconds`, start it again."""
    async def fault():
        await _blocking(stop)
        await asyncio.sleep(seconds)  # the outage itself: its length is the scenario
        await _blocking(start)
    return fault


async def submit_until_accepted(client, timeout: float = ANSWER_BOUND_S) -> dict:
    """Submit as a client would right after an outage: a 503 `not_ready` (or `overloaded`, while
    the jobs that waited out the outage are still the queue's oldest) is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = await client.submit(**SOL_USDC)
        if code == 202:
            return body
        assert code == 503 and body["error"]["code"] in RETRY_LATER, (code, body)
        assert time.monotonic() < deadline, f"still 503 {timeout}s after the fault: {body}"
        await asyncio.sleep(0.2)


async def under_load(cluster, fault, fault_s: float, refusals: str | None = None):
    """Run the scenario around `fault`; return (broken guarantees, the orders as stored now).

    `refusals` names the server that is down long enough that some submit must meet the
    outage (a 503): otherwise the probe missed it and the test would prove nothing.
    """
    client, port = cluster.client(), cluster.webs[0][1]
    deadline = time.monotonic() + fault_s + SETTLE_S
    load = Load(client, [port])
    await load.submit(ORDERS, deadline)
    await load.wait_for("confirmed", 3)  # about 6 orders mid-swap or starting, 3 waiting in the queue
    probe = SubmitProbe(port, timeout=ANSWER_BOUND_S).start()
    await fault()
    answers = await probe.stop()
    for answer in answers:
        if answer.code == 202:  # accepted during the fault: it must not be lost either
            load.follow(answer.order_id, deadline)
    for _ in range(LATE_ORDERS):
        load.follow((await submit_until_accepted(client))["orderId"], deadline)
    followers = await load.finish()
    problems, orders = await check_orders(client, followers)
    problems += check_answers(answers, ANSWER_BOUND_S)
    if refusals and not any(a.code == 503 for a in answers):
        problems.append(f"no submit met the outage: {refusals} was down but nothing answered 503")
    client.close()
    for proc in [web for web, _ in cluster.webs] + cluster.workers:
        if proc.proc.poll() is not None:
            problems.append(f"{proc.name} exited with {proc.proc.returncode} during the fault")
    print(f"{len(followers)} orders; submits during the fault: {Counter((a.code, a.error) for a in answers)}")
    return problems, orders


def assert_guarantees(outcome) -> None:
    """The issue's guarantees first, then that the fault failed no order (all confirmed)."""
    problems, orders = outcome
    assert not problems, report(problems)
    failed = not_confirmed(orders)
    assert not failed, "the fault failed orders (nothing else can fail one here):\n" + report(failed)


def logs_show(cluster, what, timeout: float = 30) -> None:
    """Wait until `what(logs)` holds of the engine processes' logs (a list of texts)."""
    async def holds():
        return what([proc.log_text() for proc in [web for web, _ in cluster.webs] + cluster.workers])

    asyncio.run(until(holds, timeout, f"the engine's logs to show {what.__doc__}"))


@pytest.fixture(scope="module")
def cluster(own_postgres, own_redis, tmp_path_factory):
    """The module's engine, started once (`engine migrate`, then web + 2 workers) on a fresh
    database of its own Postgres and its own Redis; stopped by pid at the end of the module."""
    own_postgres.start()
    own_redis.start()
    own_redis.flushall()
    name = f"engine_{os.urandom(5).hex()}"
    admin = psycopg2.connect(own_postgres.url())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    env = {"DATABASE_URL": own_postgres.url(name), "REDIS_URL": own_redis.url(0), "SIM_SEED": "11",
           "VENUE_FAILURE_RATE": "0", "VENUE_TIMEOUT_RATE": "0", "LOG_LEVEL": "INFO", **ENV}
    engine = Cluster(env, tmp_path_factory.mktemp("outages"), migrated=False)
    try:
        engine.start(webs=1, workers=2)
        # The workers' first bus epoch is made (the web may be ready before): the Redis
        # restart test counts the epochs made after its own restart.
        logs_show(engine, epoch_made_once)
        yield engine
    finally:
        engine.stop()


def epoch_made_once(logs):
    """a worker made the bus's first epoch"""
    return "\n".join(logs).count(EPOCH_MADE) >= 1


@pytest.fixture
def engine(cluster, own_postgres, own_redis, request):
    """The module's engine, its servers up (each fault ends with its server started again) and
    every process alive; its logs and the servers' printed if the test fails."""
    own_postgres.start()
    own_redis.start()
    dead = [proc.name for proc in cluster.processes if proc.proc.poll() is not None]
    assert not dead, f"engine processes dead before the test: {dead}\n{cluster.logs()}"
    yield cluster
    if _test_failed(request):
        print(cluster.logs())
        print(f"==== own postgres (port {own_postgres.port})\n{own_postgres.log()}")
        print(f"==== own redis (port {own_redis.port})\n{own_redis.log()}")


def test_a_redis_restart_under_load_loses_no_accepted_order_and_repeats_no_event(engine, own_redis):
    epochs = "\n".join(p.log_text() for p in engine.processes).count(EPOCH_MADE)
    assert_guarantees(asyncio.run(under_load(engine, restart(own_redis.stop, own_redis.start), 1)))

    def restart_met(logs):
        """the restart met: a worker found the bus's data new again (the epoch made before it is gone)"""
        return "\n".join(logs).count(EPOCH_MADE) > epochs

    logs_show(engine, restart_met)  # its data went with it (nothing persisted): a new epoch after it


def test_redis_down_for_3_s_under_load_answers_submits_503_and_loses_no_accepted_order(engine, own_redis):
    fault = keep_down(own_redis.stop, own_redis.start)
    assert_guarantees(asyncio.run(under_load(engine, fault, OUTAGE_S, refusals="Redis")))


def test_a_postgres_restart_under_load_loses_no_accepted_order_and_executes_none_twice(engine, own_postgres):
    before = [log.count("database unavailable") for log in (w.log_text() for w in engine.workers)]
    assert_guarantees(asyncio.run(under_load(engine, restart(own_postgres.stop, own_postgres.start), 1)))

    def restart_met(logs):
        """the restart met: a worker found its connection gone and made a new one"""
        return any(log.count("database unavailable") > n for log, n in zip(logs[len(engine.webs):], before))

    logs_show(engine, restart_met)


def test_postgres_down_for_3_s_under_load_answers_submits_503_and_loses_no_accepted_order(engine, own_postgres):
    crash = functools.partial(own_postgres.stop, "immediate")  # recovery from the WAL at the next start
    fault = keep_down(crash, own_postgres.start)
    assert_guarantees(asyncio.run(under_load(engine, fault, OUTAGE_S, refusals="Postgres")))
