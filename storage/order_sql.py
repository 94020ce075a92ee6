"""The order store's hot paths in plain SQL, batch by batch, on a direct connection.

Measured (bench/): appending events through Pony entities cost three statements per
event and a third of a worker's CPU. Here every path takes a whole batch of orders:
- intake: the orders and their `pending` events in ONE statement (a data-modifying CTE
  on Postgres), whatever the batch size;
- appends: lock the batch's orders, then insert the events and update the orders, and
  commit: two round trips on Postgres for the whole batch;
- claims: one UPDATE ... RETURNING binds a batch of orders to their jobs;
- risk limits (storage/risk_sql.py): a batch with owners that have kept limits is decided and
  counted in its insert transaction; an order's terminal event gives back what it counted.
  Owners without such limits add no statement to either path.
The same code serves Postgres and SQLite; `Dialect` holds what differs.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Sequence
from uuid import UUID

from storage import codec, count_sql, retention, risk_sql, webhook_sql
from storage.direct import DirectConnection, Transaction
from storage.errors import FencedOut
from storage.risk import RiskBook, RiskLimitExceeded, RiskTicket, counted
from storage.records import ORDER_TYPES, PARENT_TYPES, EventDraft, EventRecord, OrderRecord, expiry, utcnow
from storage.sql import Dialect
from storage.status import STATUSES, TERMINAL, StatusRuleError, check_transition

# The columns an OrderRecord is read from, in the order `order_from_row` takes them.
ORDER_FIELDS = ("id", "owner", "status", "type", "token_in", "token_out", "amount", "slippage_bps", "limit_price",
                "expires_in_seconds", "client_order_id", "created_at", "updated_at", "attempts", "attempt",
                "last_seq", "route", "fills", "error", "fence", "callback_url", "stop_price",
                "stop_limit_price", "trail_percent", "trail_amount", "parent_id", "slice_index", "schedule", "paused")
ORDER_COLUMNS = ", ".join(ORDER_FIELDS)
_INSERT_COLUMNS = ("id, owner, client_order_id, type, token_in, token_out, amount, slippage_bps, limit_price, "
                   "expires_in_seconds, expires_at, status, attempt, attempts, last_seq, fills, created_at, updated_at, "
                   "risk_open, risk_usd_micros, callback_url, stop_price, stop_limit_price, trail_percent, trail_amount, "
                   "parent_id, slice_index, schedule")
_INSERT_COUNT = len(_INSERT_COLUMNS.split(","))
_CREATED_AT = [c.strip() for c in _INSERT_COLUMNS.split(",")].index("created_at")
_CALLBACK_URL = [c.strip() for c in _INSERT_COLUMNS.split(",")].index("callback_url")
_EVENT_COLUMNS = "order_id, seq, status, attempt, created_at, meta, order_created_at"  # the last: its partition


def fills_from_confirmation(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One fill per executed swap, from a `confirmed` event's meta."""
    legs = meta.get("legs") or [meta]
    # A route through an intermediate token is one fill (one transaction) that lists its hops.
    return [{k: leg.get(k) for k in ("dex", "amountIn", "amountOut", "txHash", "hops") if k != "hops" or "hops" in leg}
            for leg in legs]


def order_from_row(d: Dialect, row: Sequence[Any], events=None) -> OrderRecord:
    """An OrderRecord from a row of ORDER_FIELDS: the one place a stored order becomes a record,
    whether the row came from plain SQL (text or bytes as SQLite gives them) or from a Pony
    `Order`'s attributes (storage.orders: values already typed, which the readers pass through)."""
    (oid, owner, status, type_, token_in, token_out, amount, slippage, limit_price, expires, client_id,
     created, updated, attempts, attempt, last_seq, route, fills, error, fence, callback_url, stop_price,
     stop_limit_price, trail_percent, trail_amount, parent_id, slice_index, schedule, paused) = row
    return OrderRecord(
        id=d.read_uuid(oid), owner=owner or "", status=status, type=type_, token_in=token_in,
        token_out=token_out, amount=Decimal(amount), slippage_bps=slippage,
        limit_price=Decimal(limit_price) if limit_price is not None else None,
        expires_in_seconds=expires, client_order_id=client_id, created_at=d.read_ts(created),
        updated_at=d.read_ts(updated), attempts=attempts, attempt=attempt, last_seq=last_seq,
        route=d.read_json(route), fills=d.read_json(fills) or [], error=d.read_json(error), events=events,
        fence=fence, callback_url=callback_url,
        stop_price=Decimal(stop_price) if stop_price is not None else None,
        stop_limit_price=Decimal(stop_limit_price) if stop_limit_price is not None else None,
        trail_percent=Decimal(trail_percent) if trail_percent is not None else None,
        trail_amount=Decimal(trail_amount) if trail_amount is not None else None,
        parent_id=d.read_uuid(parent_id) if parent_id is not None else None, slice_index=slice_index,
        schedule=d.read_json(schedule) if schedule is not None else None, paused=bool(paused),
    )


