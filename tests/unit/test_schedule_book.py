"""The ScheduleBook built without starting it (the Mopidy way) and fed messages in the order the
test chooses, with doubles for the order store, the bus and the timers."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

from actors.schedule_book import Adopt, ScheduleBook, _Tick
from storage.bus import Job
from storage.errors import FencedOut
from storage.orders import Created, OrderStore
from storage.records import EventRecord, OrderRecord, utcnow


def record(**fields) -> OrderRecord:
    now = utcnow()
    base = dict(id=uuid4(), owner="k", status="pending", type="twap", token_in="SOL", token_out="USDC",
                amount=Decimal(1), slippage_bps=50, limit_price=None, expires_in_seconds=None,
                client_order_id=None, created_at=now, updated_at=now, attempts=0, attempt=1, last_seq=1,
                route=None, fills=[], error=None, fence=1)
    return OrderRecord(**{**base, **fields})


class Store:
    """Stands for the order store: one parent, its children (unique by slice), appended events."""

    def __init__(self, parent: OrderRecord):
        self.parent = parent
        self.children: dict[int, OrderRecord] = {}
        self.events: list[tuple[str, dict]] = []

    def orders_by_id(self, ids):
        return {self.parent.id: self.parent}

    def children_of(self, ids):
        return {self.parent.id: [self.children[i] for i in sorted(self.children)]}

    def create_orders(self, drafts):
        (draft,) = drafts
        if draft.slice_index in self.children:  # the unique (parent_id, slice_index)
            return [Created(self.children[draft.slice_index], None, False)]
        child = record(type=draft.type, amount=draft.amount, parent_id=draft.parent_id,
                       slice_index=draft.slice_index)
        self.children[draft.slice_index] = child
        return [Created(child, EventRecord(child.id, 1, "pending", 1, child.created_at, {}, "k"), True)]

    def append_events(self, drafts):
        results = []
        for d in drafts:
            if d.fence is not None and d.fence != self.parent.fence:
                results.append(FencedOut("claimed again"))
                continue
            if d.order_id == self.parent.id:
                self.events.append((d.status, d.meta))
                self.parent = replace(self.parent, status=d.status)
            results.append(EventRecord(d.order_id, 2, d.status, 1, d.timestamp, d.meta, "k"))
        return results

    cancel_unstarted = OrderStore.cancel_unstarted  # the store's own, on these appends

    def settle(self, status: str, fill: dict | None = None):
        for i, child in self.children.items():
            if not child.terminal:
                self.children[i] = replace(child, status=status, fills=[fill] if fill else [])


class Bus:
    def __init__(self):
        self.accepted, self.enqueued, self.acked, self.published = [], [], [], []

    def accept(self, ids, events):
        self.accepted += ids

    def enqueue(self, order_id):
        self.enqueued.append(order_id)

    def ack(self, *jobs):
        self.acked += jobs

    def publish(self, events):
        self.published += events


class Timers:
    def call_later(self, delay, callback):
        return type("Handle", (), {"cancel": lambda self: None})()


def book_for(parent: OrderRecord):
    store, bus = Store(parent), Bus()
    book = ScheduleBook(store, bus, Timers())
    book.on_receive(Adopt(parent, Job("job-1", str(parent.id))))
    return book, store, bus


def test_every_due_slice_is_created_once_even_when_a_tick_repeats_after_a_takeover():
    start = utcnow() - timedelta(seconds=100)  # every slice is overdue: a schedule resumed late
    parent = record(created_at=start, schedule={"durationSeconds": 10, "slices": 3})
    book, store, bus = book_for(parent)
    for _ in range(5):
        book.on_receive(_Tick())
    assert sorted(store.children) == [0, 1, 2] and len(bus.accepted) == 3
    assert sum(c.amount for c in store.children.values()) == Decimal(1)
    bus2 = Bus()  # another worker adopts it from the same store: it finds the slices made
    successor = ScheduleBook(store, bus2, Timers())
    successor.on_receive(Adopt(store.parent, Job("job-1", str(parent.id))))
    successor.on_receive(_Tick())
    assert len(store.children) == 3 and bus2.accepted == []


def test_a_parent_whose_children_all_failed_fails_and_one_with_a_fill_completes():
    for outcome, fill, final in (("failed", None, "failed"),
                                 ("confirmed", {"dex": "raydium", "amountIn": "0.5", "amountOut": "70",
                                                "txHash": "t"}, "completed")):
        parent = record(created_at=utcnow() - timedelta(seconds=60), schedule={"durationSeconds": 2, "slices": 2})
        book, store, bus = book_for(parent)
        book.on_receive(_Tick())
        book.on_receive(_Tick())
        store.settle(outcome, fill)
        book.on_receive(_Tick())
        assert store.events[-1][0] == final, store.events
        assert bus.acked == [Job("job-1", str(parent.id))] and not book.held
        if final == "failed":
            assert store.events[-1][1]["error"]["code"] == "children_failed"


def test_a_parent_claimed_by_another_worker_is_forgotten_and_its_job_left_alone():
    parent = record(schedule={"intervalSeconds": 60, "count": 3}, type="dca")
    book, store, bus = book_for(parent)
    store.parent = replace(store.parent, fence=2)  # claimed again elsewhere
    book.on_receive(_Tick())
    assert not book.held and store.children == {} and bus.acked == []


def test_a_paused_dca_creates_nothing_and_a_cancelled_parent_cancels_its_unstarted_child():
    parent = record(schedule={"intervalSeconds": 60, "count": 3}, type="dca", paused=True)
    book, store, bus = book_for(parent)
    book.on_receive(_Tick())
    assert store.children == {} and store.events[0][0] == "scheduled"
    store.parent = replace(store.parent, paused=False)
    book.on_receive(_Tick())
    assert list(store.children) == [0]
    store.parent = replace(store.parent, status="cancelled")
    cancelled = []
    store.append_events = lambda drafts: cancelled.extend(drafts) or []
    book.on_receive(_Tick())
    assert [d.order_id for d in cancelled] == [store.children[0].id] and bus.acked


def test_a_parent_the_book_cannot_schedule_fails_and_the_book_goes_on():
    parent = record(schedule={"slices": 2})  # no duration: a schedule this code cannot run
    book, store, bus = book_for(parent)
    book.on_receive(_Tick())
    status, meta = store.events[-1]
    assert status == "failed" and meta["error"]["code"] == "internal_error"
    assert not book.held and bus.acked == [Job("job-1", str(parent.id))]


def test_a_child_created_as_its_parent_is_cancelled_is_cancelled_and_never_queued():
    """The owner's cancel lands between the tick's read of the parent and the child's insert:
    the cancel's sweep of the children ran before the child existed. The book reads the parent
    again once the child is stored, so the child never starts after its parent ended."""
    parent = record(created_at=utcnow() - timedelta(seconds=100), schedule={"durationSeconds": 10, "slices": 3})
    book, store, bus = book_for(parent)
    book.on_receive(_Tick())  # scheduled, slice 0 created and queued, and the next ones are due
    assert len(bus.accepted) >= 1
    queued = list(bus.accepted)
    insert = store.create_orders
    cancelled = []

    def cancelled_meanwhile(drafts):
        store.parent = replace(store.parent, status="cancelled")  # the owner's cancel commits here
        created = insert(drafts)
        cancelled.append(created[0].order.id)
        return created

    store.create_orders = cancelled_meanwhile
    store.append_events_seen = []
    append = store.append_events

    def recording(drafts):
        store.append_events_seen += [(d.order_id, d.status) for d in drafts]
        return append(drafts)

    store.append_events = recording
    book._create(book.held[parent.id], parent, len(store.children))
    assert bus.accepted == queued, "the child made after the cancel is never queued"
    assert (cancelled[0], "cancelled") in store.append_events_seen
