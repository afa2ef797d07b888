"""Retention: an export's file is deleted EXPORT_RETENTION_HOURS after the export completed; the task stays,
and its download then answers 410 Gone."""

from __future__ import annotations

from services.export.exports import Exports
from tests.conftest import auth, wait_for_state
from tests.export.conftest import csv_file, download, start_export, task_files, upload_responses

HEADER = ["response_id", "form_id", "submitted_at", "name"]


def _completed_export(client, key: str) -> str:
    task_id = start_export(client, key, from_date="2024-01-01", to_date="2024-01-31").json["task_id"]
    return wait_for_state(client, key, task_id, "completed")["task_id"]


def test_expired_export_files_are_deleted_and_their_download_is_gone(client, api_key, worker, rt):
    # Given an upload and two completed exports, one of them finished 73 hours ago
    upload_responses(client, api_key, csv_file(
        HEADER, ["6f1d7a2c-0001-4a8e-9d5e-0c1b2a3d4e5f", "f", "2024-01-02", "kept"]))
    old, recent = _completed_export(client, api_key), _completed_export(client, api_key)
    with rt.db.transaction() as cur:
        cur.execute("UPDATE tasks SET finished_at = now() - interval '73 hours' WHERE id = %s", (old,))

    # When retention runs with 72 hours
    deleted = Exports(rt.db, rt.broker).delete_expired_files(72)

    # Then only the old export's file is gone, its task is still there, and its download answers 410
    assert [str(task_id) for task_id in deleted] == [old]
    assert task_files(rt, old) == 0
    gone = download(client, api_key, old)
    assert gone.status_code == 410 and gone.json["title"] == "Gone"
    assert "72 hours (EXPORT_RETENTION_HOURS)" in gone.json["detail"]
    assert client.simulate_get(f"/api/tasks/{old}/", headers=auth(api_key)).json["state"] == "completed"
    assert download(client, api_key, recent).status_code == 200
    # Running it again deletes nothing more (two schedulers may both run it)
    assert Exports(rt.db, rt.broker).delete_expired_files(72) == []