# ---- intake -----------------------------------------------------------------------------------

def _insert_values(d: Dialect, rows: list[dict[str, Any]]) -> list[tuple]:
    return [(d.uuid(r["id"]), r["owner"], r["client_order_id"], r["type"], r["token_in"], r["token_out"],
             r["amount"], r["slippage_bps"], r["limit_price"], r["expires_in_seconds"],
             None if (expires := expiry(r["created_at"], r["expires_in_seconds"])) is None else d.ts(expires),
             "pending", 1, 0, 1, "[]", d.ts(r["created_at"]), d.ts(r["created_at"]), r.get("risk_open", 0),
             r.get("risk_usd_micros"), r.get("callback_url"), r.get("stop_price"), r.get("stop_limit_price"),
             r.get("trail_percent"), r.get("trail_amount"),
             None if r.get("parent_id") is None else d.uuid(r["parent_id"]), r.get("slice_index"),
             None if r.get("schedule") is None else codec.dumps(r["schedule"]).decode()) for r in rows]


class ArchivedMeanwhile(Exception):
    """A batch named clientOrderIds of archived orders: its transaction was rolled back.
    `found`: {(owner, clientOrderId): (order id, archive)}."""

    def __init__(self, found: dict[tuple[str, str], tuple]):
        super().__init__(f"{len(found)} clientOrderId(s) of archived orders")
        self.found = found


