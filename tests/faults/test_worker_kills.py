"""Worker processes killed outright (SIGKILL) at random moments, and two schedulers at once.

Each seeded trial runs an upload and an export in a worker process, kills it at a random moment, starts
another one, and lets recovery (the booting worker's sweep, past the dead worker's lease) finish both:
every row exactly once, the export's bytes identical to an export nothing disturbed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

from scripts.sample_data import csv_bytes
from tests.conftest import ROOT, auth, get_task, new_key, upload, wait_for, wait_for_state
from tests.faults.conftest import (
    SEED,
    export_bytes,
    kill,
    reached,
    running_worker,
    start_worker,
    task_files,
    task_rows,
)

TRIALS = 20
ROWS = 1500
# A killed worker's tasks are taken over one lease after its last batch; batches of 50 rows keep runs short.
FAST_RECOVERY = {"UPLOAD_BATCH_ROWS": "50", "EXPORT_BATCH_ROWS": "50", "TASK_LEASE_SECONDS": "1"}
YEAR = {"from_date": "2024-01-01", "to_date": "2024-12-31"}


def test_workers_killed_at_random_moments_lose_and_duplicate_nothing(rt, fault_client, namespace):
    rng = random.Random(SEED)
    exporter = new_key(rt)
    with running_worker(namespace, threads=2, **FAST_RECOVERY):
        source = upload(fault_client, exporter, csv_bytes(ROWS, seed=41)).json["task_id"]
        assert wait_for_state(fault_client, exporter, source, "completed", "failed")["state"] == "completed"
        reference = fault_client.simulate_post("/api/export/", params=YEAR, headers=auth(exporter)).json["task_id"]
        assert wait_for_state(fault_client, exporter, reference, "completed", "failed")["state"] == "completed"
    expected = export_bytes(rt.db, reference)
    killed_mid_task = 0
    for trial in range(TRIALS):
        # Given an upload and an export running in a worker process
        importer = new_key(rt)
        worker = start_worker(namespace, threads=2, **FAST_RECOVERY)
        try:
            uploading = upload(fault_client, importer, csv_bytes(ROWS, seed=1000 + trial)).json["task_id"]
            exporting = fault_client.simulate_post("/api/export/", params=YEAR,
                                                   headers=auth(exporter)).json["task_id"]
            # When the worker is killed outright at a random point of the upload (and wherever the export is)
            share = rng.uniform(0.05, 0.9)
            wait_for(lambda task_id=uploading, key=importer, share=share: reached(fault_client, key, task_id, share),
                     timeout=60)
            kill(worker)
            states = {get_task(fault_client, importer, uploading)["state"],
                      get_task(fault_client, exporter, exporting)["state"]}
            killed_mid_task += "running" in states
            # And another worker starts
            worker = start_worker(namespace, threads=2, **FAST_RECOVERY)
            uploaded = wait_for_state(fault_client, importer, uploading, "completed", "failed", timeout=90)
            exported = wait_for_state(fault_client, exporter, exporting, "completed", "failed", timeout=90)
        finally:
            kill(worker, signal.SIGTERM)
        # Then both tasks complete exactly
        context = f"trial {trial} (seed {SEED})"
        assert uploaded["state"] == "completed", (context, uploaded["error"])
        assert uploaded["result"]["rows_inserted"] == ROWS == task_rows(rt.db, uploading), context
        assert uploaded["result"]["rows_skipped_duplicate"] == 0, context
        assert exported["state"] == "completed", (context, exported["error"])
        assert export_bytes(rt.db, exporting) == expected, context
    # (the random moments really fell inside the work)
    assert killed_mid_task >= TRIALS // 2, killed_mid_task


SWEEP = """
import json
import sys
import time

from services.control.actors import _control
from services.upload.actors import delete_expired_upload_files

time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(json.dumps(_control.sweep()))
delete_expired_upload_files()
"""


def test_two_schedulers_sweeping_at_once_have_no_double_effect(rt, fault_client, namespace):
    # Given 10 overdue pauses, 10 failures past FAILED_TASK_TTL_HOURS and 10 completed uploads past
    # UPLOAD_FILE_RETENTION_HOURS
    key = new_key(rt)
    with running_worker(namespace, threads=2, **FAST_RECOVERY):
        tasks = [upload(fault_client, key, csv_bytes(20, seed=2000 + i)).json["task_id"] for i in range(30)]
        for task_id in tasks:
            wait_for_state(fault_client, key, task_id, "completed", "failed")
    paused, failed, completed = tasks[:10], tasks[10:20], tasks[20:]
    with rt.db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'paused', paused_at = now() - interval '2 hours', "
                    "pause_deadline = now() - interval '1 hour', finished_at = NULL WHERE id = ANY(%s::uuid[])",
                    (paused,))
        cur.execute("UPDATE tasks SET state = 'failed', error = '{\"code\": \"test\"}', "
                    "finished_at = now() - make_interval(hours => %s + 1) WHERE id = ANY(%s::uuid[])",
                    (rt.settings.failed_task_ttl_hours, failed))
        cur.execute("UPDATE tasks SET finished_at = now() - make_interval(hours => %s + 1) "
                    "WHERE id = ANY(%s::uuid[])", (rt.settings.upload_file_retention_hours, completed))
    # When two scheduler processes sweep at the same moment
    at = time.time() + 3
    sweeps = [subprocess.Popen([sys.executable, "-c", SWEEP, str(at)], cwd=ROOT, stdout=subprocess.PIPE,
                               env={**os.environ, "BROKER_NAMESPACE": namespace}, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=60)[0] for proc in sweeps]
    assert all(proc.returncode == 0 for proc in sweeps), outputs
    # Then each overdue pause and each old failure was revoked by exactly one of them (the sweeps' own counts
    # may include another test's task whose pause ran out in the same database meanwhile: the events of
    # this test's tasks are the exact check)
    summaries = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sum(s["pauses_expired"] for s in summaries) >= 10, summaries
    assert sum(s["failures_expired"] for s in summaries) >= 10, summaries
    with rt.db.transaction() as cur:
        cur.execute("""SELECT task_id, count(*) AS n FROM task_events WHERE to_state = 'revoking'
                       AND task_id = ANY(%s::uuid[]) GROUP BY task_id""", (paused + failed,))
        assert sorted(row["n"] for row in cur.fetchall()) == [1] * 20
    # And the expired upload files are gone once, the tasks' records intact
    assert all(task_files(rt.db, task_id) == 0 for task_id in completed)
    assert all(get_task(fault_client, key, task_id)["state"] == "completed" for task_id in completed)
    # And the revoked tasks are rolled back by a worker
    with running_worker(namespace, threads=2, **FAST_RECOVERY):
        for task_id in paused + failed:
            task = wait_for_state(fault_client, key, task_id, "revoked", timeout=60)
            assert task["revoke_reason"] in ("pause_timeout", "failed_timeout")
            assert task_rows(rt.db, task_id) == 0
