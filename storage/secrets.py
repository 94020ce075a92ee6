"""Secrets every process of one engine shares, kept in its database.

The owner id of an API key is an HMAC of the key under a server secret, so that a copy of
the database (the owner ids of every order) does not let anyone guess a short key offline.
Every web process must derive the same ids: the secret lives in the database, created by
the first process that needs it (a race between two is settled by the primary key).
"""
from __future__ import annotations

import secrets

from pony.orm import db_session

from storage.errors import translating_db_errors

OWNER_IDS = "owner_ids"


@translating_db_errors
def shared_secret(db, name: str = OWNER_IDS) -> bytes:
    """The secret `name` (32 random bytes), created if this database has none yet."""
    with db_session:
        db.execute("INSERT INTO engine_secrets (name, value) VALUES ($name, $value) ON CONFLICT (name) DO NOTHING",
                   {"name": name, "value": secrets.token_hex(32)})
    with db_session:
        (value,) = db.select("SELECT value FROM engine_secrets WHERE name = $name", {"name": name})
    return bytes.fromhex(value)
