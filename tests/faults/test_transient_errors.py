"""Transient database errors are retried from the checkpoint, not fatal; a failed task keeps its work.

Faults are real: the worker process's PostgreSQL backends are terminated (only those of this test database,
found by the worker's application_name), and PostgreSQL itself raises serialization failures, deadlocks
and other errors from a trigger the test installs on `responses` for one organization.
"""

from __future__ import annotations

import random
import time
import uuid
from contextlib import contextmanager

from dramatiq.brokers.redis import RedisBroker

from scripts.sample_data import csv_bytes
from services.control.commands import TaskControl
from tests.conftest import auth, get_task, new_key, upload, wait_for, wait_for_state
from tests.faults.conftest import SEED, export_bytes, reached, running_worker, task_files, task_row, task_rows

TINY_BATCHES = {"UPLOAD_BATCH_ROWS": "20", "EXPORT_BATCH_ROWS": "20"}
WORKER_APP = "collect-fault-worker"
ROWS = 6000
YEAR = {"from_date": "2024-01-01", "to_date": "2024-12-31"}


def worker_env(rt, **extra: str) -> dict[str, str]:
    """The worker's environment: tiny batches, and a connection name that lets the test find its backends."""
    url = rt.settings.database_url  # an embedded server's URL already has a query (its socket directory)
    separator = "&" if "?" in url else "?"
    return {**TINY_BATCHES, "DATABASE_URL": f"{url}{separator}application_name={WORKER_APP}", **extra}


def terminate_worker_backends(rt) -> int:
    """Kill the worker's connections (this test database's only: nothing else on the server is touched)."""
    with rt.db.transaction() as cur:
        cur.execute(
            """SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = %s""",
            (WORKER_APP,),
        )
        return cur.fetchone()["n"]


def organization_of(rt, key: str) -> uuid.UUID:
    from shared import orgs

    with rt.db.transaction() as cur:
        return orgs.authenticate(cur, key)[0]


