"""The web layer's errors, and the ONE place that maps any error to the spec's shape.

Every error a client sees is `{"error": {"code", "message", "field"?}}` with a proper
status code (a code may add fields of its own: `risk_limit` adds `limit`, `value` and the
order's figures, `archived` the archive's name); `to_api_error` turns our own, storage's and
Tornado's exceptions into it.
"""
from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tornado.web import HTTPError

from storage.errors import BusError, ClientOrderIdConflict, OrderArchived, OrderNotFound, StorageError
from storage.risk import RiskLimitExceeded
from storage.venues.base import VenueError


class WebError(Exception):
    """Root of every error raised by `web`."""


class ApiError(WebError):
    """An error answered to the client as-is: status, spec code, message, optional field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}  # fields a code adds to the shape (`risk_limit`: limit, value, figures)

    def to_api(self) -> dict[str, Any]:
        """The spec's error object (the value of the `error` key)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        return error

    def body(self) -> dict[str, Any]:
        """The whole response body."""
        return {"error": self.to_api()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r}, field={self.field!r})"


class ValidationError(ApiError):
    """Input that breaks a rule of the spec: always a 400."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(400, code, message, field)


def not_found(message: str = "no such resource") -> ApiError:
    """The spec's 404."""
    return ApiError(404, "not_found", message)


# Tornado raises HTTPError for what it rejects before our code runs.
_HTTP_CODES = {
    400: "invalid_field",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "not_ready",
}


def to_api_error(exc: BaseException | None, status: int = 500) -> ApiError:
    """The ApiError a client gets for `exc` (or for a bare status when exc is None)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OrderArchived):  # before OrderNotFound, its base: never "never existed"
        return ApiError(410, "archived", f"order {exc.order_id} was archived in {exc.archive}; an operator can "
                        f"bring it back with `engine archive --restore {exc.archive}`", extra={"archive": exc.archive})
    if isinstance(exc, OrderNotFound):
        return not_found("no such order")
    if isinstance(exc, ClientOrderIdConflict):
        return ApiError(409, "conflict", "clientOrderId is already used by a different order",
                        field="clientOrderId")
    if isinstance(exc, RiskLimitExceeded):
        return ApiError(422, "risk_limit", exc.message, exc.field,
                        extra={"limit": exc.limit, "value": exc.value, **exc.figures})
    if isinstance(exc, BusError):
        return ApiError(503, "not_ready", "the job and event bus cannot be reached")
    if isinstance(exc, VenueError):
        return ApiError(400, exc.code, exc.message)
    if isinstance(exc, StorageError):
        return ApiError(503, "not_ready", "storage is not available")
    if isinstance(exc, HTTPError):
        status = exc.status_code
    if status in _HTTP_CODES:
        return ApiError(status, _HTTP_CODES[status], _http_message(status, exc))
    if status < 500:
        return ApiError(status, "invalid_field", _http_message(status, exc))
    return ApiError(500, "internal_error", "internal server error")


def is_outage(error: ApiError) -> bool:
    """True for a 5xx that is expected while a dependency is down or the server is full (503),
    as opposed to a bug (500 `internal_error`): worth one WARNING line, never a traceback."""
    return error.status >= 500 and error.code != "internal_error"


def _http_message(status: int, exc: BaseException | None) -> str:
    if status == 404:
        return "no such resource"
    if status == 405:
        return "method not allowed here"
    if isinstance(exc, HTTPError) and exc.log_message and status == 400:
        return str(exc.log_message % exc.args if exc.args else exc.log_message)
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
