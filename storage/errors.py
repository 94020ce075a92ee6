"""The storage package's exceptions: one root, specific subclasses."""


class StorageError(Exception):
    """Root of every error raised by `storage`."""


class SchemaNotMigrated(StorageError):
    """The database lacks migrations; run `engine migrate`."""


class OrderNotFound(StorageError):
    """No such order (of this owner)."""


class OrderArchived(OrderNotFound):
    """The order left the hot tables for an archive (storage/retention.py): `archive` names it.
    A subclass of OrderNotFound, so whatever treats a missing order as missing still does."""

    def __init__(self, order_id, archive: str):
        super().__init__(f"order {order_id} was archived in {archive}")
        self.order_id = order_id
        self.archive = archive


class ClientOrderIdConflict(StorageError):
    """The clientOrderId is taken by a different order of the same owner."""

    def __init__(self, existing):
        super().__init__("clientOrderId is already used by a different order")
        self.existing = existing


class FencedOut(StorageError):
    """The order was claimed again since this holder claimed it: the holder must stop acting
    for it (its appends and its swaps are refused)."""


class BusError(StorageError):
    """The job/event bus cannot be reached or refused an operation."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (down, restarting, out of connections)."""


def _unavailable_types():
    import sqlite3

    import psycopg2
    from pony.orm import InterfaceError, OperationalError

    return (OperationalError, InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError,
            sqlite3.OperationalError)


def translating_db_errors(fn):
    """Turn a driver's "cannot reach the database" into StorageUnavailable, so callers
    (the web's one error mapping, the actors' retries) never see driver classes."""
    import functools

    unavailable = _unavailable_types()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except unavailable as exc:
            raise StorageUnavailable(f"database unavailable: {exc}") from exc

    return wrapper
