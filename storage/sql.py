"""Plain SQL for Postgres and SQLite alike: what differs between them."""
from __future__ import annotations

import sqlite3
from datetime import datetime
from uuid import UUID

import psycopg2

from storage import codec

IntegrityErrors = (psycopg2.IntegrityError, sqlite3.IntegrityError)


class Dialect:
    """Postgres or SQLite, as far as raw SQL needs to know."""

    def __init__(self, postgres: bool):
        self.postgres = postgres
        self.ph = "%s" if self.postgres else "?"

    @classmethod
    def of(cls, db) -> "Dialect":
        """The dialect of a bound Pony database."""
        return cls(db.provider.dialect.lower().startswith("postgres"))

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
        return None if value is None else codec.dumps_text(value)

    @staticmethod
    def read_json(value):
        return codec.loads(value) if isinstance(value, (str, bytes)) else value

    def placeholders(self, n: int) -> str:
        return ", ".join([self.ph] * n)

    @staticmethod
    def values(cursor, template: str, rows) -> bytes:
        """Postgres: `rows` rendered through `template` as the body of a VALUES list, so that a
        batch of any size is one statement (what psycopg2's execute_values does, but joinable
        with other statements into one round trip)."""
        return b",".join(cursor.mogrify(template, row) for row in rows)
