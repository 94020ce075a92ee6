"""The Tornado application: every route of the public API, in one list."""
from __future__ import annotations

from tornado.routing import PathMatches
from tornado.web import Application

from config import Settings
from storage.runtime import Storage
from web.admin import AuditHandler
from web.admin_keys import CancelAllHandler, KeyHandler, KeysHandler
from web.admin_halts import HaltHandler, HaltsHandler, ResumeHandler
from web.base import MAX_BODY_BYTES, ApiHandler, NotFoundHandler, log_request
from web.dashboard import DashboardHandler
from web.market import QuoteHandler, SimLaunchHandler, SimPoolsHandler, SimSwapsHandler, TokensHandler, quote_now
from web.openapi import OpenApiHandler
from web.ops import HealthHandler, MetricsHandler, ReadyHandler
from web.orders import CancelHandler, OrderHandler, OrderListHandler, SubmitHandler
from web.schedules import PauseHandler, ResumeScheduleHandler
from web.services import Services
from web.sockets import ListenSocket, SubmitSocket
from web.webhooks import DeliveriesHandler, WebhookSecretHandler


class WebSocketUpgrade(PathMatches):
    """Matches the path only for a WebSocket upgrade, so one path can serve HTTP and WebSocket."""

    def match(self, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return None
        return super().match(request)


class UpgradeRequiredHandler(ApiHandler):
    """A WebSocket-only path reached without an upgrade: 405 for every method."""


def make_app(storage: Storage, settings: Settings, services: Services | None = None) -> Application:
    """The application; `app.services` holds what handlers share (start it on the IOLoop)."""
    services = services or Services(storage, settings)
    if services.quotes is None:
        services.stream_quotes(lambda request: quote_now(storage.chain, request))
    deps = {"services": services}
    app = Application(
        [
            (WebSocketUpgrade(r"/api/orders/execute"), SubmitSocket, deps),
            (r"/api/orders/execute", SubmitHandler, deps),
            (r"/api/orders", OrderListHandler, deps),
            (r"/api/orders/([^/]+)", OrderHandler, deps),
            (r"/api/orders/([^/]+)/cancel", CancelHandler, deps),
            (r"/api/orders/([^/]+)/pause", PauseHandler, deps),
            (r"/api/orders/([^/]+)/resume", ResumeScheduleHandler, deps),
            (r"/api/orders/([^/]+)/deliveries", DeliveriesHandler, deps),
            (r"/api/webhooks/secret", WebhookSecretHandler, deps),
            (r"/api/quote", QuoteHandler, deps),
            (r"/api/tokens", TokensHandler, deps),
            (r"/api/sim/swaps", SimSwapsHandler, deps),
            (r"/api/sim/pools", SimPoolsHandler, deps),
            (r"/api/sim/launch", SimLaunchHandler, deps),
            (r"/api/admin/audit", AuditHandler, deps),
            (r"/api/admin/keys", KeysHandler, deps),
            (r"/api/admin/keys/([^/]+)", KeyHandler, deps),
            (r"/api/admin/keys/([^/]+)/cancel-all", CancelAllHandler, deps),
            (r"/api/admin/halt", HaltHandler, deps),
            (r"/api/admin/resume", ResumeHandler, deps),
            (r"/api/admin/halts", HaltsHandler, deps),
            (WebSocketUpgrade(r"/ws"), ListenSocket, deps),
            (r"/ws", UpgradeRequiredHandler, deps),
            (r"/healthz", HealthHandler, deps),
            (r"/readyz", ReadyHandler, deps),
            (r"/metrics", MetricsHandler, deps),
            (r"/api/openapi.json", OpenApiHandler, deps),
            (r"/", DashboardHandler, deps),
            (r"/dashboard/([a-z]+\.(?:js|css|svg))", DashboardHandler, deps),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        websocket_max_message_size=MAX_BODY_BYTES,
        websocket_ping_interval=20,
        compress_response=False,
        log_function=log_request,
    )
    app.services = services
    return app
