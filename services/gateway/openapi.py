"""The OpenAPI 3.1 document, generated from the app's own routes.

Each resource documents itself: the YAML after `---` in a responder's docstring (`on_get`, `on_post`,
...), or in the resource class's docstring, is that operation, and a resource may contribute reusable
pieces in an `openapi_components` attribute ({"parameters": {...}, "responses": {...}}). This module
only walks Falcon's router, collects them with apispec, and adds what the gateway itself answers for
every route: the 401 of the API-key check on /api/ routes, the 414 of a request line over gunicorn's limit
and the 500 of an unexpected error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import falcon
from apispec import APISpec
from apispec.yaml_utils import load_operations_from_docstring

from services.http.problems import PROBLEM_SCHEMA, problem_responses
from shared.health import HEALTH_SCHEMA
from shared.task_states import TaskState
from shared.tasks import TASK_JSON_SCHEMA

OPENAPI_VERSION = "3.1.0"
DESCRIPTION = """\
Start uploads (and exports) as tasks, follow their progress, and pause, resume or revoke them.

Every `/api/` request carries an API key: `Authorization: Bearer <key>` (`collect keys create --org NAME`
makes one). Every error is an RFC 9457 `application/problem+json` body with `type`, `title`, `status`,
`detail` and a `request_id` to quote; a 409 also names the task's current `state`.
"""
# Falcon route fields, e.g. `{task_id:uuid}`.
_FIELD = re.compile(r"\{(\w+)(?::(\w+)[^}]*)?\}")
_CONVERTER_SCHEMAS = {"uuid": {"type": "string", "format": "uuid"}, "int": {"type": "integer"}}
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


_EXAMPLE_TASK = {
    "task_id": "0b7f5c8e-9d0a-4c3e-8f1b-2a6d4e9c7b10", "kind": "upload", "state": TaskState.QUEUED.value,
    "progress": {"done": 0, "total": None, "unit": "bytes", "percent": None},
    "rate_per_second": None, "eta_seconds": None,
    "params": {"file_id": "5d2c8a41-7e3b-4f9a-b6c0-1e8d7f2a9b35", "filename": "responses.csv",
               "size_bytes": 52428800},
    "created_at": "2026-11-27T10:00:00Z", "started_at": None, "paused_at": None, "pause_deadline": None,
    "finished_at": None, "updated_at": "2026-11-27T10:00:00Z", "revoke_reason": None, "queue_position": 1,
    "result": None, "error": None,
}
_STARTED = {"started_at": "2026-11-27T10:00:01Z", "updated_at": "2026-11-27T10:00:31Z", "queue_position": None,
            "progress": {"done": 20971520, "total": 52428800, "unit": "bytes", "percent": 40.0}}
# Task JSON in each state a response can show, for the documented responses to refer to.
TASK_EXAMPLES = {
    "TaskQueued": _EXAMPLE_TASK,
    "TaskRunning": {**_EXAMPLE_TASK, **_STARTED, "state": TaskState.RUNNING.value, "rate_per_second": 699050.7,
                    "eta_seconds": 45.0},
    "TaskPausing": {**_EXAMPLE_TASK, **_STARTED, "state": TaskState.PAUSING.value, "rate_per_second": 699050.7,
                    "eta_seconds": 45.0},
    "TaskPaused": {**_EXAMPLE_TASK, **_STARTED, "state": TaskState.PAUSED.value, "paused_at": "2026-11-27T10:00:31Z",
                   "pause_deadline": "2026-11-27T10:05:31Z"},
    "TaskRevoking": {**_EXAMPLE_TASK, **_STARTED, "state": TaskState.REVOKING.value, "revoke_reason": "user"},
    "TaskRevoked": {**_EXAMPLE_TASK, **_STARTED, "state": TaskState.REVOKED.value, "revoke_reason": "user",
                    "finished_at": "2026-11-27T10:00:32Z"},
    "TaskCompleted": {**_EXAMPLE_TASK, **_STARTED, "state": TaskState.COMPLETED.value,
                      "progress": {"done": 52428800, "total": 52428800, "unit": "bytes", "percent": 100.0},
                      "finished_at": "2026-11-27T10:01:15Z",
                      "result": {"rows_inserted": 249998, "rows_skipped_duplicate": 1, "rows_rejected": 1,
                                 "rejections": [{"line": 7, "reason": "response_id is not a UUID"}]}},
}


def documented_path(uri_template: str) -> str:
    """The path as the API contract writes it: fields without their converters, and /api/ paths with a
    trailing slash (the app strips trailing slashes before routing, so both spellings work)."""
    path = _FIELD.sub(r"{\1}", uri_template)
    if path.startswith("/api/") and not path.endswith("/"):
        path += "/"
    return path


def routes(app: falcon.App) -> Iterator[tuple[str, object, dict[str, Any]]]:
    """(URI template, resource, {http method: responder}) for every route added to the app, leaving
    out the responders Falcon supplies itself (405 for unsupported methods, OPTIONS)."""
    stack = list(app._router._roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.resource is None:
            continue
        responders = {}
        for method, responder in (node.method_map or {}).items():
            function = responder.func if isinstance(responder, partial) else responder
            if not getattr(function, "__module__", "").startswith("falcon."):
                responders[method.lower()] = function
        yield node.uri_template, node.resource, responders


def _path_parameters(uri_template: str, declared: set[str]) -> list[dict[str, Any]]:
    """The route's fields as path parameters, typed by their converters; a field the operations
    declare themselves (e.g. with an enum) is left to them."""
    return [{"name": name, "in": "path", "required": True,
             "schema": dict(_CONVERTER_SCHEMAS.get(converter or "", {"type": "string"}))}
            for name, converter in _FIELD.findall(uri_template) if name not in declared]


def _register(spec: APISpec, kind: str, name: str, component: dict[str, Any]) -> None:
    if kind == "parameters":
        spec.components.parameter(name, component["in"], component)
    elif kind == "schemas":
        spec.components.schema(name, component)
    elif kind == "responses":
        spec.components.response(name, component)
    elif kind == "examples":
        spec.components.example(name, component)
    else:
        raise ValueError(f"openapi_components: unknown component kind {kind!r}")


def build_spec(app: falcon.App, *, title: str = "Collect Tasks API",
               version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI document of every route whose responders carry a YAML docstring."""
    spec = APISpec(title=title, version=version, openapi_version=OPENAPI_VERSION,
                   info={"description": DESCRIPTION})
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer ck_...`"})
    spec.components.schema("Task", TASK_JSON_SCHEMA)
    spec.components.schema("Problem", PROBLEM_SCHEMA)
    spec.components.schema("Health", HEALTH_SCHEMA)
    for name, response in problem_responses().items():
        spec.components.response(name, response)
    for name, example in TASK_EXAMPLES.items():
        spec.components.example(name, {"value": example})
    spec.components.example("TaskPage", {"value": {
        "tasks": [TASK_EXAMPLES["TaskRunning"]], "total": 3, "limit": 1, "offset": 0,
        "next": "/api/tasks/?state=running&state=paused&limit=1&offset=1"}})

    registered: set[tuple[str, str]] = set()
    parameter_names: dict[str, str] = {}  # component name -> the parameter's name
    documented = []
    for uri_template, resource, responders in sorted(routes(app), key=lambda route: route[0]):
        for kind, components in getattr(resource, "openapi_components", {}).items():
            for name, component in components.items():
                if (kind, name) not in registered:
                    registered.add((kind, name))
                    _register(spec, kind, name, component)
                    if kind == "parameters":
                        parameter_names[name] = component["name"]
        # A resource class's docstring may document its operations (handy when subclasses share one
        # responder), a responder's own docstring overrides it.
        class_operations = load_operations_from_docstring(type(resource).__doc__ or "")
        operations = {}
        for method, responder in responders.items():
            operation = load_operations_from_docstring(responder.__doc__ or "").get(method)
            operation = operation or class_operations.get(method)
            if operation:
                operations[method] = operation
        if operations:
            documented.append((uri_template, operations))

    for uri_template, operations in documented:
        api = uri_template.startswith("/api/")
        for method, operation in operations.items():
            if method not in _HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if api:
                operation.setdefault("security", [{"bearerAuth": []}])
                responses.setdefault(401, {"$ref": "#/components/responses/Unauthorized"})
            responses.setdefault(414, {"$ref": "#/components/responses/UriTooLong"})
            responses.setdefault(500, {"$ref": "#/components/responses/InternalServerError"})
        declared = {parameter_names.get(p, p) if isinstance(p, str) else p["name"]
                    for operation in operations.values() for p in operation.get("parameters", [])}
        spec.path(path=documented_path(uri_template), operations=operations,
                  parameters=_path_parameters(uri_template, declared))
    return spec.to_dict()
