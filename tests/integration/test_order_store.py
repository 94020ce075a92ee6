"""The order store on SQLite and on the real Postgres: the same tests on both."""
from __future__ import annotations

import threading
from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

import pytest

from storage.database import open_database
from storage.errors import ClientOrderIdConflict, OrderNotFound, SchemaNotMigrated
from storage.orders import BadCursor
from storage.records import EventDraft, OrderDraft
from storage.status import StatusRuleError

pytestmark = pytest.mark.integration


def draft(**kw):
    base = dict(token_in="SOL", token_out="USDC", amount=Decimal("1.5"))
    return OrderDraft(**{**base, **kw})


def test_a_new_order_is_stored_with_its_pending_event(store):
    order, pending, created = store.create_order(draft(amount=Decimal("18446744073.709551615")))
    assert created and pending.seq == 1 and pending.status == "pending"
    again = store.get_order(order.id)
    assert again.amount == Decimal("18446744073.709551615")  # exact, on SQLite too
    assert [e.status for e in again.events] == ["pending"]


def test_events_get_consecutive_seqs_and_derived_order_fields(store):
    order, _, _ = store.create_order(draft())
    route = {"legs": [{"dex": "raydium"}], "amountOut": "225"}
    results = store.append_events([
        EventDraft(order.id, "routing", 1, {"route": route}),
        EventDraft(order.id, "building", 1, {}),
        EventDraft(order.id, "submitted", 1, {"txHash": "sig"}),
        EventDraft(order.id, "confirmed", 1, {"txHash": "sig", "dex": "raydium", "amountIn": "1.5", "amountOut": "225"}),
    ])
    assert [r.seq for r in results] == [2, 3, 4, 5]
    done = store.get_order(order.id)
    assert done.status == "confirmed" and done.route == route and done.attempts == 1
    assert done.fills == [{"dex": "raydium", "amountIn": "1.5", "amountOut": "225", "txHash": "sig"}]
    assert [e.seq for e in store.events_after(order.id, 3)] == [4, 5]


def test_an_event_breaking_the_status_rules_is_not_stored_and_the_batch_goes_on(store):
    a, _, _ = store.create_order(draft())
    b, _, _ = store.create_order(draft())
    results = store.append_events([
        EventDraft(a.id, "confirmed", 1, {}),  # skips the lifecycle
        EventDraft(b.id, "routing", 1, {}),
        EventDraft(uuid4(), "routing", 1, {}),  # no such order
    ])
    assert isinstance(results[0], StatusRuleError) and isinstance(results[2], StatusRuleError)
    assert results[1].seq == 2
    assert store.get_order(a.id).last_seq == 1 and store.get_order(a.id).status == "pending"


def test_a_terminal_order_never_changes(store):
    order, _, _ = store.create_order(draft())
    store.append_events([EventDraft(order.id, "failed", 1, {"error": {"code": "x", "message": "y"}})])
    (result,) = store.append_events([EventDraft(order.id, "routing", 2, {})])
    assert isinstance(result, StatusRuleError)
    assert store.get_order(order.id).error == {"code": "x", "message": "y"}


def test_client_order_id_repeats_find_the_same_order_and_a_different_body_conflicts(store):
    first, _, created = store.create_order(draft(client_order_id="k1"))
    same, _, again = store.create_order(draft(client_order_id="k1", amount=Decimal("1.50")))
    assert created and not again and same.id == first.id
    with pytest.raises(ClientOrderIdConflict):
        store.create_order(draft(client_order_id="k1", amount=Decimal("2")))
    other_owner, _, created = store.create_order(draft(client_order_id="k1", owner="someone-else"))
    assert created and other_owner.id != first.id


def test_racing_repeats_of_one_client_order_id_create_exactly_one_order(store):
    results, barrier = [], threading.Barrier(6)

    def submit():
        barrier.wait()
        results.append(store.create_order(draft(client_order_id="race")))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(created for _, _, created in results) == 1
    assert len({order.id for order, _, _ in results}) == 1


def test_a_batch_of_orders_is_stored_at_once_and_a_repeated_key_in_it_finds_the_first(store):
    existing = store.create_order(draft(client_order_id="old")).order
    results = store.create_orders([draft(), draft(client_order_id="k"), draft(client_order_id="k"),
                                   draft(client_order_id="old"), draft(client_order_id="old", amount=Decimal("9"))])
    fresh, first, repeat, old, conflict = results
    assert fresh.created and first.created and not repeat.created and not old.created
    assert repeat.order.id == first.order.id and old.order.id == existing.id
    assert isinstance(conflict, ClientOrderIdConflict)
    for result in (fresh, first):
        stored = store.get_order(result.order.id)
        assert [e.status for e in stored.events] == ["pending"] and stored.events[0] == result.pending
    assert sum(store.counts_by_status().values()) == 3


