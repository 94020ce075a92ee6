"""Plain records handed out by storage (entities never leave the package), and their JSON form."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from storage import codec


# The order types, here because storage lists an order type at a time (order_sql.list_page); the
# web validates against this same tuple.
ORDER_TYPES = ("market", "limit", "sniper", "stop_loss", "take_profit", "trailing_stop", "oco", "twap", "dca")
PARENT_TYPES = ("twap", "dca")  # orders over time: a parent schedules child orders, swaps nothing itself


def utcnow() -> datetime:
    """Naive UTC now: what every timestamp column stores (see STACK-FACTS: time zones)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(ts: datetime | None) -> str | None:
    """Naive-UTC datetime to ISO 8601 with milliseconds and a `Z`."""
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def ms_since(then: datetime, now: datetime | None = None) -> int:
    """Whole milliseconds from `then` to `now` (naive UTC; default: now), as events' latencyMs."""
    return int(((now or utcnow()) - then).total_seconds() * 1000)


def expiry(created_at: datetime, expires_in_seconds: int | None) -> datetime | None:
    """When an order created at `created_at` expires (naive UTC), or None when it does not."""
    return None if expires_in_seconds is None else created_at + timedelta(seconds=expires_in_seconds)


def decimal_str(value: Decimal) -> str:
    """A Decimal as a plain string: no exponent, no trailing zeros ("1.5", "100")."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


@dataclass(frozen=True)
class OrderDraft:
    """A validated order, not stored yet. Amounts are exact whole-token Decimals."""

    token_in: str  # symbol
    token_out: str  # symbol
    amount: Decimal
    type: str = "market"
    slippage_bps: int = 50
    limit_price: Decimal | None = None
    expires_in_seconds: int | None = None
    client_order_id: str | None = None
    owner: str = ""
    callback_url: str | None = None  # webhooks: where its events are POSTed (storage/webhooks.py)
    stop_price: Decimal | None = None  # stop_loss: fires when the price falls to it
    stop_limit_price: Decimal | None = None  # stop-limit (stop_loss, oco's stopLoss): its floor once fired
    trail_percent: Decimal | None = None  # trailing_stop: how far below the best price seen it fires
    trail_amount: Decimal | None = None  # trailing_stop: that distance in price (tokenOut per tokenIn) instead
    # Orders over time: a parent's schedule ({"durationSeconds", "slices"} of a twap,
    # {"intervalSeconds", "count"} of a dca); a child's parent and slice (0-based).
    schedule: dict[str, Any] | None = None
    parent_id: UUID | None = None
    slice_index: int | None = None

    def same_order_as(self, order: "OrderRecord") -> bool:
        """True when a repeated clientOrderId means the same order (compared after parsing)."""
        return (
            self.token_in == order.token_in
            and self.token_out == order.token_out
            and self.amount == order.amount
            and self.type == order.type
            and self.slippage_bps == order.slippage_bps
            and self.limit_price == order.limit_price
            and self.stop_price == order.stop_price
            and self.stop_limit_price == order.stop_limit_price
            and self.trail_percent == order.trail_percent
            and self.trail_amount == order.trail_amount
            and self.schedule == order.schedule
            and self.expires_in_seconds == order.expires_in_seconds
            and self.callback_url == order.callback_url
        )


@dataclass(frozen=True)
class EventDraft:
    """A status event an actor wants appended; storage assigns its `seq`."""

    order_id: UUID
    status: str
    attempt: int
    meta: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)
    fence: int | None = None  # the appender's claim on the order; None: not a holder (the web)


@dataclass(frozen=True)
class EventRecord:
    """A stored status event: exactly what listeners receive (and, apart, its order's owner)."""

    order_id: UUID
    seq: int
    status: str
    attempt: int
    timestamp: datetime
    meta: dict[str, Any]
    owner: str = field(default="", compare=False)
    # `meta` as JSON, when the writer already encoded it for the database (encoded once).
    meta_json: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> bytes:
        """The spec's event object as JSON text: built once, sent to every listener as is."""
        meta = self.meta_json if self.meta_json is not None else codec.dumps(self.meta)
        return b'{"orderId":"%s","seq":%d,"status":"%s","attempt":%d,"timestamp":"%s","meta":%s}' % (
            str(self.order_id).encode(), self.seq, self.status.encode(), self.attempt,
            iso(self.timestamp).encode(), meta)

    def published(self) -> "BusEvent":
        """This event as it travels on the bus."""
        return BusEvent(str(self.order_id), self.seq, self.status, self.owner, self.to_json())

    def to_api(self) -> dict[str, Any]:
        """The spec's event object."""
        return {
            "orderId": str(self.order_id),
            "seq": self.seq,
            "status": self.status,
            "attempt": self.attempt,
            "timestamp": iso(self.timestamp),
            "meta": self.meta,
        }


@dataclass(frozen=True, slots=True)
class BusEvent:
    """A stored event on the bus: what a web process routes it by, and the JSON listeners get."""

    order_id: str
    seq: int
    status: str
    owner: str
    text: bytes

    def to_api(self) -> dict[str, Any]:
        """The event object (parsed from its text)."""
        return codec.loads(self.text)


@dataclass(frozen=True)
class OrderRecord:
    """A stored order as the API shows it (without events unless asked)."""

    id: UUID
    owner: str
    status: str
    type: str
    token_in: str
    token_out: str
    amount: Decimal
    slippage_bps: int
    limit_price: Decimal | None
    expires_in_seconds: int | None
    client_order_id: str | None
    created_at: datetime
    updated_at: datetime
    attempts: int
    attempt: int  # the current attempt (attempt of the last event)
    last_seq: int
    route: dict[str, Any] | None
    fills: list[dict[str, Any]]
    error: dict[str, Any] | None
    events: tuple[EventRecord, ...] | None = None
    fence: int = 0  # the fence of the latest claim (see storage.order_sql.claim_orders)
    callback_url: str | None = None  # webhooks: where its events are POSTed
    stop_price: Decimal | None = None  # stop_loss: fires when the price falls to it
    stop_limit_price: Decimal | None = None  # stop-limit (stop_loss, oco's stopLoss): its floor once fired
    trail_percent: Decimal | None = None  # trailing_stop: how far below the best price seen it fires
    trail_amount: Decimal | None = None  # trailing_stop: that distance in price (tokenOut per tokenIn) instead
    parent_id: UUID | None = None  # a twap/dca child's parent
    slice_index: int | None = None  # a child's place in its parent's schedule (0-based)
    schedule: dict[str, Any] | None = None  # a twap/dca parent's schedule (see OrderDraft)
    paused: bool = False  # a dca parent paused by its owner

    @property
    def terminal(self) -> bool:
        """True once the order can change no more."""
        from storage.status import TERMINAL

        return self.status in TERMINAL

    @property
    def expires_at(self) -> datetime | None:
        """When a limit or sniper order expires unless triggered first (naive UTC), or None."""
        return expiry(self.created_at, self.expires_in_seconds)

    def to_api(self) -> dict[str, Any]:
        """The spec's order object (with `events` when they were loaded)."""
        data: dict[str, Any] = {
            "orderId": str(self.id),
            "status": self.status,
            "type": self.type,
            "tokenIn": self.token_in,
            "tokenOut": self.token_out,
            "amount": decimal_str(self.amount),
            "slippageBps": self.slippage_bps,
            "limitPrice": decimal_str(self.limit_price) if self.limit_price is not None
            and self.type not in ("take_profit", "oco") else None,
            "expiresInSeconds": self.expires_in_seconds,
            "clientOrderId": self.client_order_id,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "route": self.route,
            "fills": self.fills,
            "error": self.error,
            "attempts": self.attempts,
            "callbackUrl": self.callback_url,
        }
        if self.stop_price is not None and self.type != "oco":
            data["stopPrice"] = decimal_str(self.stop_price)
        _protective_api(self, data)
        if self.type == "take_profit" and self.limit_price is not None:  # stored as its limit price
            data["targetPrice"] = decimal_str(self.limit_price)
        if self.schedule is not None:  # a parent: its schedule's fields, as submitted
            data.update(self.schedule)
            data["paused"] = self.paused
        if self.parent_id is not None:
            data["parentId"] = str(self.parent_id)
            data["sliceIndex"] = self.slice_index
        if self.events is not None:
            data["events"] = [e.to_api() for e in self.events]
        return data


def _protective_api(order: OrderRecord, data: dict[str, Any]) -> None:
    """The fields of a stop-limit, a trailing stop and an oco, as they were submitted."""
    if order.type == "stop_loss" and order.stop_limit_price is not None:
        data["limitPrice"] = decimal_str(order.stop_limit_price)
    if order.trail_percent is not None:
        data["trailPercent"] = decimal_str(order.trail_percent)
    if order.trail_amount is not None:
        data["trailAmount"] = decimal_str(order.trail_amount)
    if order.type == "oco":
        stop = {"stopPrice": decimal_str(order.stop_price)}
        if order.stop_limit_price is not None:
            stop["limitPrice"] = decimal_str(order.stop_limit_price)
        data["takeProfit"] = {"targetPrice": decimal_str(order.limit_price)}
        data["stopLoss"] = stop
