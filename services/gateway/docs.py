"""The API documentation: /docs/openapi.json (generated from the routes) and /docs/, an interactive
Swagger UI page whose scripts and styles come from the swagger-ui-bundle package and are served by the
app itself, so the page works without internet access."""

from __future__ import annotations

import json
import threading

import falcon
from swagger_ui_bundle import swagger_ui_path

from services.gateway.openapi import build_spec

ASSETS_PREFIX = "/docs/assets"
SPEC_PATH = "/docs/openapi.json"

PAGE = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Collect Tasks API</title>
    <link rel="stylesheet" type="text/css" href="{ASSETS_PREFIX}/swagger-ui.css">
    <link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{ASSETS_PREFIX}/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {{
        window.ui = SwaggerUIBundle({{
          url: "{SPEC_PATH}",
          dom_id: "#swagger-ui",
          deepLinking: true,
          // The default validator badge would call an outside service.
          validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis],
        }});
      }};
    </script>
  </body>
</html>
"""


class DocsPageResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = PAGE


class OpenApiResource:
    """Serves the document generated from `app`'s routes, built on first request (every route is added
    by then) and kept."""

    def __init__(self, app: falcon.App) -> None:
        self.app = app
        self._document: str | None = None
        self._lock = threading.Lock()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self._lock:
            if self._document is None:
                self._document = json.dumps(build_spec(self.app))
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self._document


def add_docs_routes(app: falcon.App) -> None:
    app.add_route("/docs", DocsPageResource())
    app.add_route(SPEC_PATH, OpenApiResource(app))
    app.add_static_route(ASSETS_PREFIX, str(swagger_ui_path))
