"""The OpenAPI document covers every /api/ and /health/ route, and documents what each can answer."""

from __future__ import annotations

import jsonschema_rs
import pytest
from falcon import testing

from services.gateway.openapi import documented_path, routes
from services.http.problems import PROBLEM_JSON


@pytest.fixture(scope="module")
def document(app) -> dict:
    result = testing.TestClient(app).simulate_get("/docs/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    return result.json


def resolve(document: dict, node):
    """`node` with every local $ref replaced by what it points to."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(document, target)
        return {key: resolve(document, value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(document, item) for item in node]
    return node


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, resolve(document, operation)


def test_it_is_openapi_3_1_with_the_bearer_scheme(document):
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer ck_...`"}


def test_every_api_and_health_route_is_documented(app, document):
    for uri_template, _, responders in routes(app):
        if not uri_template.startswith(("/api/", "/health/")):
            continue
        path = documented_path(uri_template)
        assert path in document["paths"], f"{uri_template} is not documented"
        for method in responders:
            assert method in document["paths"][path], f"{method.upper()} {uri_template} is not documented"


def test_the_contract_paths_and_parameters(document):
    paths = document["paths"]
    for action in ("pause", "resume", "revoke"):
        operation = resolve(document, paths[f"/api/{action}/{{task_id}}/"]["post"])
        assert "wait" in {p["name"] for p in operation["parameters"]}
        task_id = paths[f"/api/{action}/{{task_id}}/"]["parameters"][0]
        assert task_id["schema"] == {"type": "string", "format": "uuid"}
    listing = resolve(document, paths["/api/tasks/"]["get"])
    assert {p["name"] for p in listing["parameters"]} == {"state", "kind", "id_prefix", "limit", "offset"}
    kind = next(p for p in listing["parameters"] if p["name"] == "kind")
    assert kind["schema"]["items"]["enum"] == ["upload", "export"]
    request_body = resolve(document, paths["/api/upload-file/"]["post"])["requestBody"]
    body = request_body["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["file"] == {"type": "string", "format": "binary",
                                                    "description": "The CSV file (UTF-8)."}
    service = resolve(document, paths["/health/{service}"]["get"])["parameters"]
    assert service == [{"name": "service", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": ["upload", "export", "control"]}}]


def test_error_statuses_are_problems_and_api_routes_need_the_key(document):
    expected = {
        ("/api/pause/{task_id}/", "post"): {"200", "202", "400", "401", "404", "409", "414", "500"},
        ("/api/resume/{task_id}/", "post"): {"202", "400", "401", "404", "409", "414", "500"},
        ("/api/revoke/{task_id}/", "post"): {"200", "202", "400", "401", "404", "409", "414", "500"},
        ("/api/tasks/", "get"): {"200", "400", "401", "414", "500"},
        ("/api/tasks/{task_id}/", "get"): {"200", "400", "401", "404", "414", "500"},
        ("/api/upload-file/", "post"): {"202", "400", "401", "413", "415", "422", "414", "500"},
        ("/api/export/", "post"): {"202", "400", "401", "414", "500"},
        ("/api/export/", "get"): {"202", "400", "401", "414", "500"},
        ("/api/tasks/{task_id}/download/", "get"): {"200", "401", "404", "409", "410", "414", "500"},
        ("/health/live", "get"): {"200", "414", "500"},
        ("/health/ready", "get"): {"200", "414", "500", "503"},
        ("/health/{service}", "get"): {"200", "404", "414", "500", "503"},
    }
    for path, method, operation in operations(document):
        assert set(operation["responses"]) == expected[(path, method)], (path, method)
        assert (operation.get("security") == [{"bearerAuth": []}]) == path.startswith("/api/")
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and status != "503":
                assert list(response["content"]) == [PROBLEM_JSON], (path, method, status)
    conflict = resolve(document, document["components"]["responses"]["Conflict"])
    assert conflict["content"][PROBLEM_JSON]["example"]["state"] == "completed"


def test_every_response_has_examples_that_fit_its_schema(document):
    checked = 0
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            for media_type, content in response["content"].items():
                examples = [e["value"] for e in content.get("examples", {}).values()]
                if "example" in content:
                    examples.append(content["example"])
                assert examples, f"{method.upper()} {path} {status} {media_type} has no example"
                validator = jsonschema_rs.Draft202012Validator(content["schema"], validate_formats=True)
                for example in examples:
                    errors = [error.message for error in validator.iter_errors(example)]
                    assert not errors, (path, method, status, errors)
                    checked += 1
    assert checked > 30
