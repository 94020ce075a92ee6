"""Sending one webhook: resolve, check every address, connect to the one checked, POST, read the status.

Runs on a sender thread of the worker's WebhookDispatcher (never an actor's), bounded by
WEBHOOK_TIMEOUT_SECONDS for resolving (nothing is sent after a slower resolution), for the
connection and for each read (a receiver that drips its answer byte by byte can hold a sender
longer: the lease, three timeouts, then lets another worker send the event again). Redirects
are not followed (a 3xx is a failed try, like any answer other than 2xx).
"""
from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass

from storage.webhooks import CallbackRefused, Delivery, check_address, check_url, signature

USER_AGENT = "dex-engine-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """What one try gave: the HTTP status (None when no answer came), why it failed, and
    whether trying again is pointless (a refused address)."""

    status: int | None
    error: str | None = None
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a given address, whatever the host's name resolves to now."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a given address, the certificate checked against the URL's host name."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to: every address the host resolves to must be allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        check_address(address, allow_private)
    return addresses[0]


def post_event(delivery: Delivery, secret: str, timeout_s: float, allow_private: bool) -> Outcome:
    """POST the delivery's event to its URL, signed with `secret`; never raises."""
    if delivery.event is None:
        return Outcome(None, "the event is no longer stored", permanent=True)
    body = delivery.event.to_json()
    started = time.monotonic()
    try:
        scheme, host, port, path = check_url(delivery.url, allow_private)
        address = resolve(host, port, allow_private)
    except CallbackRefused as exc:
        return Outcome(None, str(exc), permanent=True)
    except OSError as exc:
        return Outcome(None, str(exc))
    if time.monotonic() - started > timeout_s:  # the resolver has no timeout of its own: send nothing late
        return Outcome(None, f"resolving {host} took longer than {timeout_s:g} s")
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Engine-Signature": signature(secret, timestamp, body), "X-Engine-Timestamp": str(timestamp),
               "X-Engine-Order-Id": str(delivery.order_id), "X-Engine-Event-Seq": str(delivery.seq),
               "X-Engine-Delivery-Attempt": str(delivery.attempt)}
    conn = (_PinnedHTTPS if scheme == "https" else _PinnedHTTP)(host, port, address, timeout_s)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(4096)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    finally:
        conn.close()
    return Outcome(status, None if 200 <= status < 300 else f"answered {status}")
