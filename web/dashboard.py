"""The dashboard: one page and its script and style, served from the package (no build step).

Everything it shows comes from the public API (`/api/...` and `/ws`), as any client's
would; no asset is loaded from outside the engine, so it works without internet.
"""
from __future__ import annotations

from pathlib import Path

from web.base import ApiHandler
from web.errors import not_found

ASSET_DIR = Path(__file__).with_name("dashboard")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Only our own files; the socket and API calls go to this same origin.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _load_assets() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in ASSET_DIR.iterdir() if path.suffix in _TYPES}


class DashboardHandler(ApiHandler):
    """`GET /` (the page) and `GET /dashboard/NAME` (its script and style); no API key needed."""

    public = True
    _assets: dict[str, bytes] | None = None

    def get(self, name: str = "index.html") -> None:
        assets = DashboardHandler._assets
        if assets is None:
            assets = DashboardHandler._assets = _load_assets()
        if name not in assets:
            raise not_found(f"no such resource: {self.request.path}")
        self.set_header("Content-Type", _TYPES[Path(name).suffix] + "; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")  # revalidate (ETag): a new engine may ship a new page
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(assets[name])
