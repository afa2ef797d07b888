"""Export test helpers: responses uploaded through the API, exports started and downloaded through it."""

from __future__ import annotations

import csv
import io
from contextlib import contextmanager

from tests.conftest import auth, upload, wait_for_state


def csv_file(*rows: list[str]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n").writerows(rows)  # RFC 4180; a bare CR in a cell gets quoted
    return out.getvalue().encode()


def upload_responses(client, key: str, data: bytes) -> dict:
    task = wait_for_state(client, key, upload(client, key, data).json["task_id"], "completed", "failed")
    assert task["state"] == "completed" and not task["result"]["rows_rejected"], task
    return task


def start_export(client, key: str, method: str = "POST", **query: str):
    return client.simulate_request(method, "/api/export/", params=query, headers=auth(key))


def download(client, key: str, task_id: str):
    return client.simulate_get(f"/api/tasks/{task_id}/download", headers=auth(key))


def export_csv(client, key: str, **query: str) -> bytes:
    """Export the range to completion and download it."""
    started = start_export(client, key, **query)
    assert started.status_code == 202, started.text
    task = wait_for_state(client, key, started.json["task_id"], "completed", "failed")
    assert task["state"] == "completed", task
    result = download(client, key, task["task_id"])
    assert result.status_code == 200, result.text
    return result.content


def rows_of(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def task_files(rt, task_id: str) -> int:
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stored_files WHERE task_id = %s", (task_id,))
        return cur.fetchone()["n"]


@contextmanager
def responses_locked(rt):
    """Hold an ACCESS EXCLUSIVE lock on responses: an export's next batch waits at its first read, so a
    test can act on a running export at a batch boundary it chooses."""
    with rt.db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE responses IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()
