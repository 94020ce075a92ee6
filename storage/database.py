"""Binding Pony to SQLite (embedded default) or Postgres, and the engine's entities."""
from __future__ import annotations

import logging
from datetime import datetime
from types import SimpleNamespace
from uuid import UUID

from pony.orm import Database, Json, Optional, PrimaryKey, Required, Set, composite_key

from config import Settings
from storage import migrations
from storage.errors import SchemaNotMigrated, translating_db_errors
from storage.venues.sim.schema import define_sim_entities

log = logging.getLogger(__name__)


def define_entities(db: Database) -> SimpleNamespace:
    """Declare the engine's entities on `db` (a function, so one process can use several databases)."""

    class Order(db.Entity):
        _table_ = "orders"
        id = PrimaryKey(UUID)
        owner = Optional(str, default="", autostrip=False)  # "" until API keys exist
        client_order_id = Optional(str, nullable=True, autostrip=False)
        type = Required(str)
        token_in = Required(str)
        token_out = Required(str)
        amount = Required(str)  # exact decimal text: SQLite would round a numeric to a float
        slippage_bps = Required(int)
        limit_price = Optional(str, nullable=True)
        stop_price = Optional(str, nullable=True)
        stop_limit_price = Optional(str, nullable=True)  # stop-limit: the floor once the stop fired
        trail_percent = Optional(str, nullable=True)  # trailing_stop: its distance below the best price
        trail_amount = Optional(str, nullable=True)  # trailing_stop: that distance in price instead (trailAmount)
        expires_in_seconds = Optional(int, nullable=True)
        expires_at = Optional(datetime, precision=6, nullable=True)  # created_at + expires_in_seconds
        status = Required(str)
        attempt = Required(int)
        attempts = Required(int)
        last_seq = Required(int)
        job_id = Optional(str, nullable=True)  # the bus job that owns the execution
        worker = Optional(str, nullable=True)  # the consumer (worker) that claimed that job
        fence = Required(int, default=0)  # raised by every claim: only its holder may act
        route = Optional(Json, nullable=True)
        fills = Optional(Json)
        error = Optional(Json, nullable=True)
        callback_url = Optional(str, nullable=True)  # webhooks (storage/webhooks.py)
        parent_id = Optional(UUID, nullable=True)  # a child's parent (twap, dca; migration 12)
        slice_index = Optional(int, nullable=True)  # a child's place in its parent's schedule
        schedule = Optional(str, nullable=True)  # a parent's schedule, JSON text
        paused = Required(int, default=0)  # a dca parent paused by its owner
        created_at = Required(datetime, precision=6)
        updated_at = Required(datetime, precision=6)
        events = Set("OrderEvent")
        composite_key(owner, client_order_id)

    class OrderEvent(db.Entity):
        _table_ = "order_events"
        order = Required(Order, column="order_id")
        seq = Required(int)
        status = Required(str)
        attempt = Required(int)
        created_at = Required(datetime, precision=6)
        meta = Required(Json)
        order_created_at = Optional(datetime, precision=6)  # its order's: the partition (migration 9)
        PrimaryKey(order, seq)

    return SimpleNamespace(Order=Order, OrderEvent=OrderEvent)


def bind(settings: Settings) -> Database:
    """A Pony Database bound to the configured server or the embedded SQLite file."""
    db = Database()
    if settings.database_url:
        db.bind(provider="postgres", dsn=settings.database_url)
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

        # Registered before bind: bind opens this thread's connection, and Pony runs the
        # hook only for connections opened after it was registered.
        @db.on_connect(provider="sqlite")
        def _sqlite_pragmas(db, connection):
            # WAL lets the web threads read while the worker commits. It persists in the file,
            # and switching to it fails at once ("database is locked", busy_timeout or not)
            # while another connection writes: only switch when the file is not in WAL yet.
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")

        db.bind(provider="sqlite", filename=str(settings.sqlite_path.resolve()), create_db=True)

    return db


@translating_db_errors
def open_database(settings: Settings, *, migrate: bool = False) -> tuple[Database, SimpleNamespace]:
    """Bind, optionally migrate, map the entities; raise SchemaNotMigrated if the schema is behind.

    The namespace returned holds the engine's entities and the simulator's (`SimPool`, ...).
    """
    db = bind(settings)
    if migrate:
        migrations.migrate(db)
    missing = migrations.pending_versions(db)
    if missing:
        raise SchemaNotMigrated(
            f"the database schema lacks migrations {missing}: run `engine migrate` first"
        )
    entities = define_entities(db)
    # The simulated chain's tables live in the same database (it is "the chain" of this deployment).
    entities.__dict__.update(vars(define_sim_entities(db)))
    db.generate_mapping(create_tables=False, check_tables=True)
    return db, entities
