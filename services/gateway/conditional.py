"""Conditional GET for the API's JSON reads: an ETag on every 200 and `304 Not Modified` when the caller's
If-None-Match already names it.

Why: the dashboard polls the task list and the open task about once a second. A 304 carries no body, so an
unchanged page costs the client nothing to transfer or redraw, and the poller can tell "nothing changed"
at a glance. The ETag is a hash of the body as it would be sent, so it changes exactly when any field
does (including rate and ETA while a task runs) and differs between organizations. The server still reads
the database for each poll: what keeps 50 dashboards cheap is that each poll is one short indexed query.
"""

from __future__ import annotations

import hashlib

import falcon


class ConditionalGet:
    """Adds a strong ETag to successful JSON GET responses under `/api/` and answers 304 when it matches."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        if not (req_succeeded and req.method in ("GET", "HEAD") and req.path.startswith("/api/")
                and resp.status_code == 200 and resp.media is not None and resp.stream is None):
            return
        body = resp.render_body()
        tag = hashlib.sha256(body).hexdigest()[:32]
        resp.etag = tag  # falcon quotes it
        # The body depends on whose key asked; caches must revalidate before reusing it.
        resp.vary = ["Authorization"]
        resp.cache_control = ["private", "no-cache"]
        if req.if_none_match and any(str(given) in (tag, "*") for given in req.if_none_match):
            resp.status = falcon.HTTP_304
            resp.media = None
            resp.data = None
            # A 304 has no content, so it names no content type (RFC 9110 15.4.5).
            resp.content_type = None
        else:
            resp.data = body
