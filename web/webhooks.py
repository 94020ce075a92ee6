"""Webhooks in the web: an owner's default callbackUrl, the deliveries of an order, the signing secret.

- A submit without `callbackUrl` takes its owner's default where keys are managed
  (web/callbacks.py).
- `GET /api/orders/{orderId}/deliveries`: `{"deliveries": [...]}`, one per event of an order that
  names a callbackUrl, by `seq`, with its outcome (404 as for the order itself).
- `GET /api/webhooks/secret`: `{"secret": ...}`, the caller's signing secret (storage/webhooks.py).
"""
from __future__ import annotations

from web.base import ApiHandler
from web.orders import parse_order_id

class DeliveriesHandler(ApiHandler):
    """`GET /api/orders/{orderId}/deliveries`: the order's webhook deliveries and their outcomes."""

    operators_read = True

    async def get(self, order_id: str) -> None:
        oid = self.log_order_id = parse_order_id(order_id)
        await self.services.run(self.storage.orders.get_order, oid, self.owner, False)  # another key's: 404
        deliveries = await self.services.run(self.storage.webhooks.of_order, oid)
        self.write_json({"orderId": str(oid), "deliveries": deliveries})


class WebhookSecretHandler(ApiHandler):
    """`GET /api/webhooks/secret`: the secret the caller's webhooks are signed with."""

    async def get(self) -> None:
        secret = await self.services.run(self.storage.webhooks.secret_for, self.owner or "")
        self.write_json({"secret": secret, "algorithm": "HMAC-SHA256",
                         "signedPayload": "{X-Engine-Timestamp}.{body}"})
