"""A small blocking HTTP client of the engine's public API, and its errors."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from config.client import ClientSettings

TIMEOUT_S = 30.0


class ClientError(Exception):
    """Root of the client's errors."""


class RequestRefused(ClientError):
    """The engine answered with an error (the spec's shape): code, message, field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after
        self.body = body or {"error": {"code": code, "message": message}}

    @property
    def retryable(self) -> bool:
        """Worth retrying later (rate limit, queue full, not ready), not a bad request."""
        return self.status == 429 or self.status >= 500


class EngineUnreachable(ClientError):
    """No answer from the engine at all (not running, wrong URL, connection lost)."""


class EngineClient:
    """The API's endpoints as methods returning parsed JSON; errors raise ClientError."""

    def __init__(self, settings: ClientSettings, timeout: float = TIMEOUT_S):
        self.settings = settings
        self.timeout = timeout

    @property
    def ws_base(self) -> str:
        """The WebSocket form of the engine's URL."""
        return "ws" + self.settings.url[len("http"):]

    def auth_headers(self) -> dict[str, str]:
        """The API key as a bearer token, where one is set."""
        return {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call: the parsed JSON answer, or RequestRefused / EngineUnreachable."""
        headers = {"Accept": "application/json", **self.auth_headers()}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.settings.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _refusal(exc.code, exc.read(), exc.headers.get("Retry-After")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EngineUnreachable(f"cannot reach the engine at {self.settings.url}: {reason}") from None

    def submit(self, order: dict[str, Any]) -> dict:
        """`POST /api/orders/execute`: the acceptance (202, or 200 for a repeat)."""
        return self.request("POST", "/api/orders/execute", order)

    def order(self, order_id: str) -> dict:
        """`GET /api/orders/{id}`: the order with its events."""
        return self.request("GET", f"/api/orders/{quote(order_id, safe='')}")

    def orders(self, **params: Any) -> dict:
        """`GET /api/orders`: one page (status, type, limit, cursor; None means not given)."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return self.request("GET", "/api/orders" + (f"?{query}" if query else ""))

    def quote(self, token_in: str, token_out: str, amount: str, slippage_bps: int | None = None) -> dict:
        """`GET /api/quote`: both venues' quotes and the route."""
        params = {"tokenIn": token_in, "tokenOut": token_out, "amount": amount, "slippageBps": slippage_bps}
        return self.request("GET", "/api/quote?" + urlencode({k: v for k, v in params.items() if v is not None}))

    def tokens(self) -> dict:
        """`GET /api/tokens`."""
        return self.request("GET", "/api/tokens")


def _refusal(status: int, raw: bytes, retry_after: str | None) -> RequestRefused:
    """The error answer as a RequestRefused (a body that is not the spec's shape still reads well)."""
    try:
        body = json.loads(raw)
        error = body["error"]
        return RequestRefused(status, error["code"], error["message"], error.get("field"), retry_after, body)
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
        return RequestRefused(status, f"http_{status}", text, retry_after=retry_after)
