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


@pytest.fixture(params=["memory", "redis"])
def open_bus(request):
    """Open a view of one shared backend: the same InProcessBus, or a new RedisBus client."""
    opened = []
    if request.param == "memory":
        shared = InProcessBus()
        opened.append(shared)

        def factory():
            return shared
    else:
        from storage.bus_redis import RedisBus

        url = request.getfixturevalue("redis_url")
        prefix = f"test-{uuid.uuid4().hex[:8]}"

        def factory():
            opened.append(RedisBus(url, prefix=prefix))
            return opened[-1]
    yield factory
    for bus in opened:
        bus.close()