def test_a_batch_of_events_for_many_orders_is_checked_and_stored_in_one_transaction(store):
    a, b = store.create_order(draft()).order, store.create_order(draft()).order
    results = store.append_events([
        EventDraft(a.id, "routing", 1, {"bestDex": "raydium", "route": {"legs": []}}),
        EventDraft(b.id, "confirmed", 1, {}),  # breaks the rules: refused alone
        EventDraft(a.id, "building", 1, {"minAmountOut": "1"}),
        EventDraft(b.id, "routing", 1, {"note": "50% of it"}),  # a literal % in the rendered SQL
    ])
    assert [r.seq if not isinstance(r, Exception) else "refused" for r in results] == [2, "refused", 3, 2]
    assert results[3].published().to_api()["meta"] == {"note": "50% of it"}
    assert [e.status for e in store.get_order(a.id).events] == ["pending", "routing", "building"]
    assert store.get_order(a.id).route == {"legs": []}


def test_jobs_claim_their_orders_in_one_statement(store):
    fresh, running, taken = (store.create_order(draft()).order for _ in range(3))
    store.append_events([EventDraft(running.id, "routing", 1, {})])
    store.claim(taken.id, "someone-else")
    missing = uuid4()
    found = store.claim_many([(fresh.id, "j1"), (running.id, "j2"), (taken.id, "j3"), (missing, "j4")], "w1")
    assert [e.status for e in found[fresh.id].events] == ["pending"]
    assert [e.status for e in found[running.id].events] == ["pending", "routing"]
    assert found[taken.id] is False and found[missing] is None


def test_an_armed_order_taken_over_is_not_taken_back_by_the_worker_that_stalled(store):
    order = store.create_order(draft()).order
    armed = store.claim(order.id, "job-1", "stalled")  # it armed the order, then stalled
    taken = store.claim_many([(order.id, "job-1")], "other")[order.id]  # took the job over (same job id)
    assert taken.fence == armed.fence + 1
    # The stalled worker wakes and its book fires the order: its claim must not succeed...
    assert store.claim_many([(order.id, "job-1")], "stalled", held=frozenset({order.id}))[order.id] is False
    # ...while the worker that holds it now fires it as usual, and the fence is the one it raised.
    mine = store.claim_many([(order.id, "job-1")], "other", held=frozenset({order.id}))[order.id]
    assert mine.fence == taken.fence + 1


def test_every_claim_raises_the_fence_and_only_the_current_holder_may_append(store):
    from storage.errors import FencedOut

    order = store.create_order(draft()).order
    first = store.claim(order.id, "job-1", "w1")
    again = store.claim(order.id, "job-1", "w2")  # the same job taken over by another worker
    assert (first.fence, again.fence) == (1, 2)
    stale, current, by_the_web = store.append_events([
        EventDraft(order.id, "routing", 1, {}, fence=first.fence),
        EventDraft(order.id, "routing", 1, {}, fence=again.fence),
        EventDraft(order.id, "failed", 1, {"error": {"code": "x", "message": "y"}}),  # no fence: not a holder
    ])
    assert isinstance(stale, FencedOut) and current.seq == 2 and by_the_web.seq == 3


def test_the_pony_and_the_plain_sql_reads_give_equal_records_fence_included(store):
    """One mapping from a stored order to its record: the claim (plain SQL) and get_order,
    list_orders and a repeated clientOrderId (Pony) agree on every field, the fence too."""
    limit = draft(owner="k1", client_order_id="c1", type="limit", limit_price=Decimal("150.25"),
                  expires_in_seconds=600)
    confirmed, failed = (store.create_order(d).order for d in (limit, draft(owner="k1")))
    store.claim_many([(confirmed.id, "job-1"), (failed.id, "job-2")])
    route = {"legs": [{"dex": "raydium", "amountIn": "1.5"}], "amountOut": "225"}
    store.append_events([
        EventDraft(confirmed.id, "routing", 1, {"route": route}, fence=1),
        EventDraft(confirmed.id, "building", 1, {}, fence=1),
        EventDraft(confirmed.id, "submitted", 1, {"txHash": "sig"}, fence=1),
        EventDraft(confirmed.id, "confirmed", 1, {"txHash": "sig", "dex": "raydium", "amountIn": "1.5",
                                                  "amountOut": "225"}, fence=1),
        EventDraft(failed.id, "failed", 1, {"error": {"code": "x", "message": "y"}}, fence=1),
    ])
    by_sql = store.claim_many([(confirmed.id, "job-1"), (failed.id, "job-2")])  # the fence goes to 2
    assert {o.fence for o in by_sql.values()} == {2}
    assert by_sql[confirmed.id].route == route and by_sql[confirmed.id].fills and by_sql[failed.id].error
    listed = {o.id: o for o in store.list_orders("k1")[0]}
    repeated = store.create_order(limit).order  # found by its clientOrderId
    for oid, from_sql in by_sql.items():
        assert store.get_order(oid) == from_sql
        assert listed[oid] == store.get_order(oid, with_events=False) == replace(from_sql, events=None)
    assert repeated == replace(by_sql[confirmed.id], events=None)
    for record in (store.get_order(confirmed.id), listed[confirmed.id]):  # plain values, nothing of Pony's
        assert type(record.route) is dict and type(record.fills) is list and type(record.fills[0]) is dict


