"""Serves the dashboard page at `/` and its scripts and styles, from the package's static/ folder."""

from __future__ import annotations

from pathlib import Path

import falcon

STATIC = Path(__file__).resolve().parent / "static"
ASSETS_PREFIX = "/dashboard/assets"
# The page may load and call nothing but this app: no CDN, no other host, no inline script.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class DashboardPageResource:
    """GET / — the dashboard's HTML page (the API key is asked for by the page, never sent in a URL)."""

    def __init__(self) -> None:
        self._page = (STATIC / "index.html").read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self._page
        resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("X-Content-Type-Options", "nosniff")
        # Revalidate on every load, so a new release's page is never mixed with old assets.
        resp.cache_control = ["no-cache"]


def add_dashboard_routes(app: falcon.App) -> None:
    """Route `/` to the dashboard page and ASSETS_PREFIX to its static files."""
    app.add_route("/", DashboardPageResource())
    app.add_static_route(ASSETS_PREFIX, str(STATIC))
