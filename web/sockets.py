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

from storage.records import BusEvent, decimal_str
from web.base import SocketHandler
from web.errors import ApiError, ValidationError, is_outage, not_found, to_api_error
from web.market import require_tradable
from web.orders import submit_order
from web.validation import QuoteRequest, parse_json_object, parse_quote_command

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
        if self.services.quotes is not None:
            self.services.quotes.detach(self)
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
            if action == "subscribeQuote":
                return self._subscribe_quote(parse_quote_command(order_id))
            if action == "unsubscribeQuote":
                return self._unsubscribe_quote(order_id)
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

    async def _subscribe_quote(self, request: QuoteRequest) -> None:
        """Count the frame against SUBSCRIBE_RATE_LIMIT, check the tokens trade, then stream the
        quote (web/quote_stream.py); a refusal is an error frame, the connection stays open."""
        try:
            await self.services.rate_limits.admit("subscribes", self.request, self.owner)
            await require_tradable(self.services, request)
            if self.ws_connection is None or self.ws_connection.is_closing():
                return  # closed while it was checked
            quotes = self.services.quotes
            subscription_id = quotes.subscribe(self, request)
        except Exception as exc:  # noqa: BLE001 - answered as a frame, never a dropped socket
            error = to_api_error(exc)
            if error.code == "internal_error":
                log.error("unexpected error in a subscribeQuote command", exc_info=True)
            self.send_error_frame(error, close=False)
            return
        self.send_json({"type": "quoteSubscribed", "subscriptionId": subscription_id,
                        "tokenIn": request.token_in.symbol, "tokenOut": request.token_out.symbol,
                        "amount": decimal_str(request.amount), "slippageBps": request.slippage_bps})
        quotes.send_last(self, subscription_id)

    def _unsubscribe_quote(self, subscription_id: str) -> None:
        """End a quote subscription (one this connection does not hold changes nothing)."""
        self.services.quotes.unsubscribe(self, subscription_id)
        self.send_json({"type": "quoteUnsubscribed", "subscriptionId": subscription_id})

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


QUOTE_ACTIONS = ("subscribeQuote", "unsubscribeQuote")


def _parse_command(message: str | bytes) -> tuple[str, Any]:
    """`{"subscribe": ID}` or `{"unsubscribe": ID}` -> (action, canonical order id);
    `{"action": "subscribeQuote", ...}` -> (action, the frame parsed exactly);
    `{"action": "unsubscribeQuote", "subscriptionId": ID}` -> (action, ID)."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise ValidationError("invalid_json", "commands are JSON objects such as {\"subscribe\": ID}") from None
    if isinstance(data, dict) and "action" in data:
        return _quote_command(parse_json_object(message))  # again, exactly: amounts are decimals
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in ("subscribe", "unsubscribe"):
        raise ValidationError("invalid_field", "send {\"subscribe\": ID} or {\"unsubscribe\": ID}")
    action, value = next(iter(data.items()))
    if not isinstance(value, str):
        raise ValidationError("invalid_field", f"{action} takes an order id string", action)
    return action, _order_id(value)


def _quote_command(data: dict[str, Any]) -> tuple[str, Any]:
    action = data["action"]
    if action not in QUOTE_ACTIONS:
        raise ValidationError("invalid_field", "action must be subscribeQuote or unsubscribeQuote", "action")
    if action == "subscribeQuote":
        return action, data
    for name in data:
        if name not in ("action", "subscriptionId"):
            raise ValidationError("unknown_field", f"unknown field {name[:64]!r}", name[:64])
    subscription_id = data.get("subscriptionId")
    if not isinstance(subscription_id, str) or not 1 <= len(subscription_id) <= 64:
        raise ValidationError("invalid_field", "subscriptionId must be the id a quoteSubscribed frame gave",
                              "subscriptionId")
    return action, subscription_id