@contextmanager
def responses_fault(rt, organization_id: uuid.UUID, errcode: str, after_rows: int = 0, times: int = 10**9):
    """PostgreSQL raises `errcode` on inserting the organization's responses: from row `after_rows` + 1
    on, `times` times (a sequence counts the attempts: it is not rolled back with them)."""
    name = f"fault_{uuid.uuid4().hex[:8]}"
    with rt.db.transaction() as cur:
        cur.execute(f"CREATE SEQUENCE {name}")
        cur.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE n bigint;
                BEGIN
                    IF NEW.organization_id = %(org)s::uuid THEN
                        n := nextval('{name}');
                        IF n > %(after)s AND n <= %(after)s + %(times)s THEN
                            RAISE EXCEPTION 'fault injected by the test (%%)', n USING ERRCODE = %(errcode)s;
                        END IF;
                    END IF;
                    RETURN NEW;
                END $$""",
            {"org": str(organization_id), "after": after_rows, "times": times, "errcode": errcode},
        )
        cur.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON responses FOR EACH ROW EXECUTE FUNCTION {name}()")
    try:
        yield
    finally:
        with rt.db.transaction() as cur:
            cur.execute(f"DROP TRIGGER {name} ON responses; DROP FUNCTION {name}(); DROP SEQUENCE {name}")


def test_terminated_backends_mid_batch_upload_and_export_complete_exactly(rt, fault_client, namespace):
    rng = random.Random(SEED)
    exporter, importer = new_key(rt), new_key(rt)
    with running_worker(namespace, threads=2, **worker_env(rt)):
        # Given 1000 responses and the bytes of an export of them that nothing disturbed
        source = upload(fault_client, exporter, csv_bytes(1000, seed=31)).json["task_id"]
        assert wait_for_state(fault_client, exporter, source, "completed", "failed")["state"] == "completed"
        reference = fault_client.simulate_post("/api/export/", params=YEAR, headers=auth(exporter)).json["task_id"]
        assert wait_for_state(fault_client, exporter, reference, "completed", "failed")["state"] == "completed"
        # When an upload and an export run in batches of 20 rows and the worker's connections are killed
        # again and again at random moments
        uploading = upload(fault_client, importer, csv_bytes(ROWS, seed=32)).json["task_id"]
        exporting = fault_client.simulate_post("/api/export/", params=YEAR, headers=auth(exporter)).json["task_id"]
        mid_task = 0
        for share in sorted(rng.uniform(0.05, 0.95) for _ in range(6)):
            wait_for(lambda share=share: reached(fault_client, importer, uploading, share))
            running = get_task(fault_client, importer, uploading)["state"] == "running"
            mid_task += running and terminate_worker_backends(rt) > 0
        assert mid_task >= 3
        # Then both complete exactly: every row once, and the export's bytes identical
        uploaded = wait_for_state(fault_client, importer, uploading, "completed", "failed", timeout=120)
        exported = wait_for_state(fault_client, exporter, exporting, "completed", "failed", timeout=120)
    assert uploaded["state"] == "completed", uploaded["error"]
    assert uploaded["result"]["rows_inserted"] == ROWS and task_rows(rt.db, uploading) == ROWS
    assert uploaded["result"]["rows_skipped_duplicate"] == 0
    assert exported["state"] == "completed", exported["error"]
    assert export_bytes(rt.db, exporting) == export_bytes(rt.db, reference)


def test_deadlocks_and_serialization_failures_are_retried_from_the_checkpoint(rt, fault_client, namespace):
    key = new_key(rt)
    # Given PostgreSQL aborting the upload's batches with deadlocks (40P01), then serialization failures
    with responses_fault(rt, organization_of(rt, key), "40P01", after_rows=30, times=3), \
            responses_fault(rt, organization_of(rt, key), "40001", after_rows=90, times=3), \
            running_worker(namespace, threads=1, **worker_env(rt)):
        # When the upload runs
        task_id = upload(fault_client, key, csv_bytes(300, seed=33)).json["task_id"]
        task = wait_for_state(fault_client, key, task_id, "completed", "failed", timeout=60)
    # Then each aborted batch was done again, and the upload completed with every row exactly once
    assert task["state"] == "completed", task["error"]
    assert task["result"]["rows_inserted"] == 300 and task_rows(rt.db, task_id) == 300


def failed_upload(rt, client, namespace: str, key: str, errcode: str, **env: str) -> dict:
    """An upload of 300 rows (15 batches of 20) that failed at its 101st row inserted. Two batches are written
    at once, so the batch that meets it is the 5th or the 6th: 80 or 100 rows committed before."""
    with responses_fault(rt, organization_of(rt, key), errcode, after_rows=100), \
            running_worker(namespace, threads=1, **worker_env(rt, **env)):
        task_id = upload(client, key, csv_bytes(300, seed=uuid.uuid4().int % 10**6)).json["task_id"]
        return wait_for_state(client, key, task_id, "completed", "failed", timeout=60)


def test_transient_errors_fail_the_task_only_after_TRANSIENT_RETRY_SECONDS_naming_the_cause(
        rt, fault_client, namespace):
    key = new_key(rt)
    # Given every batch after the first 100 rows meeting a serialization failure, with a 3 s retry budget
    started = time.monotonic()
    task = failed_upload(rt, fault_client, namespace, key, "40001", TRANSIENT_RETRY_SECONDS="3")
    # Then the task failed, not at once but after retrying for TRANSIENT_RETRY_SECONDS, naming the real cause
    assert task["state"] == "failed"
    assert time.monotonic() - started >= 3
    assert task["error"]["code"] == "transient_database_error"
    assert "SerializationFailure" in task["error"]["message"] and "fault injected" in task["error"]["message"]
    # And it kept the work it had committed, and its checkpoint
    checkpoint = task_row(rt.db, task["task_id"])["checkpoint"]
    assert checkpoint["rows_inserted"] == task_rows(rt.db, task["task_id"]) in (80, 100)
    assert task_files(rt.db, task["task_id"]) == 1
    # When the cause is gone and the task is resumed
    with running_worker(namespace, threads=1, **worker_env(rt)):
        resumed = fault_client.simulate_post(f"/api/resume/{task['task_id']}", headers=auth(key))
        assert resumed.status_code == 202 and resumed.json["state"] == "queued", resumed.text
        task = wait_for_state(fault_client, key, task["task_id"], "completed", "failed", timeout=60)
    # Then it continues from its checkpoint to exactly every row
    assert task["state"] == "completed", task["error"]
    assert task["result"]["rows_inserted"] == 300 and task_rows(rt.db, task["task_id"]) == 300


def test_a_failed_task_keeps_its_work_until_revoked(rt, fault_client, namespace):
    key = new_key(rt)
    # Given an upload that failed for a permanent reason after 100 rows
    task = failed_upload(rt, fault_client, namespace, key, "P0001")
    assert task["state"] == "failed" and task["error"]["code"] == "internal_error", task
    assert task_rows(rt.db, task["task_id"]) == task_row(rt.db, task["task_id"])["checkpoint"]["rows_inserted"]
    assert task_rows(rt.db, task["task_id"]) in (80, 100)
    # When it is revoked
    with running_worker(namespace, threads=1, **worker_env(rt)):
        revoked = fault_client.simulate_post(f"/api/revoke/{task['task_id']}", headers=auth(key))
        assert revoked.status_code == 202 and revoked.json["state"] == "revoking", revoked.text
        task = wait_for_state(fault_client, key, task["task_id"], "revoked", timeout=60)
    # Then its rows and its file are gone
    assert task["revoke_reason"] == "user"
    assert task_rows(rt.db, task["task_id"]) == 0 and task_files(rt.db, task["task_id"]) == 0


def test_a_failed_task_left_alone_is_revoked_after_FAILED_TASK_TTL_HOURS(rt, fault_client, namespace):
    key = new_key(rt)
    task = failed_upload(rt, fault_client, namespace, key, "P0001")
    task_id = task["task_id"]
    control = TaskControl(rt.db, RedisBroker(url=rt.settings.redis_url, namespace=namespace), rt.settings)
    with running_worker(namespace, threads=1, **worker_env(rt)):
        # Given a failed task younger than FAILED_TASK_TTL_HOURS: the sweep leaves it alone
        assert control.sweep()["failures_expired"] == 0
        assert get_task(fault_client, key, task_id)["state"] == "failed"
        # When it failed longer ago than that
        with rt.db.transaction() as cur:
            cur.execute("UPDATE tasks SET finished_at = now() - make_interval(hours => %s) - interval '1 minute' "
                        "WHERE id = %s", (rt.settings.failed_task_ttl_hours, task_id))
        # Then the sweep revokes it (once), and its rows and file are deleted
        assert control.sweep()["failures_expired"] == 1
        assert control.sweep()["failures_expired"] == 0
        task = wait_for_state(fault_client, key, task_id, "revoked", timeout=60)
    assert task["revoke_reason"] == "failed_timeout"
    assert task_rows(rt.db, task_id) == 0 and task_files(rt.db, task_id) == 0
