"""WebSocket endpoints: submit-and-stream (`/api/orders/execute`) and listeners (`/ws`).

Every method here runs on the IOLoop thread; events reach the handlers through the
EventHub, which calls the `Listener` methods (`deliver`, `order_found`, ...). The
handshake (`SocketHandler.prepare`) has checked the caller's key: `owner` is whose
orders this connection may submit and see.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any
from uuid import UUID

from storage.records import BusEvent
from web.base import SocketHandler
from web.errors import ApiError, ValidationError, is_outage, not_found, to_api_error
from web.orders import submit_order

log = logging.getLogger(__name__)

_AFTER = re.compile(r"\d{1,12}")


class _EventSocket(SocketHandler):
    """Shared connection bookkeeping and event delivery of both endpoints."""

    async def admit(self) -> None:
        """Every handshake counts against CONNECT_RATE_LIMIT (refused: 429 with Retry-After)."""
        await self.services.rate_limits.admit("connects", self.request, self.owner)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()
        self.services.metrics.websockets.inc()
        self.services.sockets.add(self)

    def on_close(self) -> None:
        self.services.hub.detach(self)
        if self in self.services.sockets:
            self.services.sockets.discard(self)
            self.services.metrics.websockets.dec()

    # Listener ------------------------------------------------------------------------

    def deliver(self, event: BusEvent) -> None:
        self.send_text(event.text)

    def order_found(self, order_id: str) -> None:
        pass

    def order_missing(self, order_id: str, reason: Exception | None = None) -> None:
        self.send_error_frame(to_api_error(reason) if reason else not_found(f"no such order: {order_id}"))

    def order_finished(self, order_id: str) -> None:
        self.close(1000, "order finished")


class SubmitSocket(_EventSocket):
    """`GET /api/orders/execute` upgraded: the first text frame is the order, then its events.
    The handshake counts as a connection and as a submission against KEY_RATE_LIMIT."""

    async def admit(self) -> None:
        await super().admit()
        if self.services.limiter is not None:
            await self.services.limiter.admit(self.owner)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()
        self._submitted = False

    async def on_message(self, message: str | bytes) -> None:
        if self._submitted:
            return  # one order per connection; later frames are not commands
        self._submitted = True
        try:
            if isinstance(message, bytes):
                raise ValidationError("invalid_json", "send the order as a text frame")
            accepted = await submit_order(self.services, message, self.owner or "")
        except Exception as exc:  # every failure becomes an error frame, never a dropped socket
            error = to_api_error(exc)
            if error.code == "internal_error":
                log.error("unexpected error in a WebSocket submit", exc_info=True)
            elif is_outage(error):
                log.warning("a WebSocket submit answered %s %s: %s", error.status, error.code, exc)
            self.send_error_frame(error)
            return
        self.send_json({"type": "accepted", **accepted.to_api()})
        self.services.hub.follow(self, str(accepted.order.id), 0, self.owner)


LISTEN_PARAMS = ("orderId", "after", "token")  # token: the API key, for browsers


class ListenSocket(_EventSocket):
    """`/ws?orderId=ID[&after=N]` streams one order; `/ws` streams all, with subscribe commands."""

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()
        try:
            order_id, after = self._parse_params()
        except ApiError as error:
            self.send_error_frame(error)
            return
        self.single = order_id is not None
        if self.single:
            self.services.hub.follow(self, order_id, after, self.owner)
        else:
            self.services.hub.add_firehose(self, self.owner)

    def _parse_params(self) -> tuple[str | None, int]:
        params = {}
        for name, values in self.request.query_arguments.items():
            if name not in LISTEN_PARAMS:
                raise ValidationError("unknown_field", f"unknown query parameter {name[:64]!r}", name[:64])
            if len(values) != 1:
                raise ValidationError("invalid_field", f"{name} must be given once", name)
            params[name] = values[0].decode("utf-8", "replace")
        after_text = params.get("after")
        if after_text is not None and "orderId" not in params:
            raise ValidationError("invalid_field", "after needs an orderId", "after")
        if after_text is not None and not _AFTER.fullmatch(after_text):
            raise ValidationError("invalid_field", "after must be a non-negative integer (an event seq)", "after")
        order_id = params.get("orderId")
        if order_id is not None:
            order_id = _order_id(order_id)
        return order_id, int(after_text or 0)

    def on_message(self, message: str | bytes) -> Any:
        if getattr(self, "single", True):
            return None  # a one-order stream takes no commands
        try:
            action, order_id = _parse_command(message)
        except ApiError as error:
            self.send_error_frame(error, close=False)
            return None
        if action == "subscribe":
            # A coroutine only for subscribe frames: Tornado reads the next frame once it is done,
            # so commands still take effect in the order they were sent.
            return self._subscribe(order_id)
        self.services.hub.mute(self, order_id)
        self.send_json({"type": "unsubscribed", "orderId": order_id})
        return None

    async def _subscribe(self, order_id: str) -> None:
        """Count the frame against SUBSCRIBE_RATE_LIMIT, then follow the order; a refusal (over
        the limit, too many subscriptions, the bus down) is an error frame, the connection stays open."""
        try:
            await self.services.rate_limits.admit("subscribes", self.request, self.owner)
            if self.ws_connection is None or self.ws_connection.is_closing():
                return  # closed while it was counted
            self.services.hub.follow(self, order_id, 0, self.owner)
        except Exception as exc:  # noqa: BLE001 - answered as a frame, never a dropped socket
            error = to_api_error(exc)
            if error.code == "internal_error":
                log.error("unexpected error in a subscribe command", exc_info=True)
            self.send_error_frame(error, close=False)

    def order_found(self, order_id: str) -> None:
        if not self.single:
            self.send_json({"type": "subscribed", "orderId": order_id})

    def order_missing(self, order_id: str, reason: Exception | None = None) -> None:
        self.send_error_frame(to_api_error(reason) if reason else not_found(f"no such order: {order_id}"),
                              close=self.single)

    def order_finished(self, order_id: str) -> None:
        if self.single:
            self.close(1000, "order finished")


def _order_id(text: str) -> str:
    try:
        return str(UUID(text))
    except ValueError:
        raise not_found(f"no such order: {text[:64]}") from None


def _parse_command(message: str | bytes) -> tuple[str, str]:
    """`{"subscribe": ID}` or `{"unsubscribe": ID}` -> (action, canonical order id)."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise ValidationError("invalid_json", "commands are JSON objects such as {\"subscribe\": ID}") from None
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in ("subscribe", "unsubscribe"):
        raise ValidationError("invalid_field", "send {\"subscribe\": ID} or {\"unsubscribe\": ID}")
    action, value = next(iter(data.items()))
    if not isinstance(value, str):
        raise ValidationError("invalid_field", f"{action} takes an order id string", action)
    return action, _order_id(value)
