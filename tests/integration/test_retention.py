"""Retention on both stores: archive, restore, the archived answer, what is never archived, counts."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from tornado.testing import gen_test

from storage import retention
from storage.archive_job import ArchiveJob
from storage.errors import OrderArchived, OrderNotFound
from storage.records import EventDraft, OrderDraft, utcnow
from storage.risk import RiskLimits, RiskTicket
from tests.integration.test_access import KEY_A, KEY_B, KeyedTestCase, bearer
from web.hub import RecentEvents

pytestmark = pytest.mark.integration

NOW = utcnow()
OLD = retention.month_of(retention.month_of(NOW) - timedelta(days=70))  # the month before last's, or older
NAME = retention.name_of(OLD)
CUTOFF = NOW - timedelta(days=1)


def _order(store, owner="", status="cancelled", client_order_id=None):
    """An order of `owner` driven to `status` (cancelled, waiting or pending)."""
    draft = OrderDraft("SOL", "USDC", Decimal("1"), type="limit" if status == "waiting" else "market",
                       limit_price=Decimal("500") if status == "waiting" else None, owner=owner,
                       client_order_id=client_order_id)
    order = store.create_order(draft).order
    if status != "pending":
        (result,) = store.append_events([EventDraft(order.id, status, 1, {})])
        assert not isinstance(result, Exception), result
    return order.id


def _backdate(store, order_ids, when: datetime, updated: datetime | None = None):
    """Move orders (and their events) back in time, as a history that grew over months."""
    conn = store.direct.get()
    d, p = conn.dialect, conn.dialect.ph
    for oid in order_ids:
        conn.execute(f"UPDATE orders SET created_at = {p}, updated_at = {p} WHERE id = {p}",
                     (d.ts(when), d.ts(updated or when), d.uuid(oid)))
        conn.execute(f"UPDATE order_events SET created_at = {p}, order_created_at = {p} WHERE order_id = {p}",
                     (d.ts(when), d.ts(when), d.uuid(oid)))


@pytest.fixture
def history(store):
    """In an old month: three finished orders, an armed one, an unfinished one, and one that
    finished only now (within the retention); on Postgres the month has its partition."""
    retention.ensure_partition(store.direct.get(), OLD)
    done = [_order(store) for _ in range(3)]
    armed, unfinished, recent = _order(store, status="waiting"), _order(store, status="pending"), _order(store)
    when = OLD + timedelta(days=3)
    _backdate(store, done + [armed, unfinished], when)
    _backdate(store, [recent], when, updated=NOW)
    return {"done": done, "kept": [armed, unfinished, recent]}


def _another_archiver_holds_the_lock(store) -> None:
    """Postgres: while another session holds the archiver's lock, an archive is refused and
    changes nothing (one archiver at a time across workers and `engine archive`)."""
    other = store.direct._connect()
    try:
        other.cursor().execute("SELECT pg_advisory_lock(%s)", (retention.LOCK_KEY,))
        with pytest.raises(retention.ArchiveBusy):
            store.archive(CUTOFF)
        assert store.archives() == []
    finally:
        other.close()


def test_the_job_archives_finished_orders_of_an_old_month_and_never_unfinished_or_armed_ones(store, history):
    if store.dialect.postgres:
        _another_archiver_holds_the_lock(store)
    before = store.counts_by_status()
    conn = store.direct.get()
    d = conn.dialect
    for oid in (history["done"][0], history["kept"][0]):  # a webhook delivery of each
        conn.execute(f"INSERT INTO webhook_deliveries (order_id, seq, url, created_at, next_at) VALUES "
                     f"({d.placeholders(5)})", (d.uuid(oid), 1, "https://example.com/hook", d.ts(NOW), d.ts(NOW)))
    job = ArchiveJob(store, retention_days=1, every_s=0.05).start()
    try:
        deadline = time.monotonic() + 30
        while not store.archives() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        job.stop()
    (archive,) = store.archives()
    assert (archive["name"], archive["orders"], archive["events"]) == (NAME, 3, 6)
    assert archive["detached"] == store.dialect.postgres  # the month's partition left whole
    for oid in history["done"]:
        with pytest.raises(OrderArchived) as caught:
            store.get_order(oid)
        assert caught.value.archive == NAME
    for oid in history["kept"]:
        order = store.get_order(oid)
        assert [e.seq for e in order.events] == list(range(1, order.last_seq + 1))
    listed, _ = store.list_orders(None, limit=50)
    assert {o.id for o in listed} == set(history["kept"])
    delivered = [d.read_uuid(row[0]) for row in conn.execute("SELECT order_id FROM webhook_deliveries")]
    assert delivered == [history["kept"][0]]  # the archived order's deliveries left with it
    after = store.counts_by_status()
    assert after.get("cancelled", 0) == before["cancelled"] - 3
    assert after.get("waiting") == before["waiting"] and after.get("pending") == before["pending"]
    # the kept orders go on: the armed one is cancelled, its event stored with the others
    (cancelled,) = store.append_events([EventDraft(history["kept"][0], "cancelled", 1, {})])
    assert not isinstance(cancelled, Exception)
    assert [e.status for e in store.get_order(history["kept"][0]).events] == ["pending", "waiting", "cancelled"]


def test_a_restore_brings_the_orders_back_with_their_events_and_counts(store, history, monkeypatch):
    monkeypatch.setattr(retention, "SQLITE_CHUNK", 2)  # SQLite: a month in transactions of 2 orders
    before = store.counts_by_status()
    originals = {oid: store.get_order(oid) for oid in history["done"]}
    (month,) = store.archive(CUTOFF)
    assert (month.name, month.orders) == (NAME, 3)
    (back,) = store.restore(f"{NAME}..{NAME}")
    assert (back.name, back.orders, back.events) == (NAME, 3, 6)
    for oid, original in originals.items():
        assert store.get_order(oid) == original
    assert store.counts_by_status() == before
    assert store.archives()[0]["restoredAt"] is not None
    assert store.archive(CUTOFF, skip_restored=True) == []  # the job leaves a restored month alone
    (again,) = store.archive(CUTOFF)  # the operator archives it again
    assert again.orders == 3
    with pytest.raises(retention.RetentionError):
        store.restore("1999-01")


def test_another_owners_archived_order_is_not_found_and_a_repeated_client_order_id_is_no_new_order(store):
    retention.ensure_partition(store.direct.get(), OLD)
    oid = _order(store, owner="alice", client_order_id="once")
    _backdate(store, [oid], OLD + timedelta(days=1))
    store.archive(CUTOFF)
    with pytest.raises(OrderArchived):
        store.get_order(oid, owner="alice")
    with pytest.raises(OrderNotFound) as caught:
        store.get_order(oid, owner="bob")
    assert not isinstance(caught.value, OrderArchived)  # never a leak of another key's order
    repeat = OrderDraft("SOL", "USDC", Decimal("1"), owner="alice", client_order_id="once")
    (result,) = store.create_orders([repeat])
    assert isinstance(result, OrderArchived) and result.order_id == oid
    other = store.create_order(OrderDraft("SOL", "USDC", Decimal("1"), owner="bob", client_order_id="once"))
    assert other.created  # bob's own key space


def test_nothing_younger_than_a_day_is_archived():
    with pytest.raises(retention.RetentionError):
        retention.check_cutoff(NOW - timedelta(hours=23), NOW)  # every archive checks it first
    with pytest.raises(retention.RetentionError):
        retention.parse_range("2026-11..2026-09")


class ArchivedAnswerTest(KeyedTestCase):
    """The web layer on an archived order: 410 `archived` naming the archive for its owner, on
    every endpoint and WebSocket; `not_found` for another key, as for any order of another key."""

    @gen_test
    async def test_an_archived_order_answers_archived_to_its_owner_and_not_found_to_another_key(self):
        status, answer = await self.submit_as(KEY_A, clientOrderId="kept-for-a-month")
        oid = answer["orderId"]
        assert (await self.call(f"/api/orders/{oid}/cancel", "POST", "", headers=bearer(KEY_A)))[0] == 200
        # Its events reach this process's cache through the bus, later on a loaded machine: wait for
        # the last one before emptying the cache below (one arriving after would make it look live).
        while "cancelled" not in [e.status for e in (self.services.hub.recent.after(oid, 0) or ([], False))[0]]:
            await asyncio.sleep(0.01)
        orders = self.storage.orders
        retention.ensure_partition(orders.direct.get(), OLD)
        _backdate(orders, [uuid.UUID(oid)], OLD + timedelta(days=1))
        orders.archive(CUTOFF)
        self.services.hub.recent = RecentEvents()  # an archived order is older than any the process holds
        for path, method in ((f"/api/orders/{oid}", "GET"), (f"/api/orders/{oid}/cancel", "POST")):
            status, answer = await self.call(path, method, "" if method == "POST" else None, headers=bearer(KEY_A))
            assert (status, answer["error"]["code"], answer["error"]["archive"]) == (410, "archived", NAME), path
            status, answer = await self.call(path, method, "" if method == "POST" else None, headers=bearer(KEY_B))
            assert (status, answer["error"]["code"]) == (404, "not_found"), path
        status, answer = await self.submit_as(KEY_A, clientOrderId="kept-for-a-month")
        assert (status, answer["error"]["code"]) == (410, "archived")  # never a second order
        conn = await self.connect_as(KEY_A, f"/ws?orderId={oid}")
        frames = await self.frames_until_close(conn)
        assert [f["error"]["code"] for f in frames] == ["archived"] and conn.close_code == 1008
        for key, code in ((KEY_A, "archived"), (KEY_B, "not_found")):
            firehose = await self.connect_as(key, "/ws")
            await firehose.write_message(json.dumps({"subscribe": oid}))
            assert (await self.frame(firehose))["error"]["code"] == code
            firehose.close()


def test_migration_9_keeps_every_event_of_an_existing_history_in_its_months_partition(empty_database_settings,
                                                                                     monkeypatch):
    from storage import migrations
    from storage.database import bind, open_database
    from storage.direct import DirectConnections
    from storage.orders import OrderStore

    full = migrations.MIGRATIONS
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in full if m[0] < 9])
    db = bind(empty_database_settings)
    migrations.migrate(db)  # yesterday's schema, with orders of three months
    direct = DirectConnections(db)
    conn = direct.get()
    d, p = conn.dialect, conn.dialect.ph
    months = [retention.month_of(NOW - timedelta(days=31 * n)) + timedelta(days=2) for n in (0, 1, 2)]
    ids = [uuid.uuid4() for _ in months]
    for oid, when in zip(ids, months):
        conn.execute(f"INSERT INTO orders (id, owner, type, token_in, token_out, amount, slippage_bps, status, "
                     f"attempt, attempts, last_seq, fills, created_at, updated_at) VALUES ({p}, '', 'market', 'SOL', "
                     f"'USDC', '1', 50, 'cancelled', 1, 0, 2, '[]', {p}, {p})", (d.uuid(oid), d.ts(when), d.ts(when)))
        for seq, status in ((1, "pending"), (2, "cancelled")):
            conn.execute(f"INSERT INTO order_events (order_id, seq, status, attempt, created_at, meta) VALUES "
                         f"({p}, {p}, {p}, 1, {p}, '{{}}')", (d.uuid(oid), seq, status, d.ts(when)))
    direct.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", full)
    assert migrations.migrate(db)[0] == 9  # (and every later one)
    db.disconnect()
    db, entities = open_database(empty_database_settings)
    store = OrderStore(db, entities)
    try:
        for oid, when in zip(ids, months):
            order = store.get_order(oid)
            assert [(e.seq, e.status, e.timestamp) for e in order.events] == [(1, "pending", when),
                                                                               (2, "cancelled", when)]
        if store.dialect.postgres:
            homes = store.direct.get().execute("SELECT tableoid::regclass::text, COUNT(*) FROM order_events GROUP BY 1")
            assert sorted(homes) == sorted((retention.partition_name(retention.month_of(m)), 2) for m in months)
    finally:
        store.close()
        db.disconnect()


@pytest.mark.parametrize("limits", [None, RiskLimits(max_open_orders=100)], ids=["no limits", "risk limits"])
def test_a_repeat_whose_order_is_archived_while_its_insert_waits_is_no_new_order(store, limits):
    """The race: the repeat's read of the archive finds nothing yet, and its insert waits for the
    order's row, which the archive's transaction is deleting. Once the archive commits, the
    insert finds no row in its way: before the fix, it stored a second order. Postgres only:
    SQLite takes its write lock for the whole transaction, so the two never interleave."""
    if not store.dialect.postgres:
        pytest.skip("SQLite serializes the archive and the insert whole")
    oid = _order(store, owner="alice", client_order_id="once")
    archiver = store.direct._connect()
    archiver.autocommit = False
    try:
        with archiver.cursor() as cur:  # what the archive's transaction does to this order, uncommitted
            cur.execute("INSERT INTO archived_orders (id, owner, client_order_id, archive) "
                        "SELECT id, owner, client_order_id, %s FROM orders WHERE id = %s", (NAME, oid))
            cur.execute("DELETE FROM orders WHERE id = %s", (oid,))
        repeat = OrderDraft("SOL", "USDC", Decimal("1"), owner="alice", client_order_id="once")
        tickets = None if limits is None else [RiskTicket(limits, None)]
        done = {}
        thread = threading.Thread(target=lambda: done.update(result=store.create_orders([repeat], tickets)))
        thread.start()
        watcher = store.direct._connect()
        try:  # the repeat's insert is waiting for the archiver's lock on the order's row
            deadline = time.monotonic() + 30
            cur = watcher.cursor()
            while time.monotonic() < deadline:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND datname = current_database()")
                if cur.fetchone()[0]:
                    break
                time.sleep(0.005)
            else:
                pytest.fail("the repeat's insert never waited for the archive")
        finally:
            watcher.close()
        archiver.commit()
        thread.join(30)
    finally:
        archiver.close()
    (result,) = done["result"]
    assert isinstance(result, OrderArchived) and result.order_id == oid, result
    listed, _ = store.list_orders("alice", limit=10)
    assert listed == []  # no second order
