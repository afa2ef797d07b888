"""Pause, resume, revoke and pause timeout of a running upload, through the HTTP API and a real worker."""

from __future__ import annotations

import dataclasses
import time

import pytest
from falcon import testing

from scripts.sample_data import csv_bytes
from shared import tasks as t
from tests.conftest import auth, count_responses, get_task, new_key, upload, wait_for, wait_for_state

ROWS = 20_000


@pytest.fixture(scope="module")
def big_file() -> bytes:
    return csv_bytes(ROWS, seed=11)


def start_upload(client, key, data) -> str:
    result = upload(client, key, data)
    assert result.status_code == 202, result.text
    return result.json["task_id"]


def running_with_progress(client, key, task_id) -> dict:
    return wait_for(lambda: (lambda t: t if t["state"] == "running" and t["progress"]["done"] > 0 else None)(
        get_task(client, key, task_id)))


def test_pause_freezes_rows_then_resume_completes_exactly_n(client, api_key, worker, rt, big_file):
    # Given an upload that is running
    task_id = start_upload(client, api_key, big_file)
    running_with_progress(client, api_key, task_id)
    # When it is paused (waiting for the worker's confirmation)
    started = time.monotonic()
    result = client.simulate_post(f"/api/pause/{task_id}/", params={"wait": "10"}, headers=auth(api_key))
    latency = time.monotonic() - started
    # Then it is paused, with a deadline, and no rows arrive while paused
    assert result.status_code == 200, result.text
    assert result.json["state"] == "paused"
    assert result.json["pause_deadline"] is not None
    assert latency < 5
    frozen = count_responses(rt, task_id)
    assert 0 < frozen < ROWS
    time.sleep(0.6)
    assert count_responses(rt, task_id) == frozen
    with rt.db.transaction() as cur:
        cur.execute("SELECT lease_owner FROM tasks WHERE id = %s", (task_id,))
        assert cur.fetchone()["lease_owner"] is None, "a paused task must not hold a worker"
    # When it is resumed
    result = client.simulate_post(f"/api/resume/{task_id}/", headers=auth(api_key))
    assert result.status_code == 202
    assert result.json["state"] == "queued"
    # Then it completes with every row exactly once
    task = wait_for_state(client, api_key, task_id, "completed")
    assert task["result"]["rows_inserted"] == ROWS
    assert task["result"]["rows_skipped_duplicate"] == 0
    assert count_responses(rt, task_id) == ROWS
    events = client.simulate_get(f"/api/tasks/{task_id}/", params={"events": "true"},
                                 headers=auth(api_key)).json["events"]
    assert [e["to_state"] for e in events] == ["queued", "running", "pausing", "paused", "queued", "running",
                                               "completed"]


def test_pause_without_wait_answers_202_pausing(client, api_key, worker, big_file):
    task_id = start_upload(client, api_key, big_file)
    running_with_progress(client, api_key, task_id)
    result = client.simulate_post(f"/api/pause/{task_id}/", headers=auth(api_key))
    assert result.status_code == 202
    assert result.json["state"] == "pausing"
    wait_for_state(client, api_key, task_id, "paused")
    assert client.simulate_post(f"/api/revoke/{task_id}/", headers=auth(api_key)).status_code == 202
    wait_for_state(client, api_key, task_id, "revoked")


def test_revoke_midway_removes_every_row_and_reupload_inserts_all(client, api_key, worker, rt, big_file):
    task_id = start_upload(client, api_key, big_file)
    running_with_progress(client, api_key, task_id)
    result = client.simulate_post(f"/api/revoke/{task_id}/", params={"wait": "20"}, headers=auth(api_key))
    assert result.status_code == 200, result.text
    assert result.json["state"] == "revoked"
    assert result.json["revoke_reason"] == "user"
    assert count_responses(rt, task_id) == 0
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stored_files WHERE task_id = %s", (task_id,))
        assert cur.fetchone()["n"] == 0, "the uploaded file must be deleted"
    again = start_upload(client, api_key, big_file)
    task = wait_for_state(client, api_key, again, "completed")
    assert task["result"]["rows_inserted"] == ROWS


