"""The order store: creates orders, appends status events under the status rules, reads history."""
from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Iterable, NamedTuple
from uuid import UUID

from pony.orm import db_session
from pony.orm.ormtypes import TrackedValue

from storage import count_sql, order_sql, retention, risk_sql, schedule_sql
from storage.direct import DirectConnections
from storage.errors import (ClientOrderIdConflict, OrderArchived, OrderNotFound, StorageError, StorageUnavailable,
                            translating_db_errors)
from storage.records import EventDraft, EventRecord, OrderDraft, OrderRecord, decimal_str, utcnow
from storage.risk import RiskLimitExceeded, RiskTicket
from storage.status import TERMINAL, StatusRuleError

log = logging.getLogger(__name__)


class BadCursor(ValueError):
    """A list cursor that this store did not hand out."""


def _entity_row(o) -> tuple:
    """A Pony `Order` as a row of order_sql.ORDER_FIELDS, for `order_sql.order_from_row`; its Json
    values as plain dicts and lists (a record holds nothing of Pony's)."""
    return tuple(v.get_untracked() if isinstance(v, TrackedValue) else v
                 for v in (getattr(o, name) for name in order_sql.ORDER_FIELDS))


class Created(NamedTuple):
    """The outcome of a submit that stored (or found) an order."""

    order: OrderRecord
    pending: EventRecord | None  # the `pending` event, when this call created the order
    created: bool


def _order_row(draft: OrderDraft, now: datetime) -> dict:
    return {
        "id": uuid.uuid4(), "owner": draft.owner, "client_order_id": draft.client_order_id,
        "type": draft.type, "token_in": draft.token_in, "token_out": draft.token_out,
        "amount": decimal_str(draft.amount), "slippage_bps": draft.slippage_bps,
        "limit_price": decimal_str(draft.limit_price) if draft.limit_price is not None else None,
        "expires_in_seconds": draft.expires_in_seconds, "created_at": now, "callback_url": draft.callback_url,
        "stop_price": decimal_str(draft.stop_price) if draft.stop_price is not None else None,
        "stop_limit_price": decimal_str(draft.stop_limit_price) if draft.stop_limit_price is not None else None,
        "trail_percent": decimal_str(draft.trail_percent) if draft.trail_percent is not None else None,
        "trail_amount": decimal_str(draft.trail_amount) if draft.trail_amount is not None else None,
        "parent_id": draft.parent_id, "slice_index": draft.slice_index, "schedule": draft.schedule,
    }


def _new_order(row: dict, draft: OrderDraft) -> OrderRecord:
    now = row["created_at"]
    return OrderRecord(
        id=row["id"], owner=draft.owner, status="pending", type=draft.type, token_in=draft.token_in,
        token_out=draft.token_out, amount=Decimal(row["amount"]), slippage_bps=draft.slippage_bps,
        limit_price=draft.limit_price, expires_in_seconds=draft.expires_in_seconds,
        client_order_id=draft.client_order_id, created_at=now, updated_at=now, attempts=0, attempt=1,
        last_seq=1, route=None, fills=[], error=None, callback_url=draft.callback_url,
        stop_price=draft.stop_price, stop_limit_price=draft.stop_limit_price, trail_percent=draft.trail_percent,
        trail_amount=draft.trail_amount, parent_id=draft.parent_id, slice_index=draft.slice_index,
        schedule=draft.schedule)


# A keyset cursor for newest-first paging: the last row's created_at (microseconds since the
# epoch, naive UTC) and id. Opaque to clients, but every string of this form is a position
# in the keyset, so the OpenAPI document can say exactly which cursors are valid.
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(created_at: datetime, order_id: UUID) -> str:
    """The cursor after the row (created_at, order_id)."""
    return f"{(created_at - _EPOCH) // _MICROSECOND}-{order_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Inverse of `encode_cursor`; BadCursor for anything not of its form."""
    if not _CURSOR.fullmatch(cursor):
        raise BadCursor("cursor is not one this server handed out")
    micros, _, hex_id = cursor.partition("-")
    return _EPOCH + int(micros) * _MICROSECOND, UUID(hex=hex_id)


class OrderStore:
    """Orders and their events on one Pony database; every method is its own transaction.

    The hot paths (intake, appends, claims, event reads) take whole batches and run on a
    direct connection of the calling thread (`storage.direct`); the rest goes through Pony.
    """

    def __init__(self, db, entities):
        self.db = db
        self.Order = entities.Order
        self.OrderEvent = entities.OrderEvent
        self.direct = DirectConnections(db)
        self.dialect = self.direct.dialect

    def _record(self, o, events=None) -> OrderRecord:
        """The record of a Pony `Order` (inside its db_session), mapped as a plain-SQL row is."""
        return order_sql.order_from_row(self.dialect, _entity_row(o), events)

    # ---- writes -------------------------------------------------------------------------

    @translating_db_errors
    def create_orders(self, drafts: list[OrderDraft],
                      tickets: list[RiskTicket | None] | None = None) -> list[Created | StorageError]:
        """Store new orders with their `pending` events in one transaction (group commit).

        Per draft: Created(order, pending_event, created=True), or, when its clientOrderId
        names an order of the same owner already, Created(that order, None, False) if it
        means the same order, else ClientOrderIdConflict. Racing repeats create one order.
        A draft with a `tickets` entry (its owner has kept risk limits) is decided under its
        owner's lock in the same transaction: RiskLimitExceeded when refused (nothing stored).
        """
        now = utcnow()
        rows = [_order_row(draft, now) for draft in drafts]
        refused: dict[int, RiskLimitExceeded | StorageError]
        try:
            if tickets is not None and any(t is not None for t in tickets):
                inserted, refused = order_sql.insert_within_limits(self.direct.get(), rows, tickets, now)
            else:  # no limit kept for anyone here: one statement (no clientOrderId), or three
                inserted, refused = order_sql.insert_orders(self.direct.get(), rows), {}
        except order_sql.ArchivedMeanwhile as archived:
            # A repeat of an archived order's clientOrderId: never a second order. Rolled back
            # whole; the rest of the batch is stored again without those drafts.
            return self._without_archived(drafts, tickets, archived.found)
        results: list[Created | StorageError] = []
        for i, (draft, row) in enumerate(zip(drafts, rows)):
            if i in refused:
                results.append(refused[i])
                continue
            if row["id"] in inserted:
                order = _new_order(row, draft)
                results.append(Created(order, EventRecord(order.id, 1, "pending", 1, now, {}, draft.owner), True))
                continue
            existing = self._find_by_client_id(draft.owner, draft.client_order_id)
            if existing is None:  # the row it conflicted with is gone: archived since, or retry
                found = retention.archived_client_ids(self.direct.get(), [(draft.owner, draft.client_order_id)])
                results.append(OrderArchived(*found[(draft.owner, draft.client_order_id)]) if found
                               else StorageUnavailable("the order could not be stored; retry"))
            elif draft.same_order_as(existing):
                results.append(Created(existing, None, False))
            else:
                results.append(ClientOrderIdConflict(existing))
        return results

    def _without_archived(self, drafts: list[OrderDraft], tickets: list[RiskTicket | None] | None,
                          found: dict[tuple[str, str], tuple]) -> list[Created | StorageError]:
        """`create_orders` for a batch some of whose clientOrderIds name archived orders of their
        owners (`found`): OrderArchived for those, the others stored again."""
        refused = {i: OrderArchived(*found[(d.owner, d.client_order_id)]) for i, d in enumerate(drafts)
                   if (d.owner, d.client_order_id) in found}
        drafts_left = [draft for i, draft in enumerate(drafts) if i not in refused]
        tickets = None if tickets is None else [t for i, t in enumerate(tickets) if i not in refused]
        results = iter(self.create_orders(drafts_left, tickets) if drafts_left else [])
        return [refused[i] if i in refused else next(results) for i in range(len(drafts))]

    def create_order(self, draft: OrderDraft) -> Created:
        """`create_orders` for one draft; raises its error."""
        (result,) = self.create_orders([draft])
        if isinstance(result, Exception):
            raise result
        return result

    @translating_db_errors
    def find_by_client_id(self, owner: str, client_order_id: str) -> OrderRecord | None:
        """The owner's order stored under this clientOrderId, if there is one."""
        return self._find_by_client_id(owner, client_order_id)

    @db_session
    def _find_by_client_id(self, owner: str, client_order_id: str | None) -> OrderRecord | None:
        if client_order_id is None:
            return None
        o = self.Order.get(owner=owner, client_order_id=client_order_id)
        return self._record(o) if o else None

    @translating_db_errors
    def append_events(self, drafts: Iterable[EventDraft]) -> list[EventRecord | StatusRuleError]:
        """Append events in one transaction; each is checked against the status rules first.

        A draft that breaks a rule is not stored: its slot in the result holds the error.
        """
        drafts = list(drafts)
        if not drafts:
            return []
        return order_sql.append_events(self.direct.get(), drafts)

    @translating_db_errors
    def claim_many(self, claims: list[tuple[UUID, str]], worker: str = "",
                   held: frozenset[UUID] = frozenset()) -> dict[UUID, OrderRecord | bool | None]:
        """Bind each order to the job that executes it, in one statement; read them with their events.

        Per order: the OrderRecord; False when another job already owns it (a job claimed
        from a dead worker keeps its id, so it may resume; a duplicate job may not, so an
        order never executes twice), or when it is in `held` (an armed order `worker`
        released) and another worker has taken it over since; None when there is no such order.
        """
        if not claims:
            return {}
        return order_sql.claim_orders(self.direct.get(), claims, worker, held)

    def claim(self, order_id: UUID, job_id: str, worker: str = "") -> OrderRecord | None:
        """`claim_many` for one order: the order, or None when another job owns it; OrderNotFound."""
        claimed = self.claim_many([(order_id, job_id)], worker)[order_id]
        if claimed is None:
            raise OrderNotFound(str(order_id))
        return claimed or None

    # ---- reads --------------------------------------------------------------------------

    @translating_db_errors
    @db_session
    def get_order(self, order_id: UUID, owner: str | None = None, with_events: bool = True) -> OrderRecord:
        """The order with its events; OrderNotFound if absent or owned by someone else."""
        o = self.Order.get(id=order_id)
        if o is None or (owner is not None and o.owner != owner):
            archive = retention.archived_in(self.direct.get(), order_id, owner)
            raise OrderArchived(order_id, archive) if archive else OrderNotFound(str(order_id))
        events = None
        if with_events:  # in plain SQL: read in the order's partition only (order_sql._pruned)
            events = tuple(order_sql.events_of(self.direct.get(), [(order_id, o.created_at)]).get(order_id, ()))
        return self._record(o, events)

    @translating_db_errors
    def events_after(self, order_id: UUID, after: int = 0) -> list[EventRecord]:
        """Stored events of one order with seq > after, in seq order (each with its order's owner)."""
        return order_sql.events_after(self.direct.get(), order_id, after)

    @translating_db_errors
    def list_orders(self, owner: str | None, status: str | None = None, type: str | None = None,
                    limit: int = 50, cursor: str | None = None) -> tuple[list[OrderRecord], str | None]:
        """Newest first, `limit` per page; the cursor continues after the last one returned."""
        after = decode_cursor(cursor) if cursor is not None else None
        rows = order_sql.list_page(self.direct.get(), owner, status, type, limit + 1, after)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return page, next_cursor

    @translating_db_errors
    def counts_by_status(self) -> dict[str, int]:
        """How many orders are in each status (for /metrics): the kept counts, never a scan."""
        return count_sql.counts(self.direct.get())

    @translating_db_errors
    def risk_figures(self, owner: str) -> tuple[int, int]:
        """The owner's kept risk figures: (orders open, micro-USD accepted in the last 24 h), as
        counted for the limits that applied when its orders were accepted."""
        return risk_sql.figures(self.direct.get(), owner, risk_sql.epoch_minute(utcnow()))

    @translating_db_errors
    def unfinished_orders(self, created_before: datetime | None = None, limit: int = 10_000,
                          after: tuple[datetime, UUID] | None = None
                          ) -> list[tuple[UUID, str | None, str | None, datetime]]:
        """(id, job_id, worker, created_at) of orders not in a terminal status, oldest first
        (the partial index `orders_unfinished` serves this query); a page of `limit` after
        the (created_at, id) `after`, from the first if None."""
        return order_sql.unfinished(self.direct.get(), created_before, limit, after)

    @translating_db_errors
    def armed_by(self, worker: str, order_ids: list[str]) -> tuple[set[str], set[str]]:
        """Of these orders: (those still armed by `worker`, those that ended meanwhile)."""
        return order_sql.armed_by(self.direct.get(), worker, order_ids)

    @translating_db_errors
    @db_session
    def release_job(self, order_id: UUID, job_id: str | None) -> bool:
        """Unbind the order from `job_id` (lost with the bus's data) so a new job may claim it."""
        o = self.Order.get_for_update(id=order_id)
        if o is None or o.job_id != job_id or o.status in TERMINAL:
            return False
        o.job_id = None
        o.worker = None
        return True

    # ---- orders over time (storage/schedule_sql.py) ------------------------------------------

    @translating_db_errors
    def orders_by_id(self, ids: list[UUID]) -> dict[UUID, OrderRecord]:
        """The orders among `ids` that exist, without their events."""
        return schedule_sql.orders_by_id(self.direct.get(), ids)

    @translating_db_errors
    def children_of(self, parent_ids: list[UUID]) -> dict[UUID, list[OrderRecord]]:
        """Each parent's children in slice order, without their events."""
        return schedule_sql.children_of(self.direct.get(), parent_ids)

    def cancel_unstarted(self, children: list[OrderRecord], reason: str) -> list[EventRecord]:
        """Cancel those of a parent's `children` that have not started (`pending` or `waiting`),
        in one transaction; the events stored. A child that reached `building` meanwhile is
        refused by the status rules and settles."""
        drafts = [EventDraft(c.id, "cancelled", c.attempt, {"reason": reason})
                  for c in children if c.status in ("pending", "waiting")]
        return [r for r in self.append_events(drafts) if isinstance(r, EventRecord)] if drafts else []

    @translating_db_errors
    def set_paused(self, order_id: UUID, paused: bool) -> None:
        """Pause or resume a parent's schedule."""
        schedule_sql.set_paused(self.direct.get(), order_id, paused)

    # ---- retention (storage/retention.py) ---------------------------------------------------

    @translating_db_errors
    def archive(self, cutoff: datetime, skip_restored: bool = False) -> list[retention.MonthResult]:
        """Archive the finished orders of every month that ended before `cutoff` (and made its
        partitions ahead); what each month moved. ArchiveBusy if another archiver runs."""
        conn = self.direct.get()
        retention.ensure_ahead(conn)
        return retention.archive(conn, cutoff, skip_restored=skip_restored)

    @translating_db_errors
    def ensure_partitions(self) -> list[str]:
        """Postgres: partitions of the events for this month and the next ones (the names made)."""
        return retention.ensure_ahead(self.direct.get())

    @translating_db_errors
    def archive_plan(self, cutoff: datetime) -> list[retention.MonthResult]:
        """What `archive(cutoff)` would move now, month by month (a dry run: nothing changes)."""
        conn = self.direct.get()
        retention.check_cutoff(cutoff, utcnow())
        plan = [retention.MonthResult(retention.name_of(m), *retention.pending(conn, m, cutoff))
                for m in retention.archivable_months(conn, cutoff, False)]
        return [month for month in plan if month.orders]

    @translating_db_errors
    def restore(self, text: str) -> list[retention.MonthResult]:
        """Bring back the archives `NAME` or `FIRST..LAST` (YYYY-MM)."""
        return retention.restore(self.direct.get(), text)

    @translating_db_errors
    def archives(self) -> list[dict]:
        """The archives made, oldest first."""
        return retention.archives(self.direct.get())

    @translating_db_errors
    def ping(self) -> None:
        """Raise unless the database answers."""
        self.direct.get().execute("SELECT 1")

    def close(self) -> None:
        """Close the direct connections (Pony's are closed by `db.disconnect`)."""
        self.direct.close()
