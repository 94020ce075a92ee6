"""OrderIntake: submits that arrive together share one transaction and one Redis pipeline.

Validated orders are gathered on the IOLoop (`web.loop_batches.LoopBatcher`): every request
parsed in one loop turn joins the batch. The intake thread stores the batch (one statement:
the orders and their `pending` events), queues the jobs, publishes the `pending` events and
reads the queue depth (one pipeline), and hands the results back in one hop. Each response
still answers only after its own order is stored and queued (or handed to the requeuer,
below). While a batch is in flight the next one gathers: under load a batch holds what
arrived during one commit.

The stored order is the commit point: an order whose row is committed is answered 202 even
when its queue write then fails (`web.requeue.Requeuer` queues it again), and a 503 means
nothing was stored.
"""
from __future__ import annotations

import time
from typing import Callable

from config import find_token
from storage.errors import BusError
from storage.orders import Created
from storage.records import EventRecord, OrderDraft
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
                 on_pending: Callable[[list[EventRecord]], None] = lambda events: None):
        self._storage = storage
        self._max_depth = queue_max_depth
        self._on_pending = on_pending  # IOLoop thread: the pending events of a stored batch
        self._batches: LoopBatcher[OrderDraft, Created] = LoopBatcher(
            self._process, "web-intake", MAX_BATCH, MAX_WAITING, on_results=self._stored)
        self._depth = (0, float("-inf"))  # (queue depth, monotonic time it was read)
        self._requeue = Requeuer(storage.bus, on_queued=self._read_depth)

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
        if self._requeue.waiting:  # stored orders wait for the bus: store no more until it takes them
            refused = BusError("the queue is not taking orders now (orders stored earlier wait for it)")
            return [r if r is not None else refused for r in results]
        self._check_depth(results)
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            stored = self._storage.orders.create_orders([drafts[i] for i in todo])
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

    def _check_depth(self, results: list) -> None:
        """Refuse what would overfill the queue, by the depth the last pipeline read (no round
        trip of its own; read afresh only when it would refuse on a value older than the TTL)."""
        wanted = sum(1 for r in results if r is None)
        depth, read_at = self._depth
        if wanted and depth + wanted > self._max_depth and time.monotonic() - read_at > QUEUE_DEPTH_TTL_S:
            depth = self._storage.bus.queue_depth()
            self._depth = (depth, time.monotonic())
        room = self._max_depth - depth
        for i, result in enumerate(results):
            if result is None:
                if room <= 0:
                    results[i] = ApiError(503, "queue_full", "too many orders are waiting to start; retry later")
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
        self._read_depth(accepted.queue_depth)

    def _read_depth(self, depth: int) -> None:
        self._depth = (depth, time.monotonic())

    def close(self) -> None:
        """Let the intake thread go (a batch in flight finishes), and the requeuer's."""
        self._batches.close()
        self._requeue.close()
