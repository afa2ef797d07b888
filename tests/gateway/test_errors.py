"""Every error from every route is one RFC 9457 application/problem+json shape."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid

import pytest
from falcon import testing

from services.gateway.app import create_app
from shared import orgs
from shared import tasks as t
from shared.logs import JsonFormatter
from tests.conftest import auth, multipart, upload

PROBLEM_MEMBERS = {"type", "title", "status", "detail"}


def assert_problem(result, status: int, **members) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == "application/problem+json"
    body = result.json
    assert PROBLEM_MEMBERS <= set(body), body
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["request_id"] == result.headers["x-request-id"]
    for name, value in members.items():
        assert body[name] == value, body
    return body


def unstarted_task(rt, key: str) -> t.Task:
    """A queued task that no worker was told about."""
    with rt.db.transaction() as cur:
        organization_id, _ = orgs.authenticate(cur, key)
        return t.create_task(cur, organization_id=organization_id, kind="upload", queue_name="upload",
                             actor_name="run_upload", progress_unit="bytes", actor="test")


def test_unknown_route_is_a_404_problem(client):
    assert_problem(client.simulate_get("/no/such/route"), 404)
    assert_problem(client.simulate_get("/api/tasks/not-a-uuid/"), 404)


def test_unknown_task_is_a_404_problem(client, api_key):
    assert_problem(client.simulate_get(f"/api/tasks/{uuid.uuid4()}/", headers=auth(api_key)), 404,
                   title="Task Not Found")


@pytest.mark.parametrize("action", ["pause", "resume", "revoke"])
def test_control_endpoints_called_with_get_are_405_with_allow(client, api_key, action):
    result = client.simulate_get(f"/api/{action}/{uuid.uuid4()}/", headers=auth(api_key))
    assert_problem(result, 405)
    assert "POST" in result.headers["allow"]


def test_refused_transition_is_a_409_problem_naming_the_state(client, api_key, rt):
    # Given a task revoked before it started
    task = unstarted_task(rt, api_key)
    result = client.simulate_post(f"/api/revoke/{task.id}/", headers=auth(api_key))
    assert result.status_code == 200 and result.json["state"] == "revoked"
    # When it is paused
    result = client.simulate_post(f"/api/pause/{task.id}/", headers=auth(api_key))
    # Then the problem says why, with the current state
    assert_problem(result, 409, state="revoked", task_id=str(task.id), title="Invalid Task Transition")


def test_bad_parameters_are_400_problems(client, api_key, rt):
    assert_problem(client.simulate_post(f"/api/pause/{uuid.uuid4()}/", params={"wait": "soon"},
                                        headers=auth(api_key)), 400, parameter="wait")
    assert_problem(client.simulate_get("/api/tasks/", params={"limit": "0"}, headers=auth(api_key)), 400)
    # Found by schemathesis: an offset past PostgreSQL's bigint was a 500.
    assert_problem(client.simulate_get("/api/tasks/", params={"offset": str(2**64)}, headers=auth(api_key)),
                   400)
    assert_problem(client.simulate_get("/api/tasks/", params={"state": "sleeping"}, headers=auth(api_key)),
                   400, parameter="state")
    task = unstarted_task(rt, api_key)
    assert_problem(client.simulate_get(f"/api/tasks/{task.id}/", params={"events": "perhaps"},
                                       headers=auth(api_key)), 400)


def test_missing_or_bad_key_is_a_401_problem(client):
    result = client.simulate_get("/api/tasks/")
    assert_problem(result, 401)
    assert result.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.simulate_get("/api/tasks/", headers={"Authorization": "Basic abc"}), 401)


def test_a_status_poll_refuses_missing_unknown_and_revoked_keys_and_hides_other_orgs_tasks(client, api_key, rt):
    # Given a task of the key's organization
    task_id = upload(client, api_key, b"response_id,form_id,submitted_at\n").json["task_id"]
    path = f"/api/tasks/{task_id}/"
    assert client.simulate_get(path, headers=auth(api_key)).status_code == 200
    # A missing, malformed or unknown key is a 401 that names the problem, whether the task exists or not
    assert_problem(client.simulate_get(path), 401)
    assert_problem(client.simulate_get(path, headers={"Authorization": "Basic abc"}), 401)
    for unknown in (path, f"/api/tasks/{uuid.uuid4()}/"):
        result = client.simulate_get(unknown, headers=auth("ck_not-a-key"))
        assert assert_problem(result, 401)["detail"] == "the API key is not valid"
        assert result.headers["www-authenticate"].startswith("Bearer")
    # Another organization's key sees no such task
    with rt.db.transaction() as cur:
        other = orgs.create_api_key(cur, f"other-{uuid.uuid4()}")
    assert_problem(client.simulate_get(path, headers=auth(other)), 404)
    # And a revoked key is refused at once
    with rt.db.transaction() as cur:
        cur.execute("UPDATE api_keys SET revoked_at = now() WHERE organization_id = "
                    "(SELECT organization_id FROM tasks WHERE id = %s)", (task_id,))
    assert_problem(client.simulate_get(path, headers=auth(api_key)), 401)


def test_upload_errors_are_413_415_422_problems(rt, api_key, client):
    small_settings = dataclasses.replace(rt.settings, max_upload_bytes=100)
    small = testing.TestClient(create_app(rt.db, rt.broker, small_settings))
    assert_problem(upload(small, api_key, b"response_id,form_id,submitted_at\n" + b"x" * 200), 413,
                   max_upload_bytes=100)
    assert_problem(client.simulate_post("/api/upload-file/", body=b"a,b",
                                        headers={"Content-Type": "text/csv", **auth(api_key)}), 415)
    assert_problem(upload(client, api_key, b"not,a,header\n"), 422)
    body, headers = multipart(b"response_id,form_id,submitted_at\n", field="attachment")
    assert_problem(client.simulate_post("/api/upload-file/", body=body, headers={**headers, **auth(api_key)}),
                   400, parameter="file")


class Explodes:
    def on_get(self, req, resp):
        raise RuntimeError("secret internals: password=hunter2")


def test_unexpected_exception_is_a_500_problem_traceable_in_the_log(rt):
    # Given an app with a route that fails unexpectedly, and the JSON log on
    app = create_app(rt.db, rt.broker, rt.settings)
    app.add_route("/health/explodes", Explodes())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("collect.gateway")
    logger.addHandler(handler)
    try:
        # When it is called
        result = testing.TestClient(app).simulate_get("/health/explodes")
    finally:
        logger.removeHandler(handler)
    # Then the body is a 500 problem with a request id and no internals
    body = assert_problem(result, 500, title="Internal Server Error")
    assert body["request_id"] in body["detail"]
    assert "hunter2" not in result.text and "Traceback" not in result.text
    # And the log line with the same request id has the traceback
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(entries) == 1
    assert entries[0]["request_id"] == body["request_id"]
    assert entries[0]["level"] == "error"
    assert "RuntimeError: secret internals" in entries[0]["exception"]
