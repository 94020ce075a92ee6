"""Plain SQL on Pony's own connection, for Postgres and SQLite alike: what differs between them."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from uuid import UUID

import psycopg2

IntegrityErrors = (psycopg2.IntegrityError, sqlite3.IntegrityError)


class Dialect:
    """Postgres or SQLite, as far as raw SQL on Pony's connection needs to know."""

    def __init__(self, db):
        self.postgres = db.provider.dialect.lower().startswith("postgres")
        self.ph = "%s" if self.postgres else "?"

    def uuid(self, value: UUID):
        return value if self.postgres else value.bytes  # Pony keeps SQLite UUIDs as 16-byte blobs

    def read_uuid(self, value) -> UUID:
        return value if isinstance(value, UUID) else UUID(bytes=bytes(value)) if isinstance(value, (bytes, memoryview)) else UUID(str(value))

    def ts(self, value: datetime):
        return value if self.postgres else value.strftime("%Y-%m-%d %H:%M:%S.%f")

    def read_ts(self, value) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)

    @staticmethod
    def json(value) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    @staticmethod
    def read_json(value):
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def placeholders(self, n: int) -> str:
        return ", ".join([self.ph] * n)
