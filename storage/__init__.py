"""Everything that talks to the database and the bus (Postgres/SQLite, Redis or in-process).

Entities never leave this package: callers get plain records from `storage.records`.
"""
from storage.errors import (
    BusError,
    ClientOrderIdConflict,
    OrderNotFound,
    SchemaNotMigrated,
    StorageError,
)

__all__ = [
    "BusError",
    "ClientOrderIdConflict",
    "OrderNotFound",
    "SchemaNotMigrated",
    "StorageError",
]
