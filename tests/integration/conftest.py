"""Fixtures the integration tests share: an order store on a fresh database, and views of one
bus backend (the in-process bus, or Redis clients on one leased index)."""
from __future__ import annotations

import uuid

import pytest

from storage.bus_memory import InProcessBus
from storage.database import open_database
from storage.orders import OrderStore


@pytest.fixture
def store(database_settings):
    db, entities = open_database(database_settings, migrate=True)
    store = OrderStore(db, entities)
    yield store
    store.close()
    db.disconnect()


@pytest.fixture(scope="session")
def redis_cluster_url():
    """A Redis Cluster of this test session's own (three masters, no replicas: the contract
    tests need no failover); tests keep apart by their key prefixes."""
    from tests.servers import RedisClusterServers

    cluster = RedisClusterServers(masters=3, replicas=0)
    try:
        yield cluster.start().url
    finally:
        cluster.close()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def open_bus(request):
    """Open a view of one shared backend: the same InProcessBus, or a new RedisBus client (on
    one server; or on a Redis Cluster, over three shards)."""
    opened = []
    if request.param == "memory":
        shared = InProcessBus()
        opened.append(shared)

        def factory():
            return shared
    else:
        from storage.bus_redis import RedisBus

        cluster = request.param == "redis-cluster"
        if cluster and request.node.get_closest_marker("one_slot"):
            pytest.skip("one key (one slot) and one script: a cluster runs it as one server does")
        url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        prefix = f"test-{uuid.uuid4().hex[:8]}"

        def factory():
            opened.append(RedisBus(url, prefix=prefix, shards=3 if cluster else 1))
            return opened[-1]
    yield factory
    for bus in opened:
        bus.close()
