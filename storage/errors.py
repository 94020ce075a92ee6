"""The storage package's exceptions: one root, specific subclasses."""


class StorageError(Exception):
    """Root of every error raised by `storage`."""


class SchemaNotMigrated(StorageError):
    """The database lacks migrations; run `engine migrate`."""


class OrderNotFound(StorageError):
    """No such order (of this owner)."""


class ClientOrderIdConflict(StorageError):
    """The clientOrderId is taken by a different order of the same owner."""

    def __init__(self, existing):
        super().__init__("clientOrderId is already used by a different order")
        self.existing = existing


class BusError(StorageError):
    """The job/event bus cannot be reached or refused an operation."""


class QueueFull(BusError):
    """More orders wait to start than QUEUE_MAX_DEPTH allows."""