def test_unfinished_orders_come_oldest_first_from_before_a_time(store):
    from storage.records import utcnow

    old = store.create_order(draft()).order
    done = store.create_order(draft()).order
    store.append_events([EventDraft(done.id, "failed", 1, {"error": {"code": "x", "message": "y"}})])
    cutoff = utcnow()
    store.create_order(draft())  # too young
    rows = store.unfinished_orders(created_before=cutoff)
    assert [r[0] for r in rows] == [old.id]


def test_unfinished_orders_page_through_every_one_in_order(store):
    from storage.records import utcnow

    ids = [store.create_order(draft()).order.id for _ in range(7)]
    seen, after = [], None
    while page := store.unfinished_orders(created_before=utcnow(), limit=3, after=after):
        seen += [row[0] for row in page]
        after = (page[-1][3], page[-1][0])
    assert seen == ids, "each unfinished order once, oldest first, across pages"


def test_listing_is_newest_first_and_pages_with_a_cursor(store):
    ids = [store.create_order(draft()).__getitem__(0).id for _ in range(5)]
    page1, cursor = store.list_orders(None, limit=2)
    page2, cursor2 = store.list_orders(None, limit=2, cursor=cursor)
    page3, cursor3 = store.list_orders(None, limit=2, cursor=cursor2)
    assert [o.id for o in page1 + page2 + page3] == list(reversed(ids))
    assert cursor3 is None
    assert store.list_orders(None, status="confirmed")[0] == []
    with pytest.raises(BadCursor):
        store.list_orders(None, cursor="not-a-cursor")


def test_a_job_claims_its_order_and_a_duplicate_job_is_refused(store):
    order, _, _ = store.create_order(draft())
    claimed = store.claim(order.id, "job-1")
    assert claimed.id == order.id and [e.status for e in claimed.events] == ["pending"]
    store.append_events([EventDraft(order.id, "routing", 1, {"bestDex": "raydium"})])
    resumed = store.claim(order.id, "job-1")  # the same job, claimed by another worker, resumes
    assert [e.status for e in resumed.events] == ["pending", "routing"] and resumed.status == "routing"
    assert resumed.events == store.get_order(order.id).events
    assert store.claim(order.id, "job-2") is None
    with pytest.raises(OrderNotFound):
        store.claim(uuid4(), "job-3")


def test_an_unmigrated_database_is_refused_with_a_clear_message(empty_database_settings):
    with pytest.raises(SchemaNotMigrated, match="engine migrate"):
        open_database(empty_database_settings)


def test_a_shared_secret_is_created_once_whoever_asks_first(store):
    from concurrent.futures import ThreadPoolExecutor

    from storage.secrets import shared_secret

    with ThreadPoolExecutor(4) as pool:  # processes starting together race to create it
        secrets = set(pool.map(lambda _: shared_secret(store.db), range(8)))
    assert len(secrets) == 1 and len(secrets.pop()) == 32


def test_the_protective_orders_fields_are_stored_read_back_and_shown_as_submitted(store):
    stop_limit = store.create_order(draft(type="stop_loss", stop_price=Decimal("100"),
                                          stop_limit_price=Decimal("95"))).order
    trailing = store.create_order(draft(type="trailing_stop", trail_percent=Decimal("2.5"))).order
    by_price = store.create_order(draft(type="trailing_stop", trail_amount=Decimal("3.50"))).order
    oco = store.create_order(draft(type="oco", limit_price=Decimal("200"), stop_price=Decimal("100"),
                                   stop_limit_price=Decimal("90"))).order
    read = {o.id: store.get_order(o.id) for o in (stop_limit, trailing, oco)}
    assert read[stop_limit.id].stop_limit_price == Decimal("95")
    assert read[trailing.id].trail_percent == Decimal("2.5")
    kept = store.get_order(by_price.id)
    assert (kept.trail_amount, kept.trail_percent) == (Decimal("3.5"), None) and read[trailing.id].trail_amount is None
    assert kept.to_api()["trailAmount"] == "3.5" and "trailPercent" not in kept.to_api()
    assert store.list_orders(None, type="trailing_stop")[0][0].trail_amount == Decimal("3.5")  # newest first
    api = read[oco.id].to_api()
    assert api["takeProfit"] == {"targetPrice": "200"} and api["stopLoss"] == {"stopPrice": "100", "limitPrice": "90"}
    assert api["limitPrice"] is None and "stopPrice" not in api
    assert read[stop_limit.id].to_api()["limitPrice"] == "95" and read[trailing.id].to_api()["trailPercent"] == "2.5"
    page, _ = store.list_orders(None, type="oco")
    assert [o.id for o in page] == [oco.id] and page[0].stop_limit_price == Decimal("90")
    # A trailing stop's trigger moves while it waits: `waiting` may follow `waiting`.
    (first, again) = store.append_events([EventDraft(trailing.id, "waiting", 1, {"highWater": "1"}),
                                          EventDraft(trailing.id, "waiting", 1, {"highWater": "2"})])
    assert (first.seq, again.seq) == (2, 3) and store.get_order(trailing.id).status == "waiting"
