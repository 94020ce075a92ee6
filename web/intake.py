"""OrderIntake: submits that arrive together share one transaction and one Redis pipeline.

Validated orders are gathered on the IOLoop (`web.loop_batches.LoopBatcher`): every request
parsed in one loop turn joins the batch. The intake thread stores the batch (one statement:
the orders and their `pending` events), queues the jobs, publishes the `pending` events and
reads the queue depth (one pipeline), and hands the results back in one hop. Each response
still answers only after its own order is stored and queued (or handed to the requeuer,
below). While a batch is in flight the next one gathers: under load a batch holds what
arrived during one commit.

Risk limits (storage/risk.py) are checked here for new orders only (a retry or a re-queue never
comes through the intake): what the order alone decides before storage, the open-orders and 24 h
notional limits in the store's insert transaction, under a lock per owner. An owner without
limits costs nothing more.

The stored order is the commit point: an order whose row is committed is answered 202 even
when its queue write then fails (`web.requeue.Requeuer` queues it again), and a 503 means
nothing was stored.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from config import find_token
from storage.errors import BusError
from storage.orders import Created
from storage.records import EventRecord, OrderDraft
from storage.risk import NO_LIMITS, LimitsProvider, RiskLimitExceeded, RiskLimits, RiskTicket, screen
from storage.runtime import Storage
from web.errors import ApiError, ValidationError
from web.loop_batches import LoopBatcher
from web.requeue import Requeuer

MAX_BATCH = 256
MAX_WAITING = 4096  # submits waiting for the next batch; beyond, 503 (storage is stuck or slow)
QUEUE_DEPTH_TTL_S = 0.1


class OrderIntake:
    """Stores and queues submitted orders in batches; `submit` is called on the IOLoop thread."""

    def __init__(self, storage: Storage, queue_max_depth: int,
                 on_pending: Callable[[list[EventRecord]], None] = lambda events: None,
                 queue_max_wait_s: float = 0.0, limits_for: LimitsProvider = lambda owner: NO_LIMITS,
                 batch_wait_s: float = 0.0):
        self._storage = storage
        self._max_depth = queue_max_depth
        self._max_wait_s = queue_max_wait_s  # 0: market orders are never refused as overloaded
        self._on_pending = on_pending  # IOLoop thread: the pending events of a stored batch
        self._limits_for = limits_for  # intake thread: an owner's risk limits
        self._batches: LoopBatcher[OrderDraft, Created] = LoopBatcher(
            self._process, "web-intake", MAX_BATCH, MAX_WAITING, on_results=self._stored, wait_s=batch_wait_s)
        self._stats = (0, 0.0, float("-inf"))  # (queue depth, oldest job's age, monotonic time read)
        self._requeue = Requeuer(storage.bus, on_queued=self._read_stats)

    async def submit(self, draft: OrderDraft) -> Created:
        """Store and queue one order with the others of its batch (IOLoop thread)."""
        return await self._batches.submit(draft)

    def _stored(self, drafts: list[OrderDraft], results: list) -> None:
        """IOLoop thread: the hub keeps the new orders' `pending` events for their listeners."""
        pending = [r.pending for r in results if isinstance(r, Created) and r.pending is not None]
        if pending:
            self._on_pending(pending)

    # ---- intake thread ------------------------------------------------------------------

    def _process(self, drafts: list[OrderDraft]) -> list[Created | Exception]:
        """Check, store, queue and announce a batch; per draft its Created or its error."""
        results: list[Created | Exception | None] = [self._check(draft) for draft in drafts]
        tickets = self._screen(drafts, results)
        if self._requeue.waiting:  # stored orders wait for the bus: store no more until it takes them
            refused = BusError("the queue is not taking orders now (orders stored earlier wait for it)")
            return [r if r is not None else refused for r in results]
        self._check_queue(drafts, results)
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            batch = [drafts[i] for i in todo]
            stored = (self._storage.orders.create_orders(batch, tickets=[tickets[i] for i in todo]) if tickets
                      else self._storage.orders.create_orders(batch))
            for i, result in zip(todo, stored):
                results[i] = result
            self._queue([r for r in stored if isinstance(r, Created) and r.created], results)
        return results

    def _check(self, draft: OrderDraft) -> ApiError | None:
        """A token that has not launched: only a sniper order may wait for it, and only one of
        its two tokens may be such a token."""
        chain = self._storage.chain
        closed = [(field, symbol) for field, symbol in (("tokenIn", draft.token_in), ("tokenOut", draft.token_out))
                  if not chain.is_tradable(find_token(symbol))]
        if not closed or (draft.type == "sniper" and len(closed) == 1):
            return None
        field, symbol = closed[-1]
        return ValidationError("invalid_field", f"{symbol} is not tradable yet (it has not launched): only a "
                                                f"sniper order can wait for its launch", field)

    def _screen(self, drafts: list[OrderDraft], results: list) -> list[RiskTicket | None] | None:
        """Risk limits, what the order alone decides (its value, maxOrderUsd: refusals go into
        `results`); per draft the ticket the store decides the kept limits with, or None when
        no owner of the batch has any (then the store does nothing more than without limits)."""
        tickets: list[RiskTicket | None] | None = None
        limits_of: dict[str, RiskLimits] = {}
        for i, draft in enumerate(drafts):
            if results[i] is not None:
                continue
            limits = limits_of.get(draft.owner)
            if limits is None:
                limits = limits_of[draft.owner] = self._limits_for(draft.owner)
            if not limits.any:
                continue
            outcome = screen(draft, limits, self._storage.oracle)
            if isinstance(outcome, RiskLimitExceeded):
                results[i] = outcome
            elif limits.kept:
                tickets = tickets or [None] * len(drafts)
                tickets[i] = outcome
        return tickets

    def _check_queue(self, drafts: list[OrderDraft], results: list) -> None:
        """Refuse what would overfill the queue (`queue_full`), and new market orders while its
        oldest job has waited longer than `queue_max_wait_s` (`overloaded`: better refused now
        than failed `stale_order` later; armed and running orders are not affected), by the
        stats the last pipeline read (no round trip of its own; read afresh only when they
        would refuse and are older than the TTL)."""
        wanted = sum(1 for r in results if r is None)
        depth, age, read_at = self._stats
        if depth:  # the oldest job then has waited that much longer now, unless it started meanwhile
            age += time.monotonic() - read_at
        refuses = depth + wanted > self._max_depth or (self._max_wait_s and age > self._max_wait_s)
        if wanted and refuses and time.monotonic() - read_at > QUEUE_DEPTH_TTL_S:
            stats = self._storage.bus.queue_stats()
            depth, age = stats.depth, stats.oldest_age_s
            self._read_stats(depth, age)
        overloaded = bool(self._max_wait_s) and age > self._max_wait_s
        room = self._max_depth - depth
        for i, (draft, result) in enumerate(zip(drafts, results)):
            if result is not None:
                continue
            if overloaded and draft.type == "market":
                retry_after = str(min(30, max(1, math.ceil(age - self._max_wait_s))))
                results[i] = ApiError(503, "overloaded", f"the queue's oldest order has waited {age:.0f} s "
                                      f"(more than {self._max_wait_s:g} s): retry later",
                                      headers={"Retry-After": retry_after})
            elif room <= 0:
                results[i] = ApiError(503, "queue_full", "too many orders are waiting to start; retry later")
            else:
                room -= 1

    def _queue(self, created: list[Created], results: list) -> None:
        """Queue the new orders and publish their pending events. They are stored, so they
        are accepted whatever the bus answers: a failed write (even one whose reply was lost
        after the jobs were added) goes to the requeuer."""
        if not created:
            return
        try:
            accepted = self._storage.bus.accept([str(c.order.id) for c in created],
                                                [c.pending.published() for c in created])
        except BusError as exc:
            self._requeue.add(created, exc)
            return
        self._read_stats(accepted.queue_depth, accepted.oldest_age_s)

    def _read_stats(self, depth: int, oldest_age_s: float) -> None:
        self._stats = (depth, oldest_age_s, time.monotonic())

    def close(self) -> None:
        """Let the intake thread go (a batch in flight finishes), and the requeuer's."""
        self._batches.close()
        self._requeue.close()