def _client_keys(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted({(r["owner"], r["client_order_id"]) for r in rows if r["client_order_id"] is not None})


def refuse_archived(tx: Transaction, rows: list[dict[str, Any]]) -> None:
    """Raise ArchivedMeanwhile (rolling `tx` back) when a clientOrderId of `rows` names an
    archived order. Called after the insert, in its transaction: an archive that deleted the
    order while the insert waited for that row (or committed just before it) is seen here,
    in the statement's newer snapshot, so a repeat never becomes a second order."""
    keys = _client_keys(rows)
    found = retention.archived_client_ids(tx, keys) if keys else {}
    if found:
        raise ArchivedMeanwhile(found)


def insert_orders(conn: DirectConnection, rows: list[dict[str, Any]], tx: Transaction | None = None) -> set[UUID]:
    """Insert orders with their `pending` event (seq 1), in one transaction (`tx` when given,
    else one of their own); the ids inserted.

    An order whose (owner, clientOrderId) is taken is skipped, not an error: the caller
    looks up the existing one. Two rows of one batch with the same key: the first wins.
    A batch with clientOrderIds, in its own transaction, is refused whole (ArchivedMeanwhile)
    when one names an archived order; given `tx`, the caller checks (`refuse_archived`).
    """
    d = conn.dialect
    if tx is None and _client_keys(rows):
        with conn.transaction() as own:  # the insert, then the archive probe, then COMMIT
            inserted = insert_orders(conn, rows, own)
            refuse_archived(own, rows)
        return inserted
    values = _insert_values(d, rows)
    # Untargeted: a repeated clientOrderId, or a child's (parent_id, slice_index) already
    # created (a schedule resumed by another worker), is skipped alike.
    conflict = "ON CONFLICT DO NOTHING"
    if d.postgres:  # one statement, so atomic on its own: one round trip, no BEGIN/COMMIT
        rendered = d.values(conn.cursor(), "(" + ", ".join(["%s"] * _INSERT_COUNT) + ")", values)
        hooked = any(r.get("callback_url") for r in rows)  # an order without one adds nothing here
        inserted = (tx or conn).execute(
            b"WITH ins AS (INSERT INTO orders (" + _INSERT_COLUMNS.encode() + b") VALUES " + rendered
            + b" " + conflict.encode() + b" RETURNING id, created_at"
            + (b", owner, callback_url), " + webhook_sql.INTAKE_CTE.encode() if hooked else b"), ")
            + b"ev AS (INSERT INTO order_events (" + _EVENT_COLUMNS.encode() + b") "
            b"SELECT id, 1, 'pending', 1, created_at, '{}', created_at FROM ins), " + count_sql.INTAKE_CTE.encode()
            + b" SELECT id FROM ins")
        return {d.read_uuid(row[0]) for row in inserted}
    if tx is None:
        with conn.transaction() as own:
            return _insert_sqlite(own, d, values, conflict)
    return _insert_sqlite(tx, d, values, conflict)


def _insert_sqlite(tx: Transaction, d: Dialect, values: list[tuple], conflict: str) -> set[UUID]:
    inserted = set()
    for value in values:
        if tx.execute(f"INSERT INTO orders ({_INSERT_COLUMNS}) VALUES ({d.placeholders(_INSERT_COUNT)}) "
                      f"{conflict} RETURNING id", value):
            inserted.add(d.read_uuid(value[0]))
    tx.executemany(f"INSERT INTO order_events ({_EVENT_COLUMNS}) VALUES (?, 1, 'pending', 1, ?, '{{}}', ?)",
                   [(v[0], v[_CREATED_AT], v[_CREATED_AT]) for v in values if d.read_uuid(v[0]) in inserted])
    count_sql.upsert_sqlite(tx, [("pending", len(inserted))] if inserted else [])
    webhook_sql.insert_sqlite(tx, [(v[0], 1, v[_CALLBACK_URL], v[1], v[_CREATED_AT], v[_CREATED_AT]) for v in values
                                   if v[_CALLBACK_URL] and d.read_uuid(v[0]) in inserted])
    return inserted


def insert_within_limits(conn: DirectConnection, rows: list[dict[str, Any]], tickets: list[RiskTicket | None],
                         now: datetime) -> tuple[set[UUID], dict[int, RiskLimitExceeded]]:
    """`insert_orders` for a batch some of whose owners have kept risk limits (a ticket each):
    lock and read those owners' figures, decide their orders in batch order (a repeat of a
    stored clientOrderId is never refused), insert the others and count them in, in one
    transaction (three round trips on Postgres). The ids inserted, and the refusals by index."""
    mine = [(i, row, t) for i, (row, t) in enumerate(zip(rows, tickets)) if t is not None]
    owners = sorted({row["owner"] for _, row, _ in mine})
    client_ids = sorted({(row["owner"], row["client_order_id"]) for _, row, _ in mine
                         if row["client_order_id"] is not None})
    minute = risk_sql.epoch_minute(now)
    refused: dict[int, RiskLimitExceeded] = {}
    with conn.transaction() as tx:
        open_orders, notional, repeats = risk_sql.lock_and_read(tx, owners, client_ids, minute)
        book = RiskBook(open_orders, notional)
        for i, row, ticket in mine:
            key = (row["owner"], row["client_order_id"])
            if row["client_order_id"] is not None and key in repeats:
                continue  # found, not created: answered with the stored order
            error = book.admit(row["owner"], ticket)
            if error is not None:
                refused[i] = error
                continue
            repeats.add(key)
            row["risk_open"], row["risk_usd_micros"] = counted(ticket)
        keep = [row for i, row in enumerate(rows) if i not in refused]
        inserted = insert_orders(conn, keep, tx) if keep else set()
        refuse_archived(tx, keep)
        opened: dict[str, int] = {}
        used: dict[str, int] = {}
        for row in keep:
            if row["id"] in inserted and row.get("risk_open"):
                opened[row["owner"]] = opened.get(row["owner"], 0) + 1
            if row["id"] in inserted and row.get("risk_usd_micros") is not None:
                used[row["owner"]] = used.get(row["owner"], 0) + row["risk_usd_micros"]
        notional_owners = sorted({row["owner"] for _, row, t in mine if t.limits.max_notional_24h_usd})
        risk_sql.add(tx, opened, used, minute, notional_owners)  # and COMMIT
    return inserted, refused


# ---- appends ----------------------------------------------------------------------------------

def append_events(conn: DirectConnection, drafts: list[EventDraft]
                  ) -> list[EventRecord | StatusRuleError | FencedOut]:
    """Check and append `drafts` in one transaction; a refused draft's slot holds its error.

    A draft is refused when it breaks the status rules, or when it carries a fence that is
    no longer the order's (the order was claimed again since: its holder must stop).
    """
    d = conn.dialect
    ids = sorted({draft.order_id for draft in drafts})  # lock in one order: no deadlocks between writers
    with conn.transaction() as tx:
        rows = tx.execute(f"SELECT id, status, attempt, attempts, last_seq, owner, fence, created_at, risk_open, "
                          f"risk_usd_micros, callback_url, type FROM orders WHERE id IN ({d.placeholders(len(ids))}) "
                          f"ORDER BY id{' FOR UPDATE' if d.postgres else ''}", [d.uuid(i) for i in ids])
        state = {d.read_uuid(r[0]): {"status": r[1], "attempt": r[2], "attempts": r[3], "last_seq": r[4],
                                     "owner": r[5] or "", "fence": r[6], "created_at": r[7], "risk_open": r[8],
                                     "risk_usd_micros": r[9], "callback_url": r[10], "type": r[11]} for r in rows}
        before = {oid: order["status"] for oid, order in state.items()}
        results, events, changed = _check_and_apply(d, state, drafts)
        if events:
            moved = count_sql.deltas((before[oid], order["status"]) for oid, order in changed.items())
            _write(tx, d, events, changed, _risk_released(d, state, drafts, results), moved,
                   webhook_sql.deliveries(d, state, results))
        else:
            tx.commit()
    return results


def _risk_released(d: Dialect, state: dict, drafts: list[EventDraft], results: list):
    """What the orders ended by this batch give back to their owners' risk figures (nothing,
    and no statement, for orders that were not counted: owners without kept limits). A
    cancelled or expired order gives its notional back, but a twap or dca parent never does:
    its children may have spent part of it before it ended."""
    ended = []
    for draft, result in zip(drafts, results):
        order = state.get(draft.order_id)
        if draft.status not in TERMINAL or not isinstance(result, EventRecord) or order is None:
            continue
        if order["risk_open"] or order["risk_usd_micros"] is not None:
            ended.append((order["owner"], order["risk_open"], order["risk_usd_micros"],
                          d.read_ts(order["created_at"]),
                          draft.status in ("cancelled", "expired") and order["type"] not in PARENT_TYPES))
    return risk_sql.releases(ended, utcnow()) if ended else ([], [])


def _check_and_apply(d: Dialect, state: dict, drafts: list[EventDraft]):
    results: list[EventRecord | StatusRuleError] = []
    events, changed = [], {}
    for draft in drafts:
        order = state.get(draft.order_id)
        if order is None:
            results.append(StatusRuleError(f"order {draft.order_id} does not exist"))
            continue
        if draft.fence is not None and draft.fence != order["fence"]:
            results.append(FencedOut(f"order {draft.order_id} was claimed again (fence {order['fence']}, "
                                     f"this holder's {draft.fence})"))
            continue
        try:
            check_transition(order["status"], order["attempt"], draft.status, draft.attempt)
            meta_json = codec.dumps(draft.meta)  # encoded once: the row, the bus and every listener
        except (StatusRuleError, TypeError) as exc:  # a bad event is refused alone, not its batch
            results.append(exc if isinstance(exc, StatusRuleError) else StatusRuleError(f"meta is not JSON: {exc}"))
            continue
        _apply(order, draft)
        changed[draft.order_id] = order
        events.append((d.uuid(draft.order_id), order["last_seq"], draft.status, draft.attempt,
                       d.ts(draft.timestamp), meta_json.decode(), order["created_at"]))
        results.append(EventRecord(draft.order_id, order["last_seq"], draft.status, draft.attempt,
                                   draft.timestamp, draft.meta, order["owner"], meta_json))
    return results, events, changed


def _apply(order: dict, draft: EventDraft) -> None:
    """What an event changes on its order (the order row mirrors its latest events)."""
    order["last_seq"] += 1
    order.update(status=draft.status, attempt=draft.attempt, updated_at=draft.timestamp)
    meta = draft.meta
    if draft.status == "routing":
        order["attempts"] = max(order["attempts"], draft.attempt)
        if "route" in meta:
            order["route"] = meta["route"]
    elif draft.status == "confirmed":
        order["fills"] = fills_from_confirmation(meta)
    elif draft.status == "failed":
        order["error"] = meta.get("error")
        tried = meta.get("attempts")  # an attempt that failed before routing counts too
        if isinstance(tried, int) and not isinstance(tried, bool):
            order["attempts"] = max(order["attempts"], tried)


def _write(tx: Transaction, d: Dialect, events: list[tuple], changed: dict[UUID, dict],
           released: tuple[list, list] = ([], []), moved: list[tuple[str, int]] = (),
           hooks: list[tuple] = ()) -> None:
    """Store the events and the orders they changed, the batch's net change of the counts per
    status (`moved`), what ended orders give back to their owners' risk figures, the webhook
    deliveries of the events (`hooks`: none for orders without a callbackUrl), and commit. The
    counts come after the orders and before the risk figures, as in the intake (no lock cycle)."""
    # route, fills and error are only ever set, never cleared: COALESCE keeps the old value.
    updates = [(d.uuid(oid), o["status"], o["attempt"], o["attempts"], o["last_seq"], d.ts(o["updated_at"]),
                d.json(o.get("route")), d.json(o.get("fills")), d.json(o.get("error")))
               for oid, o in changed.items()]
    if d.postgres:
        cursor = tx.cursor
        inserts = d.values(cursor, "(%s, %s, %s, %s, %s, %s::jsonb, %s)", events)
        values = d.values(cursor, "(%s::uuid, %s, %s::int, %s::int, %s::int, %s::timestamp, %s, %s, %s)", updates)
        tx.commit(
            b"INSERT INTO order_events (" + _EVENT_COLUMNS.encode() + b") VALUES " + inserts + b"; "
            b"UPDATE orders AS o SET status = v.status, attempt = v.attempt, attempts = v.attempts, "
            b"last_seq = v.last_seq, updated_at = v.updated_at, route = COALESCE(v.route::jsonb, o.route), "
            b"fills = COALESCE(v.fills::jsonb, o.fills), error = COALESCE(v.error::jsonb, o.error) "
            b"FROM (VALUES " + values + b") AS v (id, status, attempt, attempts, last_seq, updated_at, "
            b"route, fills, error) WHERE o.id = v.id"
            + (b"; " + count_sql.upsert_sql(d, cursor, moved) if moved else b"")
            + (b"; " + risk_sql.upsert_sql(d, cursor, *released) if released[0] or released[1] else b"")
            + (b"; " + webhook_sql.insert_sql(d, cursor, hooks) if hooks else b""))
        return
    tx.executemany(f"INSERT INTO order_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", events)
    tx.executemany("""
        UPDATE orders SET status = ?, attempt = ?, attempts = ?, last_seq = ?, updated_at = ?,
            route = COALESCE(?, route), fills = COALESCE(?, fills), error = COALESCE(?, error)
        WHERE id = ?""", [u[1:] + (u[0],) for u in updates])
    count_sql.upsert_sqlite(tx, list(moved))
    risk_sql.upsert_sqlite(tx, *released)
    webhook_sql.insert_sqlite(tx, hooks)
    tx.commit()


# ---- claims -----------------------------------------------------------------------------------

def claim_orders(conn: DirectConnection, claims: list[tuple[UUID, str]], worker: str,
                 held: frozenset[UUID] = frozenset()) -> dict[UUID, OrderRecord | bool | None]:
    """Bind each order to its job (run by `worker`) and read it, with its events if it ran before.

    Every claim raises the order's fence (the record carries the new one), also when the
    same job claims it again (a takeover after a stall, a restarted actor): whoever held the
    order before can no longer append its events. The orders in `held` are claimed only if
    `worker` still holds them (an armed order it released when it fired): a worker that
    stalled while another took its armed orders over must not take them back when it wakes.

    Per order: the OrderRecord, False when another job (or, for `held`, another worker) owns
    it, None when there is no such order.
    """
    d = conn.dialect
    claims = sorted(claims)
    if d.postgres:  # one statement: atomic on its own, one round trip
        cursor = conn.cursor()
        rendered = d.values(cursor, "(%s::uuid, %s, %s)", [(d.uuid(oid), job, oid in held) for oid, job in claims])
        me = cursor.mogrify("%s", (worker,))
        rows = conn.execute(
            b"UPDATE orders AS o SET job_id = v.job_id, fence = o.fence + 1, worker = " + me
            + b" FROM (VALUES " + rendered + b") AS v (id, job_id, held) "
            b"WHERE o.id = v.id AND (o.job_id IS NULL OR o.job_id = v.job_id) AND (NOT v.held OR o.worker = "
            + me + b") RETURNING " + ", ".join(f"o.{c.strip()}" for c in ORDER_COLUMNS.split(",")).encode())
    else:
        rows = []
        with conn.transaction() as tx:
            for oid, job in claims:
                rows += tx.execute(f"UPDATE orders SET job_id = ?, worker = ?, fence = fence + 1 WHERE id = ? AND "
                                   f"(job_id IS NULL OR job_id = ?) AND (? = 0 OR worker = ?) RETURNING {ORDER_COLUMNS}",
                                   (job, worker, d.uuid(oid), job, int(oid in held), worker))
    found: dict[UUID, OrderRecord | bool | None] = {}
    for row in rows:
        order = order_from_row(d, row)
        found[order.id] = order
    missing = [oid for oid, _ in claims if oid not in found]
    if missing:
        present = {d.read_uuid(r[0]) for r in conn.execute(
            f"SELECT id FROM orders WHERE id IN ({d.placeholders(len(missing))})", [d.uuid(o) for o in missing])}
        found.update({oid: (False if oid in present else None) for oid in missing})
    _attach_events(conn, found)
    return found


def _attach_events(conn: DirectConnection, found: dict) -> None:
    """Give each claimed order its history: a fresh order's one event is `pending` (no read)."""
    resumed = [(o.id, o.created_at) for o in found.values() if isinstance(o, OrderRecord) and o.last_seq > 1]
    history = events_of(conn, resumed) if resumed else {}
    for oid, order in list(found.items()):
        if isinstance(order, OrderRecord):
            events = history.get(oid) if order.last_seq > 1 else (
                EventRecord(order.id, 1, "pending", 1, order.created_at, {}, order.owner),)
            found[oid] = order.__class__(**{**order.__dict__, "events": tuple(events or ())})


# ---- reads --------------------------------------------------------------------------------------

# Always true: the predicates of `orders_owner_created` and `orders_status_type_created` (the
# first), of `orders_created` (the second) (migration 8), each stated only by the lists its
# indexes are meant for, so that no other list can be planned on them (see the migration).
LIST_GUARD = "created_at > '1970-01-01'"
EVERY_ORDER = "created_at < 'infinity'"


def list_page(conn: DirectConnection, owner: str | None, status: str | None, type_: str | None, limit: int,
              after: tuple[datetime, UUID] | None) -> list[OrderRecord]:
    """Up to `limit` orders, newest first (created_at, id), after the keyset position `after`;
    only `owner`'s (None: everyone's), of `status` and `type_` when given.

    Every branch is one range of one index (migration 8): an unfiltered list on
    `orders_owner_created` (everyone's: `orders_created`); a filtered one a branch per (status,
    type) pair the filter allows (3 for a status, 9 for a type), each on
    `orders_[owner_]status_type_created`, merged newest first. A page reads about `limit` rows
    per branch, whatever the history."""
    d, p = conn.dialect, conn.dialect.ph
    unfiltered = status is None and type_ is None
    if owner is None:  # the guard that lets the list use its index (see LIST_GUARD)
        where, params = [EVERY_ORDER if unfiltered else LIST_GUARD], []
    else:
        where, params = [f"owner = {p}"] + ([LIST_GUARD] if unfiltered else []), [owner]
    if after is not None:
        where.append(f"(created_at, id) < ({p}, {p})")
        params += [d.ts(after[0]), d.uuid(after[1])]
    order = f"ORDER BY created_at DESC, id DESC LIMIT {int(limit)}"
    if unfiltered:
        sql = f"SELECT {ORDER_COLUMNS} FROM orders {_where(where)} {order}"
    else:
        pairs = [(s, t) for s in ([status] if status else sorted(STATUSES))
                 for t in ([type_] if type_ else ORDER_TYPES)]
        branch = f"SELECT {ORDER_COLUMNS} FROM orders {_where(where + [f'status = {p}', f'type = {p}'])} {order}"
        if len(pairs) == 1:
            sql = branch
        else:  # SQLite wants each branch with its own ORDER BY ... LIMIT in a subquery
            sql = ("SELECT * FROM (" + " UNION ALL ".join(f"SELECT * FROM ({branch}) AS b{i}" for i in range(len(pairs)))
                   + f") AS page {order}")
        params = [v for pair in pairs for v in (*params, *pair)]
    return [order_from_row(d, row) for row in conn.execute(sql, params)]


def _where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


def unfinished(conn: DirectConnection, created_before, limit: int, after: tuple | None = None) -> list[tuple]:
    """(id, job_id, worker, created_at) of the unfinished orders, oldest first, on the partial
    index `orders_unfinished` (its WHERE is repeated here so the planner can use it); `after`,
    the (created_at, id) of the last row of the previous page, pages through them."""
    d, p = conn.dialect, conn.dialect.ph
    where = "status IN ('pending', 'scheduled', 'waiting', 'routing', 'building', 'submitted')"
    params: list = []
    if created_before is not None:
        where += f" AND created_at < {p}"
        params.append(d.ts(created_before))
    if after is not None:
        where += f" AND (created_at, id) > ({p}, {p})"
        params += [d.ts(after[0]), d.uuid(after[1])]
    rows = conn.execute(f"SELECT id, job_id, worker, created_at FROM orders WHERE {where} "
                        f"ORDER BY created_at, id LIMIT {int(limit)}", params)
    return [(d.read_uuid(oid), job, worker, d.read_ts(created)) for oid, job, worker, created in rows]


def armed_by(conn: DirectConnection, worker: str, order_ids: list[str]) -> tuple[set[str], set[str]]:
    """(orders `worker` still holds armed, orders among `order_ids` that ended): the first on
    the partial index `orders_armed`, the second read only for the orders no longer armed."""
    d, p = conn.dialect, conn.dialect.ph
    still = {str(d.read_uuid(r[0])) for r in conn.execute(
        f"SELECT id FROM orders WHERE worker = {p} AND status = 'waiting'", (worker,))}
    gone = [UUID(i) for i in order_ids if i not in still]
    ended: set[str] = set()
    if gone:
        rows = conn.execute(f"SELECT id, status FROM orders WHERE id IN ({d.placeholders(len(gone))})",
                            [d.uuid(o) for o in gone])
        ended = {str(d.read_uuid(oid)) for oid, status in rows if status in TERMINAL}
    return still, ended


def _pruned(d: Dialect) -> str:
    """Postgres: the join condition that confines an order's events to its partition (every
    event carries its order's created_at, migration 9): one partition read, not one per month."""
    return " AND e.order_created_at = o.created_at" if d.postgres else ""


def events_of(conn: DirectConnection, orders: list[tuple[UUID, datetime]]) -> dict[UUID, list[EventRecord]]:
    """Every stored event of these orders, (id, created_at) each, in seq order; on Postgres read
    in their orders' partitions only (every event carries its order's created_at, migration 9)."""
    d = conn.dialect
    prune = (f" AND e.order_created_at IN ({d.placeholders(len(orders))})" if d.postgres else "")
    rows = conn.execute(f"SELECT e.order_id, e.seq, e.status, e.attempt, e.created_at, e.meta, o.owner "
                        f"FROM order_events e JOIN orders o ON o.id = e.order_id "
                        f"WHERE e.order_id IN ({d.placeholders(len(orders))}){prune} ORDER BY e.order_id, e.seq",
                        [d.uuid(o) for o, _ in orders] + ([d.ts(c) for _, c in orders] if d.postgres else []))
    events: dict[UUID, list[EventRecord]] = {}
    for oid, seq, status, attempt, ts, meta, owner in rows:
        oid = d.read_uuid(oid)
        events.setdefault(oid, []).append(
            EventRecord(oid, seq, status, attempt, d.read_ts(ts), d.read_json(meta) or {}, owner or ""))
    return events


def events_after(conn: DirectConnection, order_id: UUID, after: int) -> list[EventRecord]:
    """Stored events of one order with seq > after, in seq order."""
    d, p = conn.dialect, conn.dialect.ph
    rows = conn.execute(f"SELECT e.seq, e.status, e.attempt, e.created_at, e.meta, o.owner FROM order_events e "
                        f"JOIN orders o ON o.id = e.order_id{_pruned(d)} WHERE e.order_id = {p} "
                        f"AND e.seq > {p} "
                        f"ORDER BY e.seq", (d.uuid(order_id), after))
    return [EventRecord(order_id, seq, status, attempt, d.read_ts(ts), d.read_json(meta) or {}, owner or "")
            for seq, status, attempt, ts, meta, owner in rows]
