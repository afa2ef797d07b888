"""A worker process killed mid-upload (SIGKILL, no clean shutdown): the task is taken over and completes
with every row exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from dramatiq.brokers.redis import RedisBroker

from scripts.sample_data import csv_bytes
from services.control.commands import TaskControl
from tests.conftest import ROOT, count_responses, upload, wait_for

ROWS = 30_000


def start_worker(namespace: str) -> subprocess.Popen:
    env = {**os.environ, "BROKER_NAMESPACE": namespace}
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dramatiq"), "services.upload.actors",
         "--queues", "upload", "--processes", "1", "--threads", "1"],
        env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def task_row(rt, task_id):
    with rt.db.transaction() as cur:
        cur.execute("SELECT state, progress_done, lease_owner, result FROM tasks WHERE id = %s", (task_id,))
        return cur.fetchone()


def test_killed_worker_task_completes_after_restart(rt, idle_client, api_key):
    # Given an upload running in a separate worker process (the idle namespace: no in-process worker sees it)
    task_id = upload(idle_client, api_key, csv_bytes(ROWS, seed=3)).json["task_id"]
    first = start_worker("idle")
    second = None
    try:
        wait_for(lambda: (task_row(rt, task_id)["progress_done"] or 0) > 0, timeout=60)
        # When the worker is killed outright mid-upload
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = task_row(rt, task_id)
        assert killed_at["state"] == "running"
        partial = count_responses(rt, task_id)
        assert 0 < partial < ROWS
        # And a new worker starts, and the sweep finds the task's lease expired
        second = start_worker("idle")
        time.sleep(rt.settings.task_lease_seconds + 0.5)
        summary = TaskControl(rt.db, RedisBroker(url=rt.settings.redis_url, namespace="idle"), rt.settings).sweep()
        assert summary["tasks_recovered"] >= 1
        # Then the task continues from its checkpoint and completes with exactly N rows
        wait_for(lambda: task_row(rt, task_id)["state"] == "completed", timeout=90)
        assert count_responses(rt, task_id) == ROWS
        assert task_row(rt, task_id)["result"]["rows_inserted"] == ROWS
        assert task_row(rt, task_id)["result"]["rows_skipped_duplicate"] == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
