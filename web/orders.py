"""Order endpoints: submit (`POST /api/orders/execute`), read one, list."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from config.logs import about_order
from storage.errors import BusError, ClientOrderIdConflict
from storage.orders import BadCursor
from storage.records import EventDraft, OrderRecord, ms_since
from storage.status import STATUSES
from web.base import ApiHandler, JsonBodyHandler, Services
from web.errors import ApiError, ValidationError, not_found
from web.halted import TradingHalted, halt_covering
from web.validation import ORDER_TYPES, parse_int_param, parse_order, single_params

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Acceptance:
    """The outcome of a submit: the order and whether this request created it."""

    order: OrderRecord
    created: bool

    def to_api(self) -> dict[str, Any]:
        """The submit answer's body (status: `pending` when created, else the status now)."""
        order_id = str(self.order.id)
        return {
            "orderId": order_id,
            "status": "pending" if self.created else self.order.status,
            "clientOrderId": self.order.client_order_id,
            "links": {"self": f"/api/orders/{order_id}", "ws": f"/ws?orderId={order_id}"},
        }


async def submit_order(services: Services, body: bytes | str, owner: str = "") -> Acceptance:
    """Validate, store and queue one order (HTTP and WebSocket submits); raise ApiError."""
    draft = parse_order(body, owner)
    halt = halt_covering(services.halts.current, draft)
    if halt is not None:
        return await _while_halted(services, draft, halt)
    created = await services.intake.submit(draft)
    return Acceptance(created.order, created.created)


async def _while_halted(services: Services, draft, halt) -> Acceptance:
    """A halt covers this order: 503 `trading_halted`, nothing stored. A repeat of an order
    accepted before the halt (its clientOrderId) is still answered as a repeat (200), so a
    client retrying a lost answer learns that its order exists."""
    if draft.client_order_id is not None:
        existing = await services.run(services.storage.orders.find_by_client_id, draft.owner,
                                      draft.client_order_id)
        if existing is not None:
            if not draft.same_order_as(existing):
                raise ClientOrderIdConflict(existing)
            return Acceptance(existing, False)
    raise TradingHalted(halt)


class SubmitHandler(JsonBodyHandler):
    """`POST /api/orders/execute` (a GET without WebSocket upgrade lands here too: 405)."""

    counts_submissions = True

    async def post_json(self) -> None:
        accepted = await submit_order(self.services, self.body, self.owner or "")
        self.log_order_id = accepted.order.id
        self.write_json(accepted.to_api(), 202 if accepted.created else 200)


def parse_order_id(text: str) -> UUID:
    """An order id from a path or parameter; anything that is not a UUID is simply not found."""
    try:
        return UUID(text)
    except ValueError:
        raise not_found("no such order") from None


class OrderHandler(ApiHandler):
    """`GET /api/orders/{orderId}`: the order with its events (404 for another key's order)."""

    async def get(self, order_id: str) -> None:
        oid = self.log_order_id = parse_order_id(order_id)
        order = await self.services.run(self.storage.orders.get_order, oid, self.owner)
        self.write_json(order.to_api())


class CancelHandler(ApiHandler):
    """`POST /api/orders/{orderId}/cancel`: ends an order that has not reached `building`.

    The store decides, in the same transaction as any other event, so a cancel racing the
    order's execution has exactly one winner: `cancelled` is stored only while the order is
    `pending` or `waiting` (its routing, building and submitted events are stored together).
    """

    async def post(self, order_id: str) -> None:
        oid = self.log_order_id = parse_order_id(order_id)
        order = await self.services.run(self._cancel, oid)
        self.write_json(order.to_api())

    def _cancel(self, oid: UUID) -> OrderRecord:
        """Executor thread: append `cancelled` (once), publish it; the order as stored after."""
        orders, owner = self.storage.orders, self.owner
        order = orders.get_order(oid, owner, with_events=False)  # another key's order: 404
        if order.status != "cancelled":
            if order.status not in ("pending", "waiting"):
                raise _too_late(order.status)
            meta = {"reason": "cancelled by its owner", "latencyMs": ms_since(order.created_at)}
            (result,) = orders.append_events([EventDraft(oid, "cancelled", order.attempt, meta)])
            if isinstance(result, Exception):  # it moved on meanwhile: the store decided
                now = orders.get_order(oid, with_events=False)
                if now.status != "cancelled":
                    raise _too_late(now.status)
            else:
                self._publish(result)
        return orders.get_order(oid, owner)

    def _publish(self, record) -> None:
        try:
            self.storage.bus.publish([record.published()])
        except BusError:  # listeners find the stored event (gap fill, sweeper)
            log.warning("could not publish the cancellation of order %s", record.order_id,
                        extra=about_order(record.order_id))


def _too_late(status: str) -> ApiError:
    return ApiError(409, "conflict", f"the order is {status}: it can be cancelled only before it reaches building")


LIST_PARAMS = ("status", "type", "limit", "cursor")


class OrderListHandler(ApiHandler):
    """`GET /api/orders?status=&type=&limit=&cursor=`: the caller's orders, newest first, paged."""

    async def get(self) -> None:
        params = single_params(self.request.query_arguments, LIST_PARAMS)
        status, order_type = params.get("status"), params.get("type")
        if status is not None and status not in STATUSES:
            raise ValidationError("invalid_field", f"status must be one of {', '.join(sorted(STATUSES))}", "status")
        if order_type is not None and order_type not in ORDER_TYPES:
            raise ValidationError("invalid_field", f"type must be one of {', '.join(ORDER_TYPES)}", "type")
        limit = parse_int_param(params, "limit", 50, 1, 500)
        cursor = params.get("cursor")
        try:
            orders, next_cursor = await self.services.run(
                lambda: self.storage.orders.list_orders(self.owner, status=status, type=order_type,
                                                        limit=limit, cursor=cursor))
        except BadCursor:
            raise ValidationError("invalid_field", "cursor is not one this server handed out", "cursor") from None
        self.write_json({"orders": [o.to_api() for o in orders], "nextCursor": next_cursor})
