"""Fairness across organizations: at most ORG_MAX_RUNNING_TASKS (2 by default) tasks of one organization
run at once, the others wait in `queued` in order and show their `queue_position`; paused tasks hold no slot;
another organization's task still gets a worker thread. Uploads are held at their first batch by a lock on
responses, so "running" lasts as long as a test needs."""

from __future__ import annotations

import time

from scripts.sample_data import csv_bytes
from tests.conftest import auth, get_task, new_key, upload, wait_for_state
from tests.export.conftest import responses_locked

FILE = csv_bytes(50, seed=5)


def start_uploads(client, key: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        result = upload(client, key, FILE)
        assert result.status_code == 202, result.text
        ids.append(result.json["task_id"])
    return ids


def states(client, key: str, ids: list[str]) -> list[tuple[str, int | None]]:
    return [(task["state"], task["queue_position"]) for task in (get_task(client, key, i) for i in ids)]


def test_an_organization_runs_two_tasks_at_once_and_the_others_wait_in_line(client, rt, worker):
    busy, other = new_key(rt), new_key(rt)
    with responses_locked(rt):
        # Given one organization that starts four uploads (the worker has four threads)
        ids = start_uploads(client, busy, 4)
        # And another organization that starts one
        [neighbour] = start_uploads(client, other, 1)
        # Then two of the first organization's run, the others wait in queued in the order they came
        for task_id in ids[:2]:
            wait_for_state(client, busy, task_id, "running")
        # And the other organization's upload gets a worker thread all the same
        assert wait_for_state(client, other, neighbour, "running")["queue_position"] is None
        time.sleep(1)  # the waiting tasks' messages have long been handed to the free worker thread
        assert states(client, busy, ids) == [("running", None), ("running", None), ("queued", 1), ("queued", 2)]
        listed = client.simulate_get("/api/tasks/", params={"state": "queued"}, headers=auth(busy)).json
        assert {item["task_id"]: item["queue_position"] for item in listed["tasks"]} == {ids[2]: 1, ids[3]: 2}
    # When the running ones can finish, the waiting ones start in turn and every upload completes
    for task_id in ids:
        assert wait_for_state(client, busy, task_id, "completed", "failed")["state"] == "completed"
    assert wait_for_state(client, other, neighbour, "completed")["result"]["rows_inserted"] == 50


def test_a_paused_task_frees_its_organizations_slot(client, rt, worker):
    key = new_key(rt)
    with responses_locked(rt):
        # Given an organization with two uploads running and a third one waiting
        ids = start_uploads(client, key, 3)
        for task_id in ids[:2]:
            wait_for_state(client, key, task_id, "running")
        assert states(client, key, ids[2:]) == [("queued", 1)]
        # When one of the running uploads is paused
        paused = client.simulate_post(f"/api/pause/{ids[0]}/", params={"wait": "10"}, headers=auth(key))
        assert paused.json["state"] == "paused", paused.text
        # Then the waiting one starts: a paused task does not count against the limit
        wait_for_state(client, key, ids[2], "running")
        assert states(client, key, ids) == [("paused", None), ("running", None), ("running", None)]
        # And a resumed task waits for a slot like any other
        assert client.simulate_post(f"/api/resume/{ids[0]}/", headers=auth(key)).status_code == 202
        time.sleep(0.5)
        assert states(client, key, ids[:1]) == [("queued", 1)]
    for task_id in ids:
        assert wait_for_state(client, key, task_id, "completed", "failed")["state"] == "completed"
