"""ScheduleBook: the twap and dca parents this worker schedules; one thread for all of them.

A parent's job is claimed like any order's; the router hands the parent here (`Adopt`) and
frees its slot, and the job stays pending with this worker until the parent ends, so when
the worker dies another one claims the job and adopts the parent again (as armed orders do).
Nothing of the schedule lives only here: which slices exist, and when the next is due, are
read from the database on every tick (`storage.schedule_plan`), so the successor resumes
where the dead worker stopped.

A child is created with the same insert as a submitted order and queued like one, so it runs
under the same concurrency and rate limits, halts and retries. Its (parent, slice) is unique
in the database: a slice created twice (a worker that stalled, then woke while another
resumed its parents) inserts nothing the second time. A child created and not yet queued when
its worker died is queued again by the successor (a second job for an order is harmless: the
first claim binds it) or by the reconciler.

The parent's events carry its claim's fence: once another worker has claimed the parent,
this book's appends are refused and it forgets the parent.

Ticks: one timer at a time, for the earliest due slice or `TICK_S` while any parent is held
(to report children that settled); no parent holds a thread or a timer of its own.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import pykka

from storage import schedule_plan as plan
from actors.supervision import SupervisedActor
from config.logs import about_order
from storage.bus import Job
from storage.errors import StorageError
from storage.orders import Created
from storage.records import EventDraft, EventRecord, OrderDraft, OrderRecord, iso, utcnow

log = logging.getLogger(__name__)

TICK_S = 0.25  # how soon a settled child shows in its parent's progress


@dataclass(frozen=True)
class Adopt:
    """Schedule this claimed parent (its job stays pending with this worker until it ends)."""

    order: OrderRecord
    job: Job


@dataclass(frozen=True)
class _Tick:
    """Self-sent through the timers: read the parents and their children, act."""


@dataclass
class _Held:
    order: OrderRecord  # as claimed: its fence is this book's right to act for it
    job: Job
    reported: int = 0  # children settled as of the last progress event
    queued: set[UUID] = field(default_factory=set)  # children queued by this book


class ScheduleBook(SupervisedActor):
    """Creates the children of the held parents when due and reports their progress."""

    child_name = "schedule_book"

    def __init__(self, orders, bus, timers, supervisor=None, tick_s: float = TICK_S):
        super().__init__(supervisor)
        self.orders = orders
        self.bus = bus
        self.timers = timers
        self.tick_s = tick_s
        self.held: dict[UUID, _Held] = {}
        self.timer = None
        self.timer_due = float("inf")

    def on_receive(self, message):
        """Runs on the book's thread."""
        if isinstance(message, Adopt):
            self._adopt(message)
            self._wake(0.0)
        elif isinstance(message, _Tick):
            self.timer, self.timer_due = None, float("inf")
            try:
                wait = self._tick()
            except StorageError as exc:  # the database or the bus is away: the schedule waits for it
                log.warning("schedule book: %s; trying again", exc)
                wait = 1.0
            if self.held:
                self._wake(min(wait, self.tick_s))

    def _adopt(self, message: Adopt) -> None:
        order = message.order
        reported = max((e.meta.get("progress", {}).get("settled", 0) for e in order.events or ()
                        if e.status == "scheduled"), default=0)
        self.held[order.id] = _Held(order, message.job, reported)
        log.info("schedule book: %s parent %s adopted", order.type, order.id, extra=about_order(str(order.id)))

    def _tick(self) -> float:
        """Act for every held parent; the seconds until the earliest slice due."""
        ids = list(self.held)
        parents = self.orders.orders_by_id(ids)
        children = self.orders.children_of(ids)
        now = utcnow()
        wait = float("inf")
        for oid in ids:
            held = self.held[oid]
            parent = parents.get(oid)
            if parent is None or parent.fence != held.order.fence:  # gone, or claimed by another worker
                self.held.pop(oid, None)
                continue
            try:
                wait = min(wait, self._step(held, parent, children.get(oid, []), now))
            except StorageError:
                raise
            except Exception as exc:  # a parent this code cannot schedule fails; it never stops the book
                log.exception("schedule book: parent %s cannot be scheduled", oid, extra=about_order(str(oid)))
                error = {"code": "internal_error", "message": f"its schedule failed: {exc!r}"}
                if self._append(held, "failed", {"error": error, "attempts": 1}):
                    self._ended(held, parent, children.get(oid, []))  # its unstarted children, its job
                self.held.pop(oid, None)
        return wait

    def _step(self, held: _Held, parent: OrderRecord, children: list[OrderRecord], now: datetime) -> float:
        if parent.terminal:
            return self._ended(held, parent, children)
        if parent.status == "pending":
            meta = {"phase": "scheduled", **(parent.schedule or {}), "startAt": iso(parent.created_at),
                    "progress": plan.progress(parent, children)}
            if not self._append(held, "scheduled", meta):
                return float("inf")
        self._queue_unqueued(held, children)
        settled = sum(1 for c in children if c.terminal)
        if settled > held.reported:
            figures = plan.progress(parent, children)
            if not self._append(held, "scheduled", {"phase": "progress", "progress": figures}):
                return float("inf")
            held.reported = settled
        if len(children) == plan.slice_count(parent) and settled == len(children):
            return self._finish(held, parent, children)
        due = plan.due_at(parent, children)
        if due is None or parent.paused:
            return float("inf")
        if due <= now:
            self._create(held, parent, len(children))
            return 0.0  # the next slice may be due already (a schedule resumed late)
        return (due - now).total_seconds()

    def _create(self, held: _Held, parent: OrderRecord, index: int) -> None:
        """Store child `index` (nothing if it exists) and queue it with its pending event."""
        limit = parent.limit_price is not None
        draft = OrderDraft(token_in=parent.token_in, token_out=parent.token_out,
                           amount=plan.slice_amount(parent, index), type="limit" if limit else "market",
                           slippage_bps=parent.slippage_bps, limit_price=parent.limit_price,
                           expires_in_seconds=plan.child_expiry(parent) if limit else None,
                           owner=parent.owner, callback_url=parent.callback_url,
                           parent_id=parent.id, slice_index=index)
        (result,) = self.orders.create_orders([draft])
        if not isinstance(result, Created) or not result.created:
            return  # created before (by a worker that held the parent earlier): the next tick reads it
        # The parent may have been cancelled (or claimed elsewhere) since this tick read it, its
        # cancel's sweep of the children just before this one was stored: read it again now that
        # the child is. Still running: the child is queued (a cancel from now on finds it). Not:
        # the child ends here, never queued, so it cannot start after its parent ended.
        now = self.orders.orders_by_id([parent.id]).get(parent.id)
        if now is None or now.terminal or now.fence != held.order.fence:
            self._publish([r for r in self.orders.append_events(
                [EventDraft(result.order.id, "cancelled", 1, {"reason": "its parent order ended"})])
                if isinstance(r, EventRecord)])
            log.info("schedule book: parent %s ended as slice %d was created: the child is cancelled", parent.id,
                     index, extra=about_order(str(parent.id)))
            return
        self.bus.accept([str(result.order.id)], [result.pending.published()])
        held.queued.add(result.order.id)
        log.info("schedule book: parent %s slice %d: child %s queued", parent.id, index, result.order.id,
                 extra=about_order(str(parent.id)))

    def _queue_unqueued(self, held: _Held, children: list[OrderRecord]) -> None:
        """Children still pending that this book did not queue (a worker died between storing one
        and queueing it): queue them again once; the first job to claim a child binds it."""
        lost = [c for c in children if c.status == "pending" and c.id not in held.queued]
        for child in lost:
            self.bus.enqueue(str(child.id))
            held.queued.add(child.id)

    def _finish(self, held: _Held, parent: OrderRecord, children: list[OrderRecord]) -> float:
        """Every slice settled: `completed` if any child executed, else `failed`."""
        figures = plan.progress(parent, children)
        if figures["confirmed"]:
            self._append(held, "completed", {"phase": "completed", "progress": figures})
        else:
            error = {"code": "children_failed", "message": "no child order of this schedule executed"}
            self._append(held, "failed", {"error": error, "attempts": 1, "progress": figures})
        return self._ended(held, parent, children)

    def _ended(self, held: _Held, parent: OrderRecord, children: list[OrderRecord]) -> float:
        """The parent ended (cancelled by its owner, say): cancel its children that have not
        started (the cancel's own sweep may have missed one created at that instant), ack its job."""
        self._publish(self.orders.cancel_unstarted(children, "its parent order ended"))
        self.held.pop(parent.id, None)
        try:
            self.bus.ack(held.job)
        except StorageError as exc:  # it stays pending with us; whoever claims it finds the parent ended
            log.warning("schedule book: ack of %s failed: %s", held.job.job_id, exc)
        return float("inf")

    def _append(self, held: _Held, status: str, meta: dict[str, Any]) -> bool:
        """Append one of the parent's events under its claim; False (and forgotten) when refused."""
        order = held.order
        (result,) = self.orders.append_events([EventDraft(order.id, status, 1, meta, fence=order.fence)])
        if isinstance(result, Exception):
            log.info("schedule book: parent %s: %s refused (%s); forgotten", order.id, status, result,
                     extra=about_order(str(order.id)))
            self.held.pop(order.id, None)
            return False
        self._publish([result])
        return True

    def _publish(self, records: list[EventRecord]) -> None:
        if not records:
            return
        try:
            self.bus.publish([r.published() for r in records])
        except StorageError as exc:  # listeners find the stored events (gap fill)
            log.warning("schedule book: publishing %d events failed: %s", len(records), exc)

    def _wake(self, delay: float) -> None:
        """One timer: moved earlier when something is due sooner."""
        due = time.monotonic() + max(delay, 0.0)
        if due >= self.timer_due:
            return
        if self.timer is not None:
            self.timer.cancel()
        ref = self.actor_ref
        self.timer_due = due
        self.timer = self.timers.call_later(max(delay, 0.0), lambda: _tell(ref, _Tick()))

    def leftovers(self) -> list:
        """Runs on the book's thread as it dies: the held parents go to its successor."""
        return [Adopt(held.order, held.job) for held in self.held.values()]


def _tell(ref, message) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass
