"""The engine's Python client: its public HTTP and WebSocket API as methods.

Two clients with the same methods, for any Python program that talks to a running engine
(the `engine` CLI, the end-to-end tests and the benchmark use nothing else):

- `EngineClient` (here): blocking, on `http.client`; for scripts and the CLI.
- `AsyncEngineClient` (`web.client.aio`): asyncio, on tornado; it also follows an order's
  WebSocket stream (`events(order_id, after=N)` for one connection, `follow(order_id)`
  resuming a dropped one after the last event seen).

    client = EngineClient("http://localhost:8000", api_key=None)
    accepted = client.submit(tokenIn="SOL", tokenOut="USDC", amount="1.5")
    order = client.order(accepted["orderId"])      # with its events

The typed methods (`submit`, `order`, `orders`, `cancel`, `quote`, `tokens`, `swaps`,
`pools`, `launch`) return the parsed JSON answer or raise a `ClientError`: `RequestRefused`
for an error answer (`status`, `code`, `message`, `field`, `retry_after`; `retryable` for
429 and 5xx), `EngineUnreachable` when no answer came. `request(method, path, body,
headers)` is the raw call under them: its `Answer` (`status, body = answer`, with the
headers and raw bytes too) whatever the status, for anything the typed methods do not say.
A client made with `raise_error=False` answers every typed method that way too.

This module is the one place that knows the API's paths, how a request is built (a JSON
body, the key as `Authorization: Bearer`) and how an answer is read; the two clients only
move the bytes. Like any user's program it never imports the server's code.
"""
from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

TIMEOUT_S = 30.0
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired", "completed"})  # completed: a twap/dca parent
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
    """No answer from the engine at all (not running, wrong URL, connection lost, timed out)."""


class UnexpectedAnswer(ClientError):
    """A success answer, or a frame, that is not the JSON the API sends."""


# ---- requests --------------------------------------------------------------------------------

class Call(NamedTuple):
    """One request as it goes on the wire: path (with its query), body bytes and headers."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The API key as a bearer token, where one is set."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def build_call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
               api_key: str | None = None) -> Call:
    """The request for `method path`: a dict or list body as JSON, bytes or str as given.

    A request with a body (and every POST, PUT, PATCH) says `Content-Type: application/json`;
    `headers` come last and replace the client's own of the same name (case-insensitive).
    """
    if body is None:
        data = b"" if method in _BODY_METHODS else None
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    own = {"Accept": "application/json", **auth_headers(api_key)}
    if data is not None:
        own["Content-Type"] = "application/json"
    if headers:
        given = {name.lower() for name in headers}
        own = {name: value for name, value in own.items() if name.lower() not in given}
        own.update(headers)
    return Call(method, path, data, own)


def with_query(path: str, params: dict[str, Any]) -> str:
    """`path?name=value&...` for the params that are not None."""
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return f"{path}?{query}" if query else path


def order_path(order_id: str) -> str:
    """`/api/orders/{id}`, the id quoted."""
    return f"/api/orders/{quote(order_id, safe='')}"


def order_stream_path(order_id: str, after: int = 0) -> str:
    """`/ws?orderId=ID[&after=N]`: one order's events, those after `N` when resuming."""
    return with_query("/ws", {"orderId": order_id, "after": after or None})


# ---- answers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What the engine answered, whatever the status: reads as the pair `(status, body)`
    (`status, body = answer`, `answer[1]`).

    `body` is the parsed JSON (None for an empty or non-JSON body; `raw` has the bytes).
    `sent_at` and `answered_at` are `time.monotonic()` when the request went out on its
    connection and when the answer was in.
    """

    status: int
    body: Any
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    sent_at: float = 0.0
    answered_at: float = 0.0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.status, self.body))

    def __getitem__(self, index: int) -> Any:
        return (self.status, self.body)[index]

    def __len__(self) -> int:
        return 2

    def header(self, name: str) -> str | None:
        """One response header, the name in any case."""
        lower = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == lower), None)

    def value(self) -> Any:
        """The body of a success; RequestRefused for an error answer."""
        if self.status >= 400:
            raise refusal(self.status, self.body, self.raw, self.header("Retry-After"))
        if self.body is None and self.raw.strip():
            raise UnexpectedAnswer(f"HTTP {self.status} with a body that is not JSON: {self.raw[:200]!r}")
        return self.body


def read_answer(status: int, raw: bytes, headers: dict[str, str] | None = None,
                sent_at: float = 0.0, answered_at: float = 0.0) -> Answer:
    """The Answer for a status and body as received."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Answer(status, body, raw, headers or {}, sent_at, answered_at)


