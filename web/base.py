"""What every handler shares: the caller's key, JSON answers, errors in the spec's shape, and
its dependencies (`Services`, in web/services.py, with the executor hop).
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable
from urllib.parse import urlparse

from tornado import iostream, websocket
from tornado.log import access_log, app_log
from tornado.web import RequestHandler, stream_request_body

from config.logs import about_order
from storage import codec
from storage.runtime import Storage
from web.access import Caller, forbidden, redact_token
from web.errors import ApiError, is_outage, to_api_error
from web.services import Services

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# A body up to this size is read (and dropped) before any refusal is answered (401, 413,
# 415, 429), so the client reads a JSON answer on a connection that stays usable; beyond
# it the answer says `Connection: close` and the connection closes once it is sent.
DRAIN_LIMIT_BYTES = 1024 * 1024
SEND_BUFFER_LIMIT = 256 * 1024  # bytes a WebSocket may have unsent; beyond, it is closed (1008)
_TEXT = 0x1  # the WebSocket opcode of a text frame


def json_dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON as every response is written."""
    return codec.dumps(data)


def log_request(handler: RequestHandler) -> None:
    """The access log (the Application's `log_function`): one line per request. A 503 for an
    expected outage (database or bus down) is a WARNING with its cause, not an ERROR; only
    a bug (500) is an ERROR, and its traceback is logged by the handler."""
    status = handler.get_status()
    reason = getattr(handler, "log_reason", None)
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 or reason else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        redact_token(request)  # for handlers of Tornado's own too (a 404 names no handler of ours)
        order_id = getattr(handler, "log_order_id", None)
        access_log.log(level, "%d %s %s %.2fms%s", status, request.method, request.uri,
                       1000.0 * request.request_time(), f" ({reason})" if reason else "",
                       extra=about_order(order_id) if order_id else None)


