"""Export under task control: pause/resume gives the same bytes, revoke and pause timeout delete the file,
a killed worker's export is finished by another, and retention deletes old files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from scripts.sample_data import csv_bytes
from tests.conftest import ROOT, auth, get_task, wait_for, wait_for_state
from tests.export.conftest import (
    download,
    export_csv,
    responses_locked,
    start_export,
    task_files,
    upload_responses,
)

YEAR = {"from_date": "2024-01-01", "to_date": "2024-12-31"}


@pytest.fixture
def exported(client, api_key, worker):
    """1000 uploaded responses and the bytes of an export of them that nobody paused."""
    upload_responses(client, api_key, csv_bytes(1000, seed=21))
    return export_csv(client, api_key, **YEAR)


def one_batch_then_pause(client, rt, key: str, task_id: str | None = None, *, boundary) -> tuple[str, dict]:
    """Start (or resume) an export and ask it to pause (through `boundary`, so that the pause waits for
    the batch boundary rather than cancelling the batch) while its next batch waits on the lock: it pauses
    right after that batch. Returns the task id and the paused task."""
    with responses_locked(rt):
        if task_id is None:
            task_id = start_export(client, key, **YEAR).json["task_id"]
        else:
            assert client.simulate_post(f"/api/resume/{task_id}", headers=auth(key)).status_code == 202
        wait_for_state(client, key, task_id, "running")
        paused = boundary.simulate_post(f"/api/pause/{task_id}", headers=auth(key))
        assert paused.status_code == 202 and paused.json["state"] == "pausing", paused.text
    return task_id, wait_for_state(client, key, task_id, "paused")


def test_paused_and_resumed_export_is_byte_identical(client, boundary_client, api_key, rt, exported):
    # Given an export paused after its first batch
    task_id, task = one_batch_then_pause(client, rt, api_key, boundary=boundary_client)
    assert task["progress"] == {"done": 200, "total": 1000, "unit": "rows", "percent": 20.0}
    assert download(client, api_key, task_id).json["state"] == "paused"
    # When it is resumed, paused again after another batch, and resumed to the end
    _, task = one_batch_then_pause(client, rt, api_key, task_id, boundary=boundary_client)
    assert task["progress"]["done"] == 400
    assert client.simulate_post(f"/api/resume/{task_id}", headers=auth(api_key)).status_code == 202
    task = wait_for_state(client, api_key, task_id, "completed")
    # Then the file is byte for byte the one of the export that ran straight through
    assert download(client, api_key, task_id).content == exported
    assert task["result"]["rows"] == 1000 and task["result"]["bytes"] == len(exported)


def test_revoking_an_export_deletes_its_partial_file(client, boundary_client, api_key, rt, exported):
    task_id, _ = one_batch_then_pause(client, rt, api_key, boundary=boundary_client)
    assert task_files(rt, task_id) == 1
    revoked = client.simulate_post(f"/api/revoke/{task_id}", headers=auth(api_key))
    assert revoked.status_code in (200, 202), revoked.text
    task = wait_for_state(client, api_key, task_id, "revoked")
    assert task["revoke_reason"] == "user"
    assert task_files(rt, task_id) == 0
    assert download(client, api_key, task_id).json["state"] == "revoked"


def test_an_export_paused_past_its_deadline_is_revoked_and_its_file_deleted(client, boundary_client, api_key, rt,
                                                                           exported):
    from services.control.commands import TaskControl

    task_id, _ = one_batch_then_pause(client, rt, api_key, boundary=boundary_client)
    with rt.db.transaction() as cur:
        cur.execute("UPDATE tasks SET pause_deadline = now() - interval '1 second' WHERE id = %s", (task_id,))
    assert TaskControl(rt.db, rt.broker, rt.settings).sweep()["pauses_expired"] >= 1
    task = wait_for_state(client, api_key, task_id, "revoked")
    assert task["revoke_reason"] == "pause_timeout"
    assert task_files(rt, task_id) == 0


def _progress(rt, task_id: str) -> int:
    with rt.db.transaction() as cur:
        cur.execute("SELECT progress_done FROM tasks WHERE id = %s", (task_id,))
        return cur.fetchone()["progress_done"]


def test_an_export_whose_worker_is_killed_is_finished_by_another_worker(client, api_key, rt, worker):
    from services.control.commands import TaskControl

    upload_responses(client, api_key, csv_bytes(3000, seed=31))
    expected = export_csv(client, api_key, **YEAR)
    # Given an export running in a separate worker process, in small batches, while ours stands aside
    worker.pause()
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "services.export.actors", "--queues", "export",
         "--processes", "1", "--threads", "1"],
        cwd=ROOT, env={**os.environ, "EXPORT_BATCH_ROWS": "20"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        task_id = start_export(client, api_key, **YEAR).json["task_id"]
        wait_for(lambda: _progress(rt, task_id) > 0, timeout=60)
        # When it is killed (the dramatiq main process and its worker process) in the middle of a batch
        with responses_locked(rt):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        worker.resume()
    task = get_task(client, api_key, task_id)
    assert task["state"] == "running" and 0 < task["progress"]["done"] < 3000, task
    # Then once its lease expires the sweep re-sends the task, and our worker finishes the same file
    control = TaskControl(rt.db, rt.broker, rt.settings)
    lease = rt.settings.task_lease_seconds
    wait_for(lambda: control.sweep()["tasks_recovered"], timeout=lease + 10, interval=0.2)
    wait_for_state(client, api_key, task_id, "completed")
    assert download(client, api_key, task_id).content == expected


def test_retention_deletes_old_export_files_and_their_download_is_gone(client, api_key, rt, worker):
    from services.export.actors import delete_expired_export_files

    upload_responses(client, api_key, csv_bytes(10, seed=41))
    task_id = start_export(client, api_key, **YEAR).json["task_id"]
    wait_for_state(client, api_key, task_id, "completed")
    # A file younger than EXPORT_RETENTION_HOURS is kept
    delete_expired_export_files()
    assert download(client, api_key, task_id).status_code == 200
    # One older is deleted, and its download says so
    with rt.db.transaction() as cur:
        cur.execute("UPDATE tasks SET finished_at = now() - make_interval(hours => %s + 1) WHERE id = %s",
                    (rt.settings.export_retention_hours, task_id))
    delete_expired_export_files()
    assert task_files(rt, task_id) == 0
    gone = download(client, api_key, task_id)
    assert gone.status_code == 410
    assert "EXPORT_RETENTION_HOURS" in gone.json["detail"]
    assert get_task(client, api_key, task_id)["state"] == "completed"


def test_a_pause_that_cancels_the_batch_in_flight_still_gives_the_same_bytes(client, api_key, rt, exported):
    # Given an export whose first batch waits on a lock, paused through the fast path (the batch in
    # flight is cancelled and rolled back)
    with responses_locked(rt):
        task_id = start_export(client, api_key, **YEAR).json["task_id"]
        wait_for_state(client, api_key, task_id, "running")
        paused = client.simulate_post(f"/api/pause/{task_id}", params={"wait": "10"}, headers=auth(api_key))
        assert paused.status_code == 200, paused.text
    assert paused.json["progress"]["done"] == 0
    # When it is resumed to the end, the file is the one of the export that ran straight through
    assert client.simulate_post(f"/api/resume/{task_id}", headers=auth(api_key)).status_code == 202
    wait_for_state(client, api_key, task_id, "completed")
    assert download(client, api_key, task_id).content == exported
