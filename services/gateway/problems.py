"""RFC 9457 problem details: the one shape of every error the API returns."""

from __future__ import annotations

import json
import logging
import uuid

import falcon

logger = logging.getLogger("collect.gateway")

PROBLEM_JSON = "application/problem+json"


class Problem(falcon.HTTPError):
    """An HTTP error with a detail message and extra members (e.g. the task's current `state`)."""

    def __init__(self, status, detail: str, *, title: str | None = None, headers=None, **members) -> None:
        super().__init__(status, title=title, description=detail, headers=headers)
        self.members = members

    def to_dict(self, obj_type=dict):
        body = super().to_dict(obj_type)
        body.update(self.members)
        return body


def serialize_problem(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    code = exc.status_code
    status_line = falcon.code_to_http_status(code)
    title = exc.title if exc.title and exc.title != status_line else status_line.split(" ", 1)[1]
    body = {
        "type": "about:blank",
        "title": title,
        "status": code,
        "detail": exc.description or title,
    }
    if isinstance(exc, Problem):
        body.update(exc.members)
    request_id = getattr(req.context, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    resp.content_type = PROBLEM_JSON
    resp.text = json.dumps(body)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
    """Any exception that is not an HTTP error: logged with the request id, answered 500 without details."""
    if isinstance(exc, falcon.HTTPError):
        raise exc
    request_id = getattr(req.context, "request_id", None) or str(uuid.uuid4())
    logger.exception("unhandled error in %s %s (request_id=%s)", req.method, req.path, request_id)
    raise Problem(falcon.HTTP_500, f"an unexpected error occurred; quote request id {request_id}",
                  title="Internal Server Error")
