"""RFC 9457 problem details: the one shape of every error the API returns."""

from __future__ import annotations

import json

import falcon

from shared.task_states import TaskState

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
                 "it is completed",
                 {"state": TaskState.COMPLETED.value, "task_id": "0b7f5c8e-9d0a-4c3e-8f1b-2a6d4e9c7b10"},
                 "The task's current state (in `state`) does not allow this change."),
    "ContentTooLarge": (413, "Payload Too Large",
                        "the file is larger than MAX_UPLOAD_BYTES (1073741824 bytes)",
                        {"max_upload_bytes": 1073741824}, "The file is larger than the server accepts."),
    "UriTooLong": (414, "URI Too Long", "Request Line is too large (5114 > 4094)", {},
                   "The request line (method, path and query string) is longer than 4094 bytes; refused before "
                   "the request is read."),
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
