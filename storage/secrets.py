"""Secrets every process of one engine shares, kept in its database.

The owner id of an API key is an HMAC of the key under a server secret. The operator's
KEY_ID_SECRET (kept off the database) is that secret where it is set; without it, this one
serves, so that every web process still derives the same ids: created by the first process
that needs it (a race between two is settled by the primary key). A copy of the whole
database holds this secret too: KEY_ID_SECRET is what keeps ids from being reversed.
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
