"""Halts of trading (the kill switch): what operators halted, kept in the database, and the
rule of what a set of halts covers.

A halt has a scope: `all` (every order), `key` (the orders of one owner: a key's orders are
stored under its owner id, so the web resolves the key to its owner when the halt is made and
the halt stores that owner as its target, the key id beside it), or `pair` (both directions of
a pair of tokens, stored as `A/B` in the token list's order). At most one halt is active per
scope and target (the table's unique index); a resumed halt stays in the table as history.

`HaltSet` is the immutable set of active halts a process checks orders against: an empty set
answers at once, so checking costs the submit path nothing measurable.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pony.orm import db_session
from pony.orm.dbapiprovider import IntegrityError

from config import TOKENS
from storage.errors import translating_db_errors
from storage.records import iso, utcnow

SCOPES = ("all", "key", "pair")
_ORDER = {token.symbol: i for i, token in enumerate(TOKENS)}


def pair_target(symbol_a: str, symbol_b: str) -> str:
    """The stored name of a pair, the same for both directions: `SOL/USDC` for USDC/SOL too."""
    first, second = sorted((symbol_a, symbol_b), key=lambda s: (_ORDER.get(s, len(_ORDER)), s))
    return f"{first}/{second}"


def _ts(value) -> datetime | None:
    """A timestamp column as read back: a datetime from Postgres, text from SQLite."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Halt:
    """One halt: its scope and target (the owner of a key halt, `A/B` of a pair halt, `""`)."""

    id: str
    scope: str
    target: str
    key_id: str | None
    reason: str
    created_at: datetime
    created_by: str
    resumed_at: datetime | None = None
    resumed_by: str | None = None

    def describe(self) -> str:
        """What it halts, in words."""
        if self.scope == "key":
            return f"trading of key {self.key_id}"
        if self.scope == "pair":
            return f"trading of {self.target} (both directions)"
        return "all trading"

    def to_api(self) -> dict[str, Any]:
        """The halt as `/api/admin/halt[s]` answer it."""
        body: dict[str, Any] = {"id": self.id, "scope": self.scope}
        if self.scope == "key":
            body["keyId"] = self.key_id
        elif self.scope == "pair":
            body["pair"] = self.target
        body.update({"reason": self.reason, "createdAt": iso(self.created_at), "createdBy": self.created_by})
        if self.resumed_at is not None:
            body.update({"resumedAt": iso(self.resumed_at), "resumedBy": self.resumed_by})
        return body


@dataclass(frozen=True)
class HaltSet:
    """The active halts, indexed for `covering` (immutable: swapped whole when halts change)."""

    halts: tuple[Halt, ...] = ()
    everything: Halt | None = field(default=None, compare=False)
    owners: dict[str, Halt] = field(default_factory=dict, compare=False)
    pairs: dict[frozenset, Halt] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, halts) -> HaltSet:
        """Index these active halts."""
        halts = tuple(sorted(halts, key=lambda h: (h.created_at, h.id)))
        everything = next((h for h in halts if h.scope == "all"), None)
        owners = {h.target: h for h in halts if h.scope == "key"}
        pairs = {frozenset(h.target.split("/")): h for h in halts if h.scope == "pair"}
        return cls(halts, everything, owners, pairs)

    def __bool__(self) -> bool:
        return bool(self.halts)

    def covering(self, owner: str, token_in: str, token_out: str) -> Halt | None:
        """The halt that stops an order of `owner` selling `token_in` for `token_out` (symbols),
        or None. The whole cost when nothing is halted: one truth test."""
        if not self.halts:
            return None
        if self.everything is not None:
            return self.everything
        return self.owners.get(owner) or self.pairs.get(frozenset((token_in, token_out)))


NOTHING_HALTED = HaltSet()

_COLUMNS = "id, scope, target, key_id, reason, created_at, created_by, resumed_at, resumed_by"


def _halt(row) -> Halt:
    return Halt(row[0], row[1], row[2], row[3], row[4], _ts(row[5]), row[6], _ts(row[7]), row[8])


class HaltStore:
    """The `halts` table of one database (each call its own short transaction)."""

    def __init__(self, db):
        self.db = db

    @translating_db_errors
    def halt(self, scope: str, target: str, key_id: str | None, reason: str, actor: str) -> tuple[Halt, bool]:
        """Halt `scope`/`target` unless it is halted already: (the active halt, whether this call
        made it). Racing halts of the same target make one (the unique index decides)."""
        for _ in range(3):
            existing = self._active_one(scope, target)
            if existing is not None:
                return existing, False
            new = Halt(uuid.uuid4().hex, scope, target, key_id, reason, utcnow(), actor)
            try:
                with db_session:
                    self.db.execute(
                        "INSERT INTO halts (id, scope, target, key_id, reason, created_at, created_by)"
                        " VALUES ($id, $scope, $target, $key_id, $reason, $at, $actor)",
                        {"id": new.id, "scope": scope, "target": target, "key_id": key_id, "reason": reason,
                         "at": new.created_at, "actor": actor})
                return new, True
            except IntegrityError:  # the unique index: a racing halt of the same target won
                continue
        raise RuntimeError(f"halt {scope} {target}: could not insert or read it")

    @translating_db_errors
    def resume(self, scope: str, target: str, actor: str) -> Halt | None:
        """End the active halt of `scope`/`target`: the halt as ended, or None if none was active."""
        with db_session:
            rows = self.db.select(f"SELECT {_COLUMNS} FROM halts WHERE scope = $scope AND target = $target"
                                  " AND resumed_at IS NULL", {"scope": scope, "target": target})
            if not rows:
                return None
            halt = _halt(rows[0])
            now = utcnow()
            self.db.execute("UPDATE halts SET resumed_at = $at, resumed_by = $actor WHERE id = $id"
                            " AND resumed_at IS NULL", {"at": now, "actor": actor, "id": halt.id})
        return Halt(**{**halt.__dict__, "resumed_at": now, "resumed_by": actor})

    @translating_db_errors
    def active(self) -> list[Halt]:
        """Every active halt, oldest first."""
        with db_session:
            rows = self.db.select(f"SELECT {_COLUMNS} FROM halts WHERE resumed_at IS NULL"
                                  " ORDER BY created_at, id")
        return [_halt(row) for row in rows]

    def _active_one(self, scope: str, target: str) -> Halt | None:
        with db_session:
            rows = self.db.select(f"SELECT {_COLUMNS} FROM halts WHERE scope = $scope AND target = $target"
                                  " AND resumed_at IS NULL", {"scope": scope, "target": target})
        return _halt(rows[0]) if rows else None
