"""Conditional GET on the task reads: an ETag on each 200, 304 with no body while nothing changed, a new
body as soon as anything does. The dashboard's once-a-second polling relies on it."""

from __future__ import annotations

from services.upload.sample_data import csv_bytes
from tests.conftest import auth, upload


def get(client, path: str, key: str, etag: str | None = None):
    headers = auth(key)
    if etag:
        headers["If-None-Match"] = etag
    return client.simulate_get(path, headers=headers)


def test_an_unchanged_task_list_answers_304_and_a_state_change_a_new_200(idle_client, api_key):
    # Given a queued task (no worker consumes the idle broker's queues)
    task_id = upload(idle_client, api_key, csv_bytes(5)).json["task_id"]
    first = get(idle_client, "/api/tasks/", api_key)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('"') and first.headers["Cache-Control"] == "private, no-cache"
    assert first.headers["Vary"] == "Authorization"
    # When the list is asked for again with that ETag
    again = get(idle_client, "/api/tasks/", api_key, etag)
    # Then it is 304 Not Modified, with no body and the same ETag
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    # When the task changes state
    assert idle_client.simulate_post(f"/api/pause/{task_id}/", headers=auth(api_key)).status_code == 200
    # Then the same conditional request gets the new list and a new ETag
    changed = get(idle_client, "/api/tasks/", api_key, etag)
    assert changed.status_code == 200
    assert changed.json["tasks"][0]["state"] == "paused"
    assert changed.headers["ETag"] != etag


def test_task_detail_and_its_event_log_are_conditional_too(idle_client, api_key):
    task_id = upload(idle_client, api_key, csv_bytes(5)).json["task_id"]
    for path in (f"/api/tasks/{task_id}/", f"/api/tasks/{task_id}/?events=1"):
        first = get(idle_client, path, api_key)
        assert first.status_code == 200
        assert get(idle_client, path, api_key, first.headers["ETag"]).status_code == 304
        # A weak validator and a list of them match as well (If-None-Match uses the weak comparison).
        assert get(idle_client, path, api_key, f'"other", W/{first.headers["ETag"]}').status_code == 304
        assert get(idle_client, path, api_key, '"other"').status_code == 200
    detail = get(idle_client, f"/api/tasks/{task_id}/?events=1", api_key)
    idle_client.simulate_post(f"/api/pause/{task_id}/", headers=auth(api_key))
    after = get(idle_client, f"/api/tasks/{task_id}/?events=1", api_key, detail.headers["ETag"])
    assert after.status_code == 200
    assert [e["to_state"] for e in after.json["events"]] == ["queued", "paused"]


def test_errors_and_writes_carry_no_etag(idle_client, api_key):
    missing = get(idle_client, "/api/tasks/00000000-0000-4000-8000-000000000000/", api_key, "*")
    assert missing.status_code == 404
    assert "ETag" not in missing.headers
    created = upload(idle_client, api_key, csv_bytes(5))
    assert created.status_code == 202
    assert "ETag" not in created.headers
