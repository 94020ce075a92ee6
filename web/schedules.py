"""Pause and resume a dca order's schedule: `POST /api/orders/{orderId}/pause` and `/resume`.

As for a cancel: an order that is not the caller's is not found (404), so one key never acts
on another's order. Pausing stops the creation of children (a child already created runs);
resuming lets the next one be created at once if it is overdue, then every interval again.
Both answer 200 with the order as `GET` shows it, also when it is paused (or running) already;
409 for an order that is not a dca or has ended. The change is an event of the parent
(`scheduled`, `meta.phase` `paused` or `resumed`), stored under the status rules, so a pause
racing the parent's end has one winner.
"""
from __future__ import annotations

from uuid import UUID

from storage.records import EventDraft
from web.base import ApiHandler
from web.errors import ApiError
from web.orders import _publish, parent_view, parse_order_id


class PauseHandler(ApiHandler):
    """`POST /api/orders/{orderId}/pause`: a dca order creates no more children until resumed."""

    paused = True

    async def post(self, order_id: str) -> None:
        oid = self.log_order_id = parse_order_id(order_id)
        order = await self.services.run(set_paused, self.storage, oid, self.owner, self.paused)
        data = order.to_api()
        data.update(await self.services.run(parent_view, self.storage, order))
        self.write_json(data)


class ResumeScheduleHandler(PauseHandler):
    """`POST /api/orders/{orderId}/resume`: a paused dca order's schedule goes on."""

    paused = False


def set_paused(storage, oid: UUID, owner: str | None, paused: bool):
    """Executor thread: pause or resume the owner's dca order; the order after."""
    orders = storage.orders
    order = orders.get_order(oid, owner, with_events=False)  # another key's order: 404
    if order.type != "dca":
        raise ApiError(409, "conflict", "only a dca order can be paused and resumed")
    if order.paused != paused:
        if order.terminal:
            raise ApiError(409, "conflict", f"the order is {order.status}: its schedule has ended")
        orders.set_paused(oid, paused)
        status = order.status if order.status == "scheduled" else "scheduled"
        (result,) = orders.append_events([EventDraft(oid, status, order.attempt,
                                                     {"phase": "paused" if paused else "resumed"})])
        if isinstance(result, Exception):  # it ended meanwhile: undo, and say so
            orders.set_paused(oid, order.paused)
            raise ApiError(409, "conflict", "the order has ended: its schedule cannot change")
        _publish(storage, result)
    return orders.get_order(oid, owner, with_events=False)
