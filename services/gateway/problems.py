"""RFC 9457 problem details: the one shape of every error the API returns."""

from __future__ import annotations

import json
import logging
import uuid

import falcon
import redis

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


# Seconds a client is asked to wait (Retry-After) when a dependency is down: about how long a restart or
# failover of PostgreSQL or Redis takes.
RETRY_AFTER_SECONDS = 5


def handle_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
    """PostgreSQL or Redis cannot be reached: 503 with Retry-After, naming the dependency and the general
    reason; the details (host, port, database) go to the log only."""
    from shared.health import report_failure

    dependency = "redis" if isinstance(exc, redis.RedisError) else "postgresql"
    reason = report_failure("Redis" if dependency == "redis" else "PostgreSQL", exc)
    name = "the task queue (Redis)" if dependency == "redis" else "the database (PostgreSQL)"
    raise Problem(falcon.HTTP_503, f"{name} is unavailable ({reason}); retry in a few seconds",
                  title="Service Unavailable", headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                  dependency=dependency, reason=reason)


def body_stalled_handler(stall_seconds: int):
    """A handler for a request body that sent nothing for `stall_seconds` (the socket's read timeout,
    set by the gateway's worker): 400. Whatever the request was storing has been rolled back by then,
    since the timeout is raised out of the read inside its transaction."""

    def handle_body_stalled(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
        logger.warning("%s %s: the request body stalled for %ss; aborted", req.method, req.path, stall_seconds)
        raise Problem(falcon.HTTP_400, f"the request body stalled: nothing arrived for {stall_seconds} seconds "
                                       "(BODY_STALL_SECONDS); nothing was stored", title="Request Body Stalled",
                      headers={"Connection": "close"})

    return handle_body_stalled


# The documented shape of every error (OpenAPI components; see services.gateway.openapi).
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "description": "Always `about:blank`: the "
                 "status code says what kind of problem it is."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong, for a human."},
        "request_id": {"type": "string", "description": "Quote it when reporting a problem: the server log "
                       "has the same id."},
        "parameter": {"type": "string", "description": "The request parameter that was wrong."},
        "state": {"type": "string", "description": "The task's current state (409)."},
        "task_id": {"type": "string", "format": "uuid"},
        "max_upload_bytes": {"type": "integer", "description": "The upload size limit (413)."},
        "dependency": {"type": "string", "enum": ["postgresql", "redis"],
                       "description": "The dependency that is unavailable (503)."},
        "reason": {"type": "string", "description": "Why, in general terms: `connection refused`, `timeout`, "
                   "`authentication failed`, ... (503)."},
    },
    "additionalProperties": True,
}

# name: (status, title, detail, extra members, description): one documented response per error status.
_PROBLEM_RESPONSES = {
    "BadRequest": (400, "Bad Request", "limit must be between 1 and 200", {"parameter": "limit"},
                   "A request parameter or the body is malformed."),
    "Unauthorized": (401, "Unauthorized", "send your API key as 'Authorization: Bearer <key>'", {},
                     "The API key is missing or not valid."),
    "NotFound": (404, "Task Not Found", "no task 0b7f5c8e-9d0a-4c3e-8f1b-2a6d4e9c7b10 in your organization",
                 {},
                 "No such task in the caller's organization (or no such route)."),
    "Gone": (410, "Gone", "the export's file was deleted: files are kept 72 hours (EXPORT_RETENTION_HOURS) "
             "after the export completes; start a new export", {},
             "The export's file was deleted by retention."),
    "Conflict": (409, "Invalid Task Transition", "cannot pause task 0b7f5c8e-9d0a-4c3e-8f1b-2a6d4e9c7b10: "
                 "it is completed", {"state": "completed", "task_id": "0b7f5c8e-9d0a-4c3e-8f1b-2a6d4e9c7b10"},
                 "The task's current state (in `state`) does not allow this change."),
    "ContentTooLarge": (413, "Payload Too Large",
                        "the file is larger than MAX_UPLOAD_BYTES (1073741824 bytes)",
                        {"max_upload_bytes": 1073741824}, "The file is larger than the server accepts."),
    "UnsupportedMediaType": (415, "Unsupported Media Type",
                             "send the CSV as multipart/form-data with the file in the field 'file'", {},
                             "The body is not multipart/form-data."),
    "UnprocessableContent": (422, "Bad CSV Header", "the file cannot be imported: the header has no column "
                             "'submitted_at'", {}, "The file is not a CSV file this service can import."),
    "ServiceUnavailable": (503, "Service Unavailable", "the database (PostgreSQL) is unavailable (connection "
                           "refused); retry in a few seconds", {"dependency": "postgresql",
                                                                "reason": "connection refused"},
                           "PostgreSQL or Redis cannot be reached; retry after the `Retry-After` seconds."),
    "InternalServerError": (500, "Internal Server Error", "an unexpected error occurred; quote request id "
                            "4f6c2a9e0d1b4e7a9c3f5b8d2e6a1c04", {}, "An unexpected error; the server log has "
                            "the details under the request id."),
}


def problem_responses() -> dict[str, dict]:
    """OpenAPI response objects for every error status, each with its example."""
    responses = {}
    for name, (status, title, detail, members, description) in _PROBLEM_RESPONSES.items():
        schema: dict = {"$ref": "#/components/schemas/Problem"}
        # Members a client may branch on are promised; `parameter` is only a hint.
        required = sorted(set(members) - {"parameter"})
        if required:
            schema = {"allOf": [schema, {"required": required}]}
        example = {"type": "about:blank", "title": title, "status": status, "detail": detail, **members,
                   "request_id": "4f6c2a9e0d1b4e7a9c3f5b8d2e6a1c04"}
        responses[name] = {"description": description,
                           "content": {PROBLEM_JSON: {"schema": schema, "example": example}}}
    return responses
