"""Webhook deliveries in the store, on SQLite and on the real Postgres: recorded with their events,
leased one head per order, taken over when a lease expires."""
from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from storage.records import EventDraft, OrderDraft, utcnow
from storage.webhooks import WebhookStore, owner_secret

pytestmark = pytest.mark.integration

URL = "https://hooks.example.com/engine"


@pytest.fixture
def hooks(store):
    return WebhookStore(store.db, store.direct, "m" * 32)


def order(store, callback_url=URL, owner="o1"):
    created = store.create_order(OrderDraft("SOL", "USDC", Decimal("1"), owner=owner, callback_url=callback_url))
    return created.order


def advance(store, oid, *statuses):
    results = store.append_events([EventDraft(oid, status, 1, {"n": i}) for i, status in enumerate(statuses)])
    assert all(not isinstance(r, Exception) for r in results)


def test_every_event_of_an_order_with_a_callback_url_is_recorded_as_a_delivery(store, hooks):
    oid = order(store).id
    advance(store, oid, "routing", "building", "submitted")
    plain = order(store, callback_url=None).id
    advance(store, plain, "routing")
    assert [(d["seq"], d["status"], d["url"]) for d in hooks.of_order(oid)] == [
        (1, "pending", URL), (2, "pending", URL), (3, "pending", URL), (4, "pending", URL)]
    assert hooks.of_order(plain) == []
    assert store.get_order(oid).callback_url == URL


def test_only_the_oldest_pending_delivery_of_an_order_is_leased_and_the_next_follows_it(store, hooks):
    oid = order(store).id
    advance(store, oid, "routing")
    now = utcnow() + timedelta(seconds=1)
    (first,) = hooks.claim(now, 5, 10)
    assert (first.seq, first.attempt, first.event.status) == (1, 1, "pending")
    assert first.event.to_json().startswith(b'{"orderId":"%s","seq":1,"status":"pending"' % str(oid).encode())
    assert hooks.claim(now, 5, 10) == []  # seq 2 waits behind seq 1, which is leased
    assert hooks.settle(first, "delivered", response_status=204)
    (second,) = hooks.claim(now, 5, 10)
    assert second.seq == 2
    assert hooks.of_order(oid)[0]["status"] == "delivered" and hooks.of_order(oid)[0]["responseStatus"] == 204


def test_a_dead_workers_lease_expires_and_another_takes_the_delivery_over(store, hooks):
    oid = order(store).id
    now = utcnow() + timedelta(seconds=1)
    (dead,) = hooks.claim(now, 2, 10)  # this worker dies holding the lease
    assert hooks.claim(now + timedelta(seconds=1), 2, 10) == []  # not yet expired
    (taken,) = hooks.claim(now + timedelta(seconds=3), 2, 10)
    assert (taken.seq, taken.attempt) == (1, 2) and taken.token != dead.token
    assert not hooks.settle(dead, "delivered")  # the dead one's late outcome changes nothing
    assert hooks.settle(taken, "delivered")
    assert hooks.of_order(oid)[0]["attempts"] == 2


def test_a_failed_try_waits_until_it_is_due_again(store, hooks):
    order(store)
    now = utcnow() + timedelta(seconds=1)
    (first,) = hooks.claim(now, 5, 10)
    assert hooks.settle(first, "pending", next_at=now + timedelta(seconds=30), error="connection refused")
    assert hooks.claim(now + timedelta(seconds=10), 5, 10) == []
    (again,) = hooks.claim(now + timedelta(seconds=31), 5, 10)
    assert again.attempt == 2


def test_racing_dispatchers_lease_each_head_once(store, hooks):
    for _ in range(20):
        order(store)
    now = utcnow() + timedelta(seconds=1)
    won: list = []
    barrier = threading.Barrier(4)

    def dispatcher():
        barrier.wait()
        for _ in range(5):
            won.extend(hooks.claim(now, 30, 3))

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((d.order_id, d.seq) for d in won) == sorted({(d.order_id, d.seq) for d in won})
    assert len(won) == 20


def test_each_owner_signs_with_its_own_secret_derived_from_the_master(store, hooks):
    assert hooks.secret_for("o1") == owner_secret(b"m" * 32, "o1") != hooks.secret_for("o2")
    from_db = WebhookStore(store.db, store.direct)
    assert from_db.secret_for("o1") == WebhookStore(store.db, store.direct).secret_for("o1") != hooks.secret_for("o1")