class ApiHandler(RequestHandler):
    """A JSON endpoint: errors in the spec's shape, never HTML or a stack trace.

    `prepare` authenticates the caller (`caller`; `owner`: whose orders it acts on, None where
    no keys are configured); a `public` handler needs no key. Operator keys are refused (403)
    unless the handler `operators_read` (then `owner` is None: every order).
    """

    public = False
    operators_read = False
    caller: Caller | None = None
    owner: str | None = None
    log_reason: str | None = None  # why an expected outage answered 5xx (for the access log)
    log_order_id: Any = None  # the order the request is about (its id, made text only if logged)

    def initialize(self, services: Services) -> None:
        self.services = services
        redact_token(self.request)
        self._cors_headers()

    @property
    def storage(self) -> Storage:
        return self.services.storage

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if hasattr(self, "services"):  # not yet during __init__; again when an error clears headers
            self._cors_headers()

    def _cors_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin and origin.rstrip("/") in self.services.settings.cors_origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    def prepare(self) -> Any:
        return self.authenticate()

    def authenticate(self) -> Awaitable[None] | None:
        """Identify the caller from the request's API key and `admit_caller` it, or raise the 401
        (public handlers and CORS preflights, which browsers send without credentials, need
        none). A managed key not in the cache is looked up: then an awaitable is returned."""
        if self.public or self.request.method == "OPTIONS":
            return None
        found = self.services.keys.caller(self.request)
        if isinstance(found, Caller):
            self.admit_caller(found)
            return None
        return self._admit_later(found)

    async def _admit_later(self, found: Awaitable[Caller]) -> None:
        self.admit_caller(await found)

    def admit_caller(self, caller: Caller) -> None:
        """Decide whether this caller may use this endpoint (raise 403 if not); set `caller`
        and `owner`."""
        if caller.operator and not self.operators_read:
            raise forbidden("an operator key does not trade: use a trading key here")
        self.caller = caller
        self.owner = None if caller.operator else caller.owner

    def options(self, *args: Any) -> None:
        """CORS preflight: which methods and headers a browser may use here."""
        self.set_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods()))
        self.set_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def write_json(self, data: Any, status: int = 200) -> None:
        """Answer `data` as JSON with `status`."""
        self.set_status(status)
        self.finish(json_dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        error = to_api_error(exc, status_code)  # never a traceback in the answer
        self.services.metrics.answered_error(error.code)
        self.clear()
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        if error.status == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.finish(json_dumps(error.body()))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if exc is not None:  # our status (e.g. 503 for BusError), not Tornado's 500 for any exception
            status_code = to_api_error(exc, status_code).status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        error = to_api_error(value)
        if error.code == "internal_error" and self.log_order_id:  # a bug: the traceback, naming the order
            app_log.error("Uncaught exception %s\n%r", self._request_summary(), self.request,
                          exc_info=(typ, value, tb), extra=about_order(self.log_order_id))
        elif error.code == "internal_error":
            super().log_exception(typ, value, tb)  # a bug: keep the traceback (in the log only)
        elif is_outage(error):  # expected: told once, in the request's access line (a handler's
            self.log_reason = self.log_reason or f"{error.code}: {value}"  # own causes first)

    def allowed_methods(self) -> list[str]:
        """Methods this handler implements (for the 405 `Allow` header)."""
        return [m for m in ("GET", "POST", "DELETE")
                if getattr(type(self), m.lower()) is not getattr(RequestHandler, m.lower())]


class NotFoundHandler(ApiHandler):
    """`default_handler_class`: every unknown path gets the spec's 404 (under `/api` and `/ws`,
    once the key is checked, as every request there)."""

    operators_read = True  # an operator's typo is a 404 too

    async def prepare(self) -> None:
        if self.request.path.startswith(("/api/", "/ws")):
            pending = self.authenticate()
            if pending is not None:
                await pending
        raise ApiError(404, "not_found", f"no such resource: {self.request.path}")


@stream_request_body
class JsonBodyHandler(ApiHandler):
    """A POST endpoint with a JSON body of at most 64 KiB; `self.body` holds it in `post_json()`.

    The body is streamed, so a refusal decided from the headers (401, 415, 413, 429) is
    answered only once the body has been read and dropped: answering first would leave
    unread bytes on a kept-alive connection, and the client's next request there would
    be reset. A declared body over DRAIN_LIMIT_BYTES is refused at once, with
    `Connection: close`. `counts_submissions`: the request counts against KEY_RATE_LIMIT.
    """

    counts_submissions = False

    def prepare(self) -> Any:
        self.body = b""
        self._too_large = False
        self._refusal: Exception | None = None
        if self.request.method != "POST":
            return None  # nothing but POST here: 405 once the body is read
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > DRAIN_LIMIT_BYTES:
            too_large = self._payload_too_large()
            too_large.headers["Connection"] = "close"  # the body will not be read
            raise too_large
        self.request.connection.set_max_body_size(DRAIN_LIMIT_BYTES)
        try:
            pending = self.authenticate()
            if pending is not None or (self.counts_submissions and self.services.limiter is not None):
                return self._admit(pending)  # a coroutine only where keys are on: Tornado awaits it
            self._check_media_type()
        except ApiError as error:
            self._refusal = error
        return None

    async def _admit(self, pending: Awaitable[None] | None) -> None:
        try:
            if pending is not None:  # a managed key being looked up
                await pending
            if self.counts_submissions and self.services.limiter is not None:
                await self.services.limiter.admit(self.owner)
            self._check_media_type()
        except Exception as exc:  # answered once the body is read (BusError: 503)
            self._refusal = exc

    def _check_media_type(self) -> None:
        media_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")

    def data_received(self, chunk: bytes) -> None:
        if self._too_large or self._refusal is not None or self._finished:
            return  # read and dropped
        if len(self.body) + len(chunk) > MAX_BODY_BYTES:
            self._too_large, self.body = True, b""
        else:
            self.body += chunk

    async def post(self) -> None:
        """Every body handler's POST: the refusal decided from the headers (401, 415, 429, 413)
        first, whatever the subclass does; then `post_json` with `self.body`."""
        if self._finished:
            return
        self.check_body()
        await self.post_json()

    async def post_json(self) -> None:
        """The endpoint itself (a subclass's): the request passed every check; `self.body` is read."""
        raise NotImplementedError

    def check_body(self) -> None:
        """Raise the refusal decided from the headers, or the 413."""
        if self._refusal is not None:
            raise self._refusal
        if self._too_large:
            raise self._payload_too_large()

    @staticmethod
    def _payload_too_large() -> ApiError:
        return ApiError(413, "payload_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")


class SocketHandler(websocket.WebSocketHandler):
    """A WebSocket endpoint: the caller's key, JSON frames, allowed origins, handshake errors in
    the spec's shape, and a bounded send buffer (a client that stops reading is closed, 1008)."""

    owner: str | None = None
    key_id: str | None = None  # the key it authenticated with: closed when that key is revoked
    log_reason: str | None = None

    def initialize(self, services: Services) -> None:
        self.services = services
        redact_token(self.request)

    async def prepare(self) -> None:
        """Refuse the handshake (401 for the key, 403 for an operator key, and what `admit`
        refuses) in the spec's shape."""
        try:
            found = self.services.keys.caller(self.request, allow_token=True)
            caller = found if isinstance(found, Caller) else await found
            if caller.operator:
                raise forbidden("an operator key does not trade: use a trading key here")
            self.owner, self.key_id = caller.owner, caller.key_id
            await self.admit()
        except Exception as exc:  # the handshake fails with the error's status and shape
            error = to_api_error(exc)
            self.services.metrics.answered_error(error.code)
            if error.code == "internal_error":
                log.error("unexpected error in a WebSocket handshake", exc_info=True)
            elif is_outage(error):
                self.log_reason = f"{error.code}: {exc}"
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json_dumps(error.body()))

    async def admit(self) -> None:
        """Anything else the handshake must pass (the submit socket counts a submission)."""

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.ws_connection.stream.max_write_buffer_size = SEND_BUFFER_LIMIT

    def check_origin(self, origin: str) -> bool:
        """Same host (Tornado checks that first) or one of CORS_ORIGINS."""
        parsed = urlparse(origin)
        host = self.request.headers.get("Host", "")
        return parsed.netloc.lower() == host.lower() or origin.rstrip("/") in self.services.settings.cors_origins

    def finish(self, chunk: Any = None):
        # Tornado refuses a bad handshake with a plain-text body; give it our shape.
        status = self.get_status()
        if isinstance(chunk, str) and status >= 400 and self.ws_connection is None:
            self.set_header("Content-Type", "application/json; charset=utf-8")
            code = to_api_error(None, status).code
            self.services.metrics.answered_error(code)
            chunk = json_dumps({"error": {"code": code, "message": chunk}})
        return super().finish(chunk)

    def send_json(self, data: Any) -> None:
        """Send one text frame, unless the connection has gone."""
        self.send_text(json_dumps(data))

    def send_text(self, text: bytes) -> None:
        """Send JSON text already encoded (an event as the writer encoded it) as a text frame;
        past SEND_BUFFER_LIMIT unsent bytes the client is not reading: close it (1008)."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        try:
            # Not write_message: it wraps every frame in a Task, measured at ~2 KB per frame
            # still unsent (5x the frame), each logging a traceback when the connection fails it
            # and freed only by the cyclic GC. The frame writer it calls returns the stream's own
            # future, which retrieves its error itself. (No compression is negotiated here.)
            connection._write_frame(True, _TEXT, text)
        except iostream.StreamClosedError:
            return
        except iostream.StreamBufferFullError:
            log.info("closing a WebSocket whose client does not read (over %d bytes unsent)", SEND_BUFFER_LIMIT)
            connection.stream.max_write_buffer_size = None  # room for the close frame
            self.services.metrics.listener_too_slow()
            self.close(1008, "too slow: the client does not read its events")

    def send_error_frame(self, error: ApiError, close: bool = True) -> None:
        """An error frame; with `close`, then close 1008 (policy violation)."""
        self.services.metrics.answered_error(error.code)
        self.send_json({"type": "error", "error": error.to_api()})
        if close:
            self.close(1008, error.code)
