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
from storage.schedule_plan import progress
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
    draft = parse_order(body, owner, services.settings.webhook_allow_private)
    if draft.callback_url is None and services.keys.managed is not None:  # its owner's default, if any
        draft = await services.callback_defaults.apply(draft)
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


async def owner_of_key(services: Services, key_id: str) -> str | None:
    """The owner whose orders a trading key acts on (an API_KEYS key's, or a managed key's,
    revoked or not); None for an id that is no trading key's."""
    if key_id in services.keys.environment_ids:
        return key_id
    if not key_id or key_id.startswith("op_"):
        return None
    record = await services.run(services.storage.operators.key, key_id)
    return record["owner"] if record is not None else None


class OrderHandler(ApiHandler):
    """`GET /api/orders/{orderId}`: the order with its events (404 for another key's order; an
    operator key reads any order)."""

    operators_read = True

    async def get(self, order_id: str) -> None:
        oid = self.log_order_id = parse_order_id(order_id)
        order = await self.services.run(self.storage.orders.get_order, oid, self.owner)
        data = order.to_api()
        if order.schedule is not None:  # a twap/dca parent: its children and its progress
            data.update(await self.services.run(parent_view, self.storage, order))
        self.write_json(data)


def parent_view(storage, order: OrderRecord) -> dict[str, Any]:
    """Executor thread: a parent's `children` (each as the list shows an order) and `progress`."""
    children = storage.orders.children_of([order.id])[order.id]
    return {"children": [c.to_api() for c in children], "progress": progress(order, children)}


class CancelHandler(ApiHandler):
    """`POST /api/orders/{orderId}/cancel`: ends an order that has not reached `building`.

    The store decides, in the same transaction as any other event, so a cancel racing the
    order's execution has exactly one winner: `cancelled` is stored only while the order is
    `pending` or `waiting` (its routing, building and submitted events are stored together).
    """

    async def post(self, order_id: str) -> None:
        oid = self.log_order_id = parse_order_id(order_id)
        order = await self.services.run(cancel_order, self.storage, oid, self.owner)
        self.write_json(order.to_api())


def cancel_order(storage, oid: UUID, owner: str | None, reason: str = "cancelled by its owner") -> OrderRecord:
    """Executor thread: append `cancelled` (once) and publish it; the order as stored after.
    The owner's own cancel and an operator's cancel-all both go this way; 404 for an order not
    of `owner` (None: anyone's), 409 once it has reached `building` or ended otherwise."""
    orders = storage.orders
    order = orders.get_order(oid, owner, with_events=False)  # another key's order: 404
    if order.status != "cancelled":
        if order.status not in ("pending", "waiting", "scheduled"):
            raise _too_late(order.status)
        meta = {"reason": reason, "latencyMs": ms_since(order.created_at)}
        (result,) = orders.append_events([EventDraft(oid, "cancelled", order.attempt, meta)])
        if isinstance(result, Exception):  # it moved on meanwhile: the store decided
            now = orders.get_order(oid, with_events=False)
            if now.status != "cancelled":
                raise _too_late(now.status)
        else:
            _publish(storage, result)
    if order.schedule is not None:  # a parent: its children that have not started end with it
        cancel_children(storage, oid)
    return orders.get_order(oid, owner)


def cancel_children(storage, parent_id: UUID) -> None:
    """Executor thread: cancel a cancelled parent's children still `pending` or `waiting`; one
    that reached `building` meanwhile settles (the store refuses its cancel). The worker's
    schedule book sweeps again, for a child created at the very moment of the cancel."""
    children = storage.orders.children_of([parent_id])[parent_id]
    stored = storage.orders.cancel_unstarted(children, "its parent order was cancelled")
    if stored:
        _publish(storage, *stored)


def _publish(storage, *records) -> None:
    """Publish stored events, as one bus message."""
    try:
        storage.bus.publish([record.published() for record in records])
    except BusError:  # listeners find the stored events (gap fill, sweeper)
        log.warning("could not publish the events of order %s", records[0].order_id,
                    extra=about_order(records[0].order_id))


def _too_late(status: str) -> ApiError:
    return ApiError(409, "conflict", f"the order is {status}: it can be cancelled only before it reaches building")


LIST_PARAMS = ("status", "type", "limit", "cursor")
OPERATOR_LIST_PARAMS = LIST_PARAMS + ("keyId",)


class OrderListHandler(ApiHandler):
    """`GET /api/orders?status=&type=&limit=&cursor=`: the caller's orders, newest first, paged.
    An operator key lists every order, or with `keyId=` those of that key's owner."""

    operators_read = True

    async def get(self) -> None:
        await self.services.rate_limits.admit("lists", self.request, self.owner)  # junk counts too
        operator = self.caller is not None and self.caller.operator
        params = single_params(self.request.query_arguments, OPERATOR_LIST_PARAMS if operator else LIST_PARAMS)
        if params.get("keyId") is not None:
            self.owner = await owner_of_key(self.services, params["keyId"])
            if self.owner is None:
                raise ValidationError("invalid_field", "keyId is not the id of a trading key", "keyId")
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
