"""The simulated chain's entities (tables `sim_*`, created by migration 2)."""
from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from pony.orm import Database, Optional, PrimaryKey, Required

ENTITY_NAMES = ("SimWorld", "SimPool", "SimSwap", "SimLaunch")


def define_sim_entities(db: Database) -> SimpleNamespace:
    """Declare the simulator's entities on `db` (before `generate_mapping`)."""

    class SimWorld(db.Entity):
        _table_ = "sim_world"
        id = PrimaryKey(int)  # always 1: the single row whose insert decides who created the world
        seed = Required(str)  # text: SIM_SEED has no upper bound
        created_at = Required(datetime, precision=6)

    class SimPool(db.Entity):
        _table_ = "sim_pools"
        dex = Required(str)
        token_a = Required(str)
        token_b = Required(str)
        reserve_a = Required(int, size=64)  # de-drifted reserves, base units
        reserve_b = Required(int, size=64)
        fee_bps = Required(int)
        created_at = Required(datetime, precision=6)
        updated_at = Required(datetime, precision=6)
        PrimaryKey(dex, token_a, token_b)

    class SimSwap(db.Entity):
        _table_ = "sim_swaps"
        signature = PrimaryKey(str)
        dex = Required(str)
        order_id = Required(str)
        token_in = Required(str)
        token_out = Required(str)
        amount_in = Required(str)  # exact integer text: a request may exceed BIGINT (u64)
        amount_out = Optional(str, nullable=True)
        status = Required(str)  # confirmed | failed | dropped (timed out, never landed)
        error_code = Optional(str, nullable=True)
        message = Optional(str, nullable=True)
        executed_at = Required(datetime, precision=6)
        hops = Optional(str, nullable=True)  # a route's hops as executed, JSON (migration 13)

    class SimLaunch(db.Entity):
        _table_ = "sim_launches"
        symbol = PrimaryKey(str)
        launch_at = Required(datetime, precision=6)
        scheduled_at = Required(datetime, precision=6)

    return sim_entities(db)


def sim_entities(db: Database) -> SimpleNamespace:
    """The simulator's entities already declared on `db`."""
    return SimpleNamespace(**{name: db.entities[name] for name in ENTITY_NAMES})