def read_frame(message: str | bytes) -> dict:
    """One WebSocket frame of the API, parsed."""
    try:
        return json.loads(message)
    except ValueError:
        raise UnexpectedAnswer(f"a WebSocket frame that is not JSON: {message[:200]!r}") from None


def refusal(status: int, body: Any, raw: bytes = b"", retry_after: str | None = None) -> RequestRefused:
    """An error answer as a RequestRefused (a body that is not the spec's shape still reads well)."""
    try:
        error = body["error"]
        return RequestRefused(status, error["code"], error["message"], error.get("field"), retry_after, body)
    except (KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
        return RequestRefused(status, f"http_{status}", text, retry_after=retry_after)


FRAME_STATUS = {"not_found": 404, "rate_limited": 429, "not_ready": 503}  # an error frame's code as HTTP would answer


def frame_refusal(frame: dict) -> RequestRefused:
    """An error frame of a stream (unknown order, bad parameter) as a RequestRefused."""
    status = FRAME_STATUS.get(frame.get("error", {}).get("code"), 400)
    return refusal(status, frame, json.dumps(frame).encode())


# ---- the endpoints, shared by both clients ---------------------------------------------------

class Endpoints:
    """The API's endpoints as methods; a client supplies `_call(method, path, body)`, which
    returns what `_settle` makes of the answer (the async client: a coroutine of it).

    With `raise_error` off, each method gives its Answer, `(status, body)`, whatever the
    status, rather than the parsed body or a RequestRefused: for programs that look at the
    refusals themselves (the end-to-end tests, the benchmark's load).
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = TIMEOUT_S, raise_error: bool = True):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.raise_error = raise_error

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        raise NotImplementedError

    def _settle(self, answer: Answer) -> Any:
        return answer.value() if self.raise_error else answer

    def submit(self, order: dict[str, Any] | None = None, **fields: Any) -> Any:
        """`POST /api/orders/execute` (the order as a dict, or as keywords): the acceptance
        (202, or 200 for a repeat of a `clientOrderId`)."""
        return self._call("POST", "/api/orders/execute", {**(order or {}), **fields})

    def order(self, order_id: str) -> Any:
        """`GET /api/orders/{id}`: the order with its events."""
        return self._call("GET", order_path(order_id))

    def deliveries(self, order_id: str) -> Any:
        """`GET /api/orders/{id}/deliveries`: the order's webhook deliveries and their outcomes."""
        return self._call("GET", order_path(order_id) + "/deliveries")

    def webhook_secret(self) -> Any:
        """`GET /api/webhooks/secret`: the secret this key's webhooks are signed with."""
        return self._call("GET", "/api/webhooks/secret")

    def orders(self, **params: Any) -> Any:
        """`GET /api/orders`: one page (status, type, limit, cursor; None means not given)."""
        return self._call("GET", with_query("/api/orders", params))

    def cancel(self, order_id: str) -> Any:
        """`POST /api/orders/{id}/cancel`: the cancelled order (409 once it is too late)."""
        return self._call("POST", order_path(order_id) + "/cancel")

    def pause_schedule(self, order_id: str) -> Any:
        """`POST /api/orders/{id}/pause`: a dca order creates no more children until resumed."""
        return self._call("POST", order_path(order_id) + "/pause")

    def resume_schedule(self, order_id: str) -> Any:
        """`POST /api/orders/{id}/resume`: a paused dca order's schedule goes on."""
        return self._call("POST", order_path(order_id) + "/resume")

    def quote(self, token_in: str, token_out: str, amount: str, slippage_bps: int | None = None) -> Any:
        """`GET /api/quote`: both venues' quotes and the route."""
        return self._call("GET", with_query("/api/quote", {"tokenIn": token_in, "tokenOut": token_out,
                                                           "amount": amount, "slippageBps": slippage_bps}))

    def tokens(self) -> Any:
        """`GET /api/tokens`."""
        return self._call("GET", "/api/tokens")

    def swaps(self, order_id: str) -> Any:
        """`GET /api/sim/swaps?orderId=`: the simulated chain's swaps for the order."""
        return self._call("GET", with_query("/api/sim/swaps", {"orderId": order_id}))

    def pools(self) -> Any:
        """`GET /api/sim/pools`: the simulated pools, now."""
        return self._call("GET", "/api/sim/pools")

    def launch(self, token: str, in_seconds: float) -> Any:
        """`POST /api/sim/launch`: schedule a simulated token launch (for sniper orders)."""
        return self._call("POST", "/api/sim/launch", {"token": token, "inSeconds": in_seconds})

    # ---- operators (an operator key: one of the engine's ADMIN_KEYS) ----

    def halt(self, scope: str = "all", key_id: str | None = None, pair: str | None = None,
             reason: str | None = None) -> Any:
        """`POST /api/admin/halt`: stop new orders and armed orders of a scope (all, key, pair)."""
        return self._call("POST", "/api/admin/halt", _scope_body(scope, key_id, pair, reason))

    def resume(self, scope: str = "all", key_id: str | None = None, pair: str | None = None) -> Any:
        """`POST /api/admin/resume`: lift the halt of a scope."""
        return self._call("POST", "/api/admin/resume", _scope_body(scope, key_id, pair, None))

    def halts(self) -> Any:
        """`GET /api/admin/halts`: the halts in force."""
        return self._call("GET", "/api/admin/halts")

    def keys(self) -> Any:
        """`GET /api/admin/keys`: every trading key (never the key itself)."""
        return self._call("GET", "/api/admin/keys")

    def create_key(self, label: str | None = None, owner: str | None = None, limits: dict | None = None) -> Any:
        """`POST /api/admin/keys`: a new trading key, answered once (`owner`: a keyId whose owner it shares)."""
        body = {name: value for name, value in (("label", label), ("owner", owner), ("limits", limits))
                if value is not None}
        return self._call("POST", "/api/admin/keys", body)

    def revoke_key(self, key_id: str) -> Any:
        """`DELETE /api/admin/keys/{keyId}`: refused from its next request on, its streams closed."""
        return self._call("DELETE", f"/api/admin/keys/{quote(key_id, safe='')}")

    def cancel_all(self, key_id: str) -> Any:
        """`POST /api/admin/keys/{keyId}/cancel-all`: cancel every open order of the key's owner."""
        return self._call("POST", f"/api/admin/keys/{quote(key_id, safe='')}/cancel-all")

    def audit(self, limit: int | None = None, before: int | None = None) -> Any:
        """`GET /api/admin/audit`: operator actions, newest first."""
        return self._call("GET", with_query("/api/admin/audit", {"limit": limit, "before": before}))


def _scope_body(scope: str, key_id: str | None, pair: str | None, reason: str | None) -> dict[str, Any]:
    body = {"scope": scope, "keyId": key_id, "pair": pair, "reason": reason}
    return {name: value for name, value in body.items() if value is not None}


# ---- the blocking client ---------------------------------------------------------------------

class EngineClient(Endpoints):
    """The blocking client: one connection per request (`http.client`), no redirects followed."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = TIMEOUT_S, raise_error: bool = True):
        super().__init__(url, api_key, timeout, raise_error)
        parts = urlsplit(self.url)
        self._https, self._netloc = parts.scheme == "https", parts.netloc

    @classmethod
    def from_settings(cls, settings, timeout: float = TIMEOUT_S) -> "EngineClient":
        """The client of `config.client.ClientSettings` (ENGINE_URL, ENGINE_API_KEY)."""
        return cls(settings.url, settings.api_key, timeout)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        """One raw call: its Answer whatever the status; EngineUnreachable when none came."""
        call = build_call(method, path, body, headers, self.api_key)
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = kind(self._netloc, timeout=self.timeout)
        try:
            sent_at = time.monotonic()
            conn.request(call.method, call.path, body=call.body, headers=call.headers)
            response = conn.getresponse()
            raw = b"" if response.status == 101 else response.read()  # an upgrade has no body
            return read_answer(response.status, raw, dict(response.getheaders()), sent_at, time.monotonic())
        except (OSError, http.client.HTTPException) as exc:
            raise EngineUnreachable(f"cannot reach the engine at {self.url}: {exc}") from None
        finally:
            conn.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._settle(self.request(method, path, body))
