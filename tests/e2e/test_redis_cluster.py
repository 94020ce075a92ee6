"""The production topology on a Redis Cluster of this module's own (three masters, three
replicas, on free ports; never the shared server), and a master killed under load.

`engine web` + two `engine worker` processes with `REDIS_URL=redis+cluster://...` and six bus
shards (two a master): 12 orders each followed by a WebSocket listener, then SIGKILL to the
master of a shard's slot once the first three orders confirmed. Its replica takes over after
the cluster's node timeout (NODE_TIMEOUT_MS); meanwhile that shard's jobs, events and rate
windows are unreachable, and writes the master acknowledged but had not yet sent to its replica
are lost (replication is asynchronous): a job's XADD, an XACK, a delivery. What the
single-server fault tests prove must hold all the same (tests/e2e/test_outages.py's checks):
every accepted order terminal (confirmed), none executed twice, every stream seq 1..n exactly
once, every submit answered within a bound.
"""
from __future__ import annotations

import asyncio
import shutil

import pytest

from storage.bus_redis_layout import Layout
from tests.conftest import not_installed
from tests.e2e.cluster import FAST_FAILOVER
from tests.e2e.conftest import _clusters
from tests.e2e.test_outages import ENV, _blocking, assert_guarantees, under_load
from tests.servers import RedisClusterServers

pytestmark = pytest.mark.e2e

NODE_TIMEOUT_MS = 1000  # a master silent this long is failed over to its replica
SHARDS = 6
# A lost job (its XADD never reached the replica) is queued again by the reconciler: passes every
# 2 s for orders at least 2 s old, so a loss costs seconds, not the production 20.
RECONCILE = {"RECONCILE_EVERY_SECONDS": "2", "RECONCILE_MIN_AGE_SECONDS": "2"}


@pytest.fixture(scope="module")
def redis_cluster():
    """Three masters and three replicas, started once for the module, stopped by pid at its end."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        not_installed("redis-server and redis-cli are needed for a Redis Cluster", "they come with the Redis server")
    servers = RedisClusterServers(masters=3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS)
    try:
        yield servers.start()
    finally:
        servers.close()


@pytest.fixture
def make_cluster_on_redis_cluster(postgres_url, redis_cluster, tmp_path, request):
    """`make_cluster` with REDIS_URL naming the module's Redis Cluster."""
    yield from _clusters(postgres_url, redis_cluster.url, tmp_path, request)


def kill_master(redis_cluster: RedisClusterServers, key: str):
    """The fault: SIGKILL the master serving `key`, then wait until its replica has taken over
    and every surviving node says the cluster is ok."""
    async def fault():
        victim = await _blocking(redis_cluster.master_of, key)
        await _blocking(victim.kill)
        await _blocking(redis_cluster.wait_failed_over, victim)
    return fault


def test_a_redis_cluster_master_killed_under_load_loses_no_accepted_order_and_runs_none_twice(
        make_cluster_on_redis_cluster, redis_cluster):
    cluster = make_cluster_on_redis_cluster(workers=2, BUS_SHARDS=SHARDS, **ENV, **FAST_FAILOVER, **RECONCILE)
    shard_zero = Layout("engine", SHARDS, cluster=True).streams[0]
    assert_guarantees(asyncio.run(under_load(cluster, kill_master(redis_cluster, shard_zero), 3)))
    assert redis_cluster.master_of(shard_zero).running, "no replica took over the killed master's slots"
