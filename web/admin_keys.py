"""Trading keys managed by operators, without a restart (`/api/admin/keys`):

- `POST /api/admin/keys` `{"label"?, "owner"?, "limits"?, "callbackUrl"?}` creates a key and answers it once
  (201): 43 random URL-safe characters (`secrets.token_urlsafe(32)`, 256 bits), its `keyId` and
  its `owner`. Only its SHA-256 digest is stored; the audit log keeps the answer with the key
  replaced by `***`. `owner`: the id of an existing trading key (from API_KEYS or managed,
  revoked or not) whose owner the new key shares: it sees and cancels the same orders, so a
  key is rotated without downtime (create the new one, move clients, revoke the old one).
  `limits`: the owner's risk limits (`maxOrderUsd`, `maxOpenOrders`, `maxNotional24hUsd`,
  each optional and non-negative; see `OperatorStore.limits_of`). `callbackUrl`: the webhook URL of
  the owner's orders that name none (its newest live key's, as for limits: web/webhooks.py).
- `GET /api/admin/keys`: every key, API_KEYS ones included (`source: "environment"`; they are
  revoked by removing them from API_KEYS, so DELETE answers them 409), never a key or a digest.
- `DELETE /api/admin/keys/{keyId}`: revokes a managed key (idempotent; unknown 404); every web
  process refuses it from its next request and closes its WebSockets (web/key_watch.py).
- `POST /api/admin/keys/{keyId}/cancel-all`: cancels every open order of that key's owner, as
  the owner's own cancel does (only orders not yet `building`).

Every POST and DELETE here is audited (`keys.create`, `keys.revoke`, `keys.cancel_all`).
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from tornado.web import RequestHandler

from storage.errors import BusError
from storage.records import decimal_str
from web.access import key_digest
from web.admin import AdminHandler
from web.errors import ApiError, ValidationError, not_found
from web.key_watch import keys_changed
from web.orders import cancel_order, owner_of_key, parse_order_id
from web.validation import _as_decimal, _as_int, parse_callback_url

log = logging.getLogger(__name__)

KEY_BYTES = 32  # secrets.token_urlsafe(32): 43 characters
LABEL_MAX = 200
USD_LIMITS = ("maxOrderUsd", "maxNotional24hUsd")
COUNT_LIMITS = ("maxOpenOrders",)
CREATE_FIELDS = ("label", "owner", "limits", "callbackUrl")


def parse_limits(value: Any) -> dict:
    """Risk limits as stored: USD amounts as decimal strings, counts as integers; each optional,
    non-negative."""
    if not isinstance(value, dict):
        raise ValidationError("invalid_field", "limits must be an object", "limits")
    limits: dict[str, Any] = {}
    for name, given in value.items():
        field = f"limits.{name}"
        if name in USD_LIMITS:
            amount = _as_decimal(given, field)
            if not amount.is_finite() or amount < 0 or amount.adjusted() > 20:
                raise ValidationError("invalid_field", f"{field} must be a non-negative amount in USD", field)
            limits[name] = decimal_str(amount)
        elif name in COUNT_LIMITS:
            limits[name] = _as_int(given, field, 0, 10**9)
        else:
            raise ValidationError("unknown_field", f"unknown limit {name[:64]!r}: one of "
                                  f"{', '.join(USD_LIMITS + COUNT_LIMITS)}", field[:80])
    return limits


def _label(value: Any) -> str:
    if not isinstance(value, str) or len(value) > LABEL_MAX or not value.isprintable():
        raise ValidationError("invalid_field", f"label must be printable text of at most {LABEL_MAX} characters",
                              "label")
    return value


class _KeysAdmin(AdminHandler):
    """What the key endpoints share: telling every web process (this one first) of a change."""

    def keys_changed(self, key_id: str, change: str) -> None:
        watch = self.services.key_watch
        if watch is not None:
            watch.changed(key_id, change)  # this process at once, not after a round trip
        try:
            self.storage.bus.publish_control(keys_changed(key_id, change))
        except BusError as exc:  # the others' caches expire within seconds anyway
            log.warning("could not tell the other web processes that key %s was %s: %s", key_id, change, exc)

    def environment_key(self, key_id: str) -> dict:
        return {"keyId": key_id, "owner": key_id, "label": "", "limits": {}, "createdAt": None,
                "createdBy": None, "revokedAt": None, "revokedBy": None, "callbackUrl": None,
                "source": "environment"}

    def not_revocable(self, key_id: str) -> ApiError | None:
        if key_id in self.services.keys.environment_ids:
            return ApiError(409, "conflict", "this key is set in API_KEYS: remove it from API_KEYS and restart the "
                            "web processes to revoke it")
        if key_id in self.services.keys.operator_ids:
            return ApiError(409, "conflict", "this is an operator key, set in ADMIN_KEYS: remove it there and "
                            "restart the web processes")
        return None


class KeysHandler(_KeysAdmin):
    """`GET /api/admin/keys` lists every trading key; `POST` creates one (`keys.create`)."""

    action = "keys.create"

    async def get(self) -> None:
        self.check_body()
        managed = await self.services.run(self.storage.operators.keys)
        keys = [self.environment_key(key_id) for key_id in self.services.keys.environment_ids] + managed
        self.write_json({"keys": keys})

    async def post_json(self) -> None:
        data = self.json_body()
        for name in data:
            if name not in CREATE_FIELDS:
                raise ValidationError("unknown_field", f"unknown field {name[:64]!r}", name[:64])
        label = _label(data.get("label", ""))
        limits = parse_limits(data.get("limits", {}))
        callback = data.get("callbackUrl")
        if callback is not None:  # the default of the owner's orders that name none (web/webhooks.py)
            callback = parse_callback_url(callback, self.services.settings.webhook_allow_private)
        key = secrets.token_urlsafe(KEY_BYTES)
        key_id = self.services.keys.id_of(key)
        owner = key_id
        if "owner" in data:
            given = data["owner"]
            owner = await owner_of_key(self.services, given) if isinstance(given, str) else None
            if owner is None:
                raise ValidationError("invalid_field", "owner must be the keyId of an existing trading key, "
                                      "whose orders the new key will share", "owner")
        self.audit_target = key_id
        record = await self.services.run(self.storage.operators.create_key, key_id, key_digest(key), owner,
                                         label, limits, self.caller.key_id, callback)
        self.keys_changed(key_id, "created")
        self.set_header("Location", "/api/admin/keys")
        await self.answer({"key": key, **record}, 201, data, audited={"key": "***", **record})


class KeyHandler(_KeysAdmin):
    """`DELETE /api/admin/keys/{keyId}`: revoke a managed key (`keys.revoke`)."""

    action = "keys.revoke"
    post = RequestHandler.post  # DELETE only: a POST is a 405

    async def delete(self, key_id: str) -> None:
        self.check_body()
        self.audit_target = key_id
        refusal = self.not_revocable(key_id)
        if refusal is not None:
            raise refusal
        record = await self.services.run(self.storage.operators.revoke_key, key_id, self.caller.key_id)
        if record is None:
            raise not_found(f"no such key: {key_id[:64]}")
        self.keys_changed(key_id, "revoked")
        await self.answer(record)


class CancelAllHandler(_KeysAdmin):
    """`POST /api/admin/keys/{keyId}/cancel-all`: cancel every open order of that key's owner
    (`keys.cancel_all`); those already `building` or further cannot be and are listed."""

    action = "keys.cancel_all"

    def _check_media_type(self) -> None:
        pass  # no body needed, as for the owner's own cancel: checked below where there is one

    async def post(self, key_id: str) -> None:
        if self._finished:
            return
        self.audit_target = key_id
        self.check_body()
        await self._cancel_all_of(key_id)

    async def _cancel_all_of(self, key_id: str) -> None:
        if self.body.strip():  # an empty body, or a JSON object (ignored)
            super()._check_media_type()
            self.json_body()
        owner = await owner_of_key(self.services, key_id)
        if owner is None:
            raise not_found(f"no such trading key: {key_id[:64]}")
        outcome = await self.services.run(self._cancel_all, owner)
        await self.answer({"keyId": key_id, "owner": owner, **outcome})

    def _cancel_all(self, owner: str) -> dict:
        """Executor thread: each open order through the owner's own cancel path."""
        cancelled, not_cancelled = [], []
        for order_id, status in self.storage.operators.open_orders_of(owner):
            try:
                cancel_order(self.storage, parse_order_id(order_id), owner, "cancelled by an operator (cancel-all)")
                cancelled.append(order_id)
            except ApiError as refused:  # 409: it reached building meanwhile, or ended
                if refused.status != 409:
                    raise
                now = self.storage.orders.get_order(parse_order_id(order_id), with_events=False).status
                not_cancelled.append({"orderId": order_id, "status": now})
        return {"cancelled": cancelled, "notCancelled": not_cancelled}
