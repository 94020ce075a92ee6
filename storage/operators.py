"""What operators do, kept in the database: the audit log of their actions (and, beside it in
this module, the trading keys they manage and the halts they set).

Every call opens its own short transaction; records handed out are plain dicts in the API's
shape (camelCase, ISO timestamps), so nothing of Pony leaves `storage`.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pony.orm import db_session

from storage import codec
from storage.errors import translating_db_errors
from storage.records import iso, utcnow

AUDIT_PAGE_MAX = 500


def read_ts(value) -> datetime:
    """A timestamp column as read back: a datetime from Postgres, text from SQLite."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


class OperatorStore:
    """The audit log, the managed trading keys (and the halts) of one database."""

    def __init__(self, db):
        self.db = db

    @translating_db_errors
    def record(self, actor: str, action: str, target: str, request: dict, status: int, answer: Any) -> None:
        """Append one operator action to the audit log: who (the operator key's id), what,
        on what, with which request, and what the engine answered (status and body)."""
        with db_session:
            self.db.execute(
                "INSERT INTO audit_log (at, actor, action, target, request, status, answer)"
                " VALUES ($at, $actor, $action, $target, $request, $status, $answer)",
                {"at": utcnow(), "actor": actor, "action": action, "target": target,
                 "request": codec.dumps_text(request), "status": status, "answer": codec.dumps_text(answer)})

    @translating_db_errors
    def audit(self, limit: int = 100, before: int | None = None) -> list[dict]:
        """The newest entries first, at most `limit`, older than the entry `before` if given."""
        limit = max(1, min(limit, AUDIT_PAGE_MAX))
        with db_session:
            if before is None:
                rows = self.db.select("SELECT id, at, actor, action, target, request, status, answer FROM audit_log"
                                      " ORDER BY id DESC LIMIT $limit", {"limit": limit})
            else:
                rows = self.db.select("SELECT id, at, actor, action, target, request, status, answer FROM audit_log"
                                      " WHERE id < $before ORDER BY id DESC LIMIT $limit",
                                      {"before": before, "limit": limit})
        return [{"id": row[0], "at": iso(read_ts(row[1])), "actor": row[2], "action": row[3], "target": row[4],
                 "request": json.loads(row[5]), "status": row[6], "answer": json.loads(row[7])} for row in rows]

    # ---- managed trading keys -------------------------------------------------------------
    # A key is stored as the SHA-256 digest (hex) the web layer computes, never in clear; its
    # id and owner are public ids. Revoking keeps the row (who revoked it, when): it is what
    # the key list and the audit log point at.

    @translating_db_errors
    def create_key(self, key_id: str, digest: str, owner: str, label: str, limits: dict,
                   created_by: str, callback_url: str | None = None) -> dict:
        """Store a new managed key (its digest only); its record as `keys` lists it."""
        with db_session:
            self.db.execute(
                "INSERT INTO api_keys (key_id, digest, owner, label, limits, created_at, created_by, callback_url)"
                " VALUES ($key_id, $digest, $owner, $label, $limits, $at, $by, $callback_url)",
                {"key_id": key_id, "digest": digest, "owner": owner, "label": label,
                 "limits": codec.dumps_text(limits), "at": utcnow(), "by": created_by,
                 "callback_url": callback_url})
        return self.key(key_id)

    @translating_db_errors
    def keys(self) -> list[dict]:
        """Every managed key, revoked ones included, oldest first."""
        with db_session:
            rows = self.db.select(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
        return [_key_record(row) for row in rows]

    @translating_db_errors
    def key(self, key_id: str) -> dict | None:
        """One managed key's record, or None."""
        with db_session:
            rows = self.db.select(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $key_id",
                                  {"key_id": key_id})
        return _key_record(rows[0]) if rows else None

    @translating_db_errors
    def revoke_key(self, key_id: str, revoked_by: str) -> dict | None:
        """Revoke a managed key (a revoked one stays as first revoked); its record, or None."""
        with db_session:
            self.db.execute("UPDATE api_keys SET revoked_at = $at, revoked_by = $by"
                            " WHERE key_id = $key_id AND revoked_at IS NULL",
                            {"at": utcnow(), "by": revoked_by, "key_id": key_id})
        return self.key(key_id)

    @translating_db_errors
    def live_keys_by_digest(self, digests: list[str]) -> dict[str, tuple[str, str]]:
        """Of these digests, those of keys not revoked: digest -> (key id, owner). One
        indexed query (the web's key lookups of one loop turn share it)."""
        if not digests:
            return {}
        names = {f"d{n}": digest for n, digest in enumerate(digests)}
        with db_session:
            rows = self.db.select("SELECT digest, key_id, owner FROM api_keys WHERE revoked_at IS NULL"
                                  f" AND digest IN ({', '.join('$' + name for name in names)})", names)
        return {row[0]: (row[1], row[2]) for row in rows}

    @translating_db_errors
    def revoked_among(self, key_ids: list[str]) -> set[str]:
        """Which of these managed key ids are revoked (or gone)."""
        if not key_ids:
            return set()
        names = {f"k{n}": key_id for n, key_id in enumerate(key_ids)}
        with db_session:
            rows = self.db.select("SELECT key_id FROM api_keys WHERE revoked_at IS NULL"
                                  f" AND key_id IN ({', '.join('$' + name for name in names)})", names)
        return set(key_ids) - {row[0] for row in rows}

    @translating_db_errors
    def has_keys(self) -> bool:
        """Whether any managed key was ever created (authentication stays on if so)."""
        with db_session:
            return bool(self.db.select("SELECT 1 FROM api_keys LIMIT 1"))

    @translating_db_errors
    def limits_of(self, owner: str) -> dict:
        """The risk limits of an owner: those of its most recently created key that is not
        revoked ({} when it has none: no limits). Keys of one owner share its orders, so they
        share one set of limits; a rotation's new key brings the limits that apply from then."""
        with db_session:
            rows = self.db.select("SELECT limits FROM api_keys WHERE owner = $owner AND revoked_at IS NULL"
                                  " ORDER BY created_at DESC, key_id DESC LIMIT 1", {"owner": owner})
        return json.loads(rows[0]) if rows else {}

    @translating_db_errors
    def callback_url_of(self, owner: str) -> str | None:
        """The default callbackUrl of an owner's orders: that of its most recently created key
        not revoked (None when it names none), as for its limits."""
        with db_session:
            rows = self.db.select("SELECT callback_url FROM api_keys WHERE owner = $owner AND revoked_at IS NULL"
                                  " ORDER BY created_at DESC, key_id DESC LIMIT 1", {"owner": owner})
        return rows[0] if rows else None

    @translating_db_errors
    def open_orders_of(self, owner: str) -> list[tuple[str, str]]:
        """(order id, status) of the owner's orders not in a terminal status, oldest first."""
        with db_session:
            rows = self.db.select(
                "SELECT id, status FROM orders WHERE owner = $owner"
                " AND status IN ('pending', 'scheduled', 'waiting', 'routing', 'building', 'submitted')"
                " ORDER BY created_at, id", {"owner": owner})
        return [(str(_uuid(row[0])), row[1]) for row in rows]


def _uuid(value) -> uuid.UUID:
    """An order id as read back: a UUID from Postgres, 16 bytes from SQLite (as Pony writes it)."""
    if isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(bytes=bytes(value)) if isinstance(value, (bytes, memoryview)) else uuid.UUID(str(value))


_KEY_COLUMNS = "key_id, owner, label, limits, created_at, created_by, revoked_at, revoked_by, callback_url"


def _key_record(row) -> dict:
    return {"keyId": row[0], "owner": row[1], "label": row[2], "limits": json.loads(row[3]),
            "createdAt": iso(read_ts(row[4])), "createdBy": row[5],
            "revokedAt": iso(read_ts(row[6])) if row[6] is not None else None, "revokedBy": row[7],
            "callbackUrl": row[8], "source": "managed"}