def test_revoke_a_paused_upload_rolls_it_back(client, api_key, worker, rt, big_file):
    task_id = start_upload(client, api_key, big_file)
    running_with_progress(client, api_key, task_id)
    client.simulate_post(f"/api/pause/{task_id}/", params={"wait": "10"}, headers=auth(api_key))
    assert count_responses(rt, task_id) > 0
    result = client.simulate_post(f"/api/revoke/{task_id}/", params={"wait": "20"}, headers=auth(api_key))
    assert result.json["state"] == "revoked"
    assert count_responses(rt, task_id) == 0


def test_queued_task_is_paused_at_once_and_revoked_at_once(idle_client, rt, api_key):
    task_id = start_upload(idle_client, api_key, csv_bytes(10))
    result = idle_client.simulate_post(f"/api/pause/{task_id}/", headers=auth(api_key))
    assert result.status_code == 200
    assert result.json["state"] == "paused"
    second = start_upload(idle_client, api_key, csv_bytes(10))
    result = idle_client.simulate_post(f"/api/revoke/{second}/", headers=auth(api_key))
    assert result.status_code == 200
    assert result.json["state"] == "revoked"
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stored_files WHERE task_id = %s", (second,))
        assert cur.fetchone()["n"] == 0


def test_pause_timeout_revokes_through_the_delayed_message(rt, worker, idle_client, api_key):
    from services.gateway.app import create_app

    # Given a queued task paused by a control service whose pause timeout is 1 second
    task_id = start_upload(idle_client, api_key, csv_bytes(10))
    quick = testing.TestClient(create_app(rt.db, rt.broker, dataclasses.replace(rt.settings, pause_timeout_seconds=1)))
    paused = quick.simulate_post(f"/api/pause/{task_id}/", headers=auth(api_key)).json
    assert paused["state"] == "paused"
    # Then, with no sweep run, the delayed message revokes it once the deadline passes
    task = wait_for_state(quick, api_key, task_id, "revoked", timeout=20)
    assert task["revoke_reason"] == "pause_timeout"
    events = quick.simulate_get(f"/api/tasks/{task_id}/", params={"events": "1"}, headers=auth(api_key)).json
    assert [e["to_state"] for e in events["events"]][-2:] == ["revoking", "revoked"]


def test_sweep_revokes_overdue_pauses_and_is_idempotent(client, rt, worker, api_key, big_file):
    from services.control.commands import TaskControl

    task_id = start_upload(client, api_key, big_file)
    running_with_progress(client, api_key, task_id)
    client.simulate_post(f"/api/pause/{task_id}/", params={"wait": "10"}, headers=auth(api_key))
    with rt.db.transaction() as cur:
        cur.execute("UPDATE tasks SET pause_deadline = now() - interval '1 second' WHERE id = %s", (task_id,))
    # Two schedulers sweeping at once: one revokes, the other finds nothing to do (a worker's own
    # recovery sweep may run meanwhile too: between them all, the pause expires exactly once).
    first = TaskControl(rt.db, rt.broker, rt.settings).sweep()
    second = TaskControl(rt.db, rt.broker, rt.settings).sweep()
    assert first["pauses_expired"] + second["pauses_expired"] <= 1
    assert second["pauses_expired"] == 0
    with rt.db.transaction() as cur:
        assert [e["to_state"] for e in t.task_events(cur, task_id)].count("revoking") == 1
    task = wait_for_state(client, api_key, task_id, "revoked")
    assert task["revoke_reason"] == "pause_timeout"
    assert count_responses(rt, task_id) == 0


def test_impossible_transitions_answer_409_with_the_state(client, api_key, worker, rt):
    task_id = start_upload(client, api_key, csv_bytes(5))
    wait_for_state(client, api_key, task_id, "completed")
    for action in ("pause", "resume", "revoke"):
        result = client.simulate_post(f"/api/{action}/{task_id}/", headers=auth(api_key))
        assert result.status_code == 409, action
        assert result.json["state"] == "completed"
        assert result.headers["content-type"] == "application/problem+json"
    revoked = start_upload(client, api_key, csv_bytes(5))
    client.simulate_post(f"/api/revoke/{revoked}/", params={"wait": "10"}, headers=auth(api_key))
    wait_for_state(client, api_key, revoked, "revoked", "completed")
    state = get_task(client, api_key, revoked)["state"]
    for action in ("pause", "resume", "revoke"):
        result = client.simulate_post(f"/api/{action}/{revoked}/", headers=auth(api_key))
        assert result.status_code == 409
        assert result.json["state"] == state


def test_resume_of_a_running_task_is_409(client, api_key, worker, big_file):
    task_id = start_upload(client, api_key, big_file)
    running_with_progress(client, api_key, task_id)
    result = client.simulate_post(f"/api/resume/{task_id}/", headers=auth(api_key))
    assert result.status_code == 409
    assert result.json["state"] in ("running", "completed")
    client.simulate_post(f"/api/revoke/{task_id}/", params={"wait": "20"}, headers=auth(api_key))


def test_another_organizations_task_is_404(client, api_key, rt):
    task_id = start_upload(client, api_key, csv_bytes(3))
    stranger = new_key(rt)
    for method, path in (("GET", f"/api/tasks/{task_id}/"), ("POST", f"/api/pause/{task_id}/"),
                         ("POST", f"/api/resume/{task_id}/"), ("POST", f"/api/revoke/{task_id}/")):
        result = client.simulate_request(method, path, headers=auth(stranger))
        assert result.status_code == 404, (method, path)
    assert client.simulate_get("/api/tasks/", headers=auth(stranger)).json["total"] == 0
    assert get_task(client, api_key, task_id)["state"] in ("queued", "running", "completed")


def test_unknown_or_malformed_task_id_is_404(client, api_key):
    assert client.simulate_get("/api/tasks/00000000-0000-0000-0000-000000000000/",
                               headers=auth(api_key)).status_code == 404
    assert client.simulate_post("/api/pause/not-a-uuid/", headers=auth(api_key)).status_code == 404


def test_wait_parameter_is_validated(client, api_key):
    task_id = start_upload(client, api_key, csv_bytes(3))
    for bad in ("-1", "31", "soon"):
        result = client.simulate_post(f"/api/pause/{task_id}/", params={"wait": bad}, headers=auth(api_key))
        assert result.status_code == 400
        assert result.json["parameter"] == "wait"


def test_task_list_is_newest_first_filtered_and_paginated(idle_client, rt):
    client = idle_client
    key = new_key(rt)
    ids = [start_upload(client, key, csv_bytes(2, seed=i)) for i in range(3)]
    client.simulate_post(f"/api/revoke/{ids[0]}/", params={"wait": "10"}, headers=auth(key))
    page = client.simulate_get("/api/tasks/", params={"limit": "2"}, headers=auth(key)).json
    assert page["total"] == 3
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2]
    assert "offset=2" in page["next"]
    rest = client.simulate_get("/api/tasks/", params={"limit": "2", "offset": "2"}, headers=auth(key)).json
    assert [t["task_id"] for t in rest["tasks"]] == [ids[0]]
    revoked = client.simulate_get("/api/tasks/", params={"state": "revoked"}, headers=auth(key)).json
    assert [t["task_id"] for t in revoked["tasks"]] == [ids[0]]
    assert client.simulate_get("/api/tasks/", params={"kind": "upload"}, headers=auth(key)).json["total"] == 3
    assert client.simulate_get("/api/tasks/", params={"state": "sleeping"}, headers=auth(key)).status_code == 400
    assert client.simulate_get("/api/tasks/", params={"color": "red"}, headers=auth(key)).status_code == 400


def test_a_booting_worker_schedules_a_recovery_sweep_after_the_lease(rt):
    import json
    import uuid

    import dramatiq
    import redis
    from dramatiq.brokers.redis import RedisBroker

    from shared.recovery_sweep import RecoverySweep

    namespace = f"boot-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=rt.settings.redis_url, namespace=namespace)
    broker.add_middleware(RecoverySweep(after_seconds=rt.settings.task_lease_seconds + 1))
    worker = dramatiq.Worker(broker, queues={"nothing"}, worker_threads=1)
    worker.start()
    worker.stop()
    client = redis.Redis.from_url(rt.settings.redis_url)
    try:
        delayed = [json.loads(m) for m in client.hvals(f"{namespace}:control.DQ.msgs")]
        assert [m["actor_name"] for m in delayed] == ["sweep"]
        assert delayed[0]["options"]["eta"] >= delayed[0]["message_timestamp"] + 1000 * rt.settings.task_lease_seconds
    finally:
        for key in client.scan_iter(match=f"{namespace}:*"):
            client.delete(key)
