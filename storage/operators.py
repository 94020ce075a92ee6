"""What operators do, kept in the database: the audit log of their actions (and, beside it in
this module, the trading keys they manage and the halts they set).

Every call opens its own short transaction; records handed out are plain dicts in the API's
shape (camelCase, ISO timestamps), so nothing of Pony leaves `storage`.
"""
from __future__ import annotations

import json
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
    """The audit log (and the operators' keys and halts) of one database."""

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
