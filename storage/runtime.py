"""Opening everything a process needs from storage, in one call, from the settings."""
from __future__ import annotations

from dataclasses import dataclass

from config import Settings
from storage.bus import Bus
from storage.database import open_database
from storage.halts import HaltStore
from storage.operators import OperatorStore
from storage.orders import OrderStore
from storage.venues.base import SimulatedChain
from storage.webhooks import WebhookStore
from storage.venues.collar import PriceOracle, SimulatorReferencePrices


@dataclass
class Storage:
    """The database, the order store, the bus and the (simulated) chain of one process."""

    settings: Settings
    db: object
    orders: OrderStore
    bus: Bus
    chain: SimulatedChain
    oracle: PriceOracle = SimulatorReferencePrices()  # reference prices (the simulator's, for now)
    operators: OperatorStore | None = None  # the audit log, managed keys and halts (set by open_storage)
    halts: HaltStore | None = None  # the halts of trading (storage/halts.py)
    webhooks: WebhookStore | None = None  # webhook deliveries and secrets (storage/webhooks.py)

    def __post_init__(self):
        if self.operators is None:
            self.operators = OperatorStore(self.db)
        if self.halts is None:
            self.halts = HaltStore(self.db)
        if self.webhooks is None:
            self.webhooks = WebhookStore(self.db, self.orders.direct, getattr(self.settings, "webhook_secret", ""))

    def close(self) -> None:
        """Close the bus and the database connections."""
        self.bus.close()
        self.orders.close()
        self.chain.close()
        self.db.disconnect()


def open_bus(settings: Settings) -> Bus:
    """Redis when REDIS_URL is set, else the in-process bus (single process only)."""
    if settings.redis_url:
        from storage.bus_redis import RedisBus

        return RedisBus(settings.redis_url, shards=settings.bus_shards)
    from storage.bus_memory import InProcessBus

    return InProcessBus()


def open_storage(settings: Settings, *, migrate: bool = False, bus: Bus | None = None) -> Storage:
    """Bind the database (migrating first if asked), open the bus and the simulated chain."""
    from storage.venues.sim import open_chain

    db, entities = open_database(settings, migrate=migrate)
    chain = open_chain(db, settings)
    return Storage(settings, db, OrderStore(db, entities), bus or open_bus(settings), chain)
