"""Webhooks: the deliveries of orders that name a callbackUrl, their signing secrets, and the
one rule of which addresses a callback may reach.

- **Deliveries** are rows written with their events (storage/webhook_sql.py); the workers'
  WebhookDispatcher leases the head of each order, sends it and records the outcome here.
- **Secrets.** Each owner (each API key's, or "" without keys) signs with its own secret:
  HMAC-SHA256 of the owner id under a master secret, `WEBHOOK_SECRET` where set (the same for
  every process), else one kept in the database (`engine_secrets`, created by the first
  process that needs it). Keys that share an owner (a rotation) share its secret; a key reads
  its secret at `GET /api/webhooks/secret`. Changing `WEBHOOK_SECRET` changes every secret.
- **Addresses.** A callback may not reach loopback, private, link-local, multicast, reserved or
  unspecified addresses unless the operator allows it (`WEBHOOK_ALLOW_PRIVATE`): checked on the
  URL at submit (an address written in it, or `localhost`) and on every address its name
  resolves to at each delivery (a name may resolve elsewhere later), and the connection goes to
  the address checked, never to a second resolution.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from storage import webhook_sql
from storage.errors import translating_db_errors
from storage.records import EventRecord, iso, utcnow
from storage.secrets import shared_secret

SECRET_NAME = "webhooks"
_DOMAIN = b"dex-engine webhook secret\n"
MAX_URL_LENGTH = 2048


def owner_secret(master: bytes, owner: str) -> str:
    """The signing secret of one owner's webhooks (64 hex characters)."""
    return hmac.new(master, _DOMAIN + owner.encode(), hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Engine-Signature` value: HMAC-SHA256 of "{timestamp}.{body}" under the secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class CallbackRefused(ValueError):
    """A callback URL, or an address it resolves to, that the engine will not call."""


def _address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:  # shared (100.64/10), documentation and other non-public ranges
        return f"{address} is not a public address"
    return None


def check_address(address: str, allow_private: bool) -> None:
    """Raise CallbackRefused unless a callback may connect to this resolved address."""
    if allow_private:
        return
    refusal = _address_refusal(ipaddress.ip_address(address.split("%", 1)[0]))
    if refusal is not None:
        raise CallbackRefused(f"the callback's host resolves to a refused address: {refusal}")


def check_url(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    """A callback URL's (scheme, host, port, path with query), or CallbackRefused saying why.

    Without `allow_private`, a host written as a refused address, or `localhost`, is refused
    here; names are checked again on what they resolve to, at each delivery."""
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise CallbackRefused(f"callbackUrl must be an http or https URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackRefused("callbackUrl is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        raise CallbackRefused("callbackUrl must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callbackUrl must not carry credentials")
    if parts.fragment:
        raise CallbackRefused("callbackUrl must not have a fragment")
    host = parts.hostname
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise CallbackRefused("callbackUrl must not point at localhost (WEBHOOK_ALLOW_PRIVATE is off)")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and (refusal := _address_refusal(literal)) is not None:
            raise CallbackRefused(f"callbackUrl must reach a public address: {refusal} "
                                  f"(WEBHOOK_ALLOW_PRIVATE is off)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


@dataclass(frozen=True)
class Delivery:
    """One leased delivery: the event to POST, where, and the lease that lets this worker send it."""

    order_id: UUID
    seq: int
    url: str
    owner: str
    attempt: int  # 1 for the first try
    created_at: datetime
    token: str
    event: EventRecord | None  # None when the event is gone (never today: events are not deleted)


DELIVERY_STATES = ("pending", "delivered", "failed")


def delivery_to_api(row: tuple) -> dict[str, Any]:
    """A delivery as `GET /api/orders/{id}/deliveries` shows it."""
    seq, url, state, attempts, created, last, delivered, next_at, status, error = row
    return {"seq": seq, "url": url, "status": state, "attempts": attempts, "createdAt": iso(created),
            "lastAttemptAt": iso(last), "deliveredAt": iso(delivered),
            "nextAttemptAt": iso(next_at) if state == "pending" else None,
            "responseStatus": status, "error": error}


class WebhookStore:
    """Deliveries of one database; every method is its own short transaction on the calling
    thread's direct connection."""

    def __init__(self, db, direct, master_secret: str = ""):
        self.db = db
        self.direct = direct
        self._master = master_secret.encode() if master_secret else None

    @translating_db_errors
    def secret_for(self, owner: str) -> str:
        """The owner's signing secret (the master one is read from the database once)."""
        if self._master is None:
            self._master = shared_secret(self.db, SECRET_NAME)
        return owner_secret(self._master, owner)

    @translating_db_errors
    def claim(self, now: datetime, lease_s: float, limit: int) -> list[Delivery]:
        """Lease up to `limit` due heads of orders' deliveries to a new token, with their events."""
        token = uuid.uuid4().hex
        conn = self.direct.get()
        rows = webhook_sql.claim(conn, token, now, now + timedelta(seconds=lease_s), limit)
        if not rows:
            return []
        events = webhook_sql.events(conn, [(oid, seq) for oid, seq, *_ in rows])
        return [Delivery(oid, seq, url, owner, attempts, created, token, events.get((oid, seq)))
                for oid, seq, url, owner, attempts, created in rows]

    @translating_db_errors
    def settle(self, delivery: Delivery, state: str, next_at: datetime | None = None,
               response_status: int | None = None, error: str | None = None) -> bool:
        """Record the outcome of sending `delivery` and release its lease; False if it was lost."""
        now = utcnow()
        return webhook_sql.settle(self.direct.get(), delivery.order_id, delivery.seq, delivery.token, state, now,
                                  next_at or now, response_status, error)

    @translating_db_errors
    def of_order(self, order_id: UUID) -> list[dict[str, Any]]:
        """Every delivery of one order, by seq, as the API shows them."""
        return [delivery_to_api(row) for row in webhook_sql.of_order(self.direct.get(), order_id)]
