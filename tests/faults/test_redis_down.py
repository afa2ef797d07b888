"""Redis stopped for 20 s in the middle of a run of the whole stack (`collect up`: gateway, workers,
scheduler): the uploads that were running complete exactly, uploads accepted meanwhile are stored as
queued and run once Redis is back (the sweep re-sends the messages that could not be sent). Redis is a
Valkey server this test starts and stops itself; PostgreSQL is a database of its own."""

from __future__ import annotations

import io
import json
import os
import sys
import time

from services.upload.sample_data import write_responses
from shared.db import Database, recreate_database
from tests.conftest import auth, multipart, wait_for
from tests.faults.conftest import Gateway, free_port, running, timed

SEED = 7
ROWS = 20000
OUTAGE_SECONDS = 20


def sample_csv(seed: int) -> bytes:
    out = io.StringIO()
    write_responses(out, ROWS, seed=seed)
    return out.getvalue().encode()


def upload(gw: Gateway, key: str, seed: int) -> dict:
    body, headers = multipart(sample_csv(seed))
    status, _, answer = gw.request("POST", "/api/upload-file/", headers={**headers, **auth(key)}, body=body)
    assert status == 202, answer
    return json.loads(answer)


def task_state(gw: Gateway, key: str, task_id: str) -> dict:
    status, _, answer = gw.request("GET", f"/api/tasks/{task_id}/", headers=auth(key))
    assert status == 200, answer
    return json.loads(answer)


def test_redis_stopped_for_20s_mid_run_loses_no_upload(rt, own_valkey, tmp_path):
    database_url = recreate_database(rt.settings.database_url, f"{rt.settings.database_url.rsplit('/', 1)[1]}"
                                     "_redis_down")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": own_valkey.url, "PORT": str(port),
           "GATEWAY_WORKERS": "1", "UPLOAD_BATCH_ROWS": "100", "TASK_LEASE_SECONDS": "5",
           "COLLECT_DATA_DIR": str(tmp_path / "data")}
    gw = Gateway(f"http://127.0.0.1:{port}", None, tmp_path / "up.log")
    with running([sys.executable, "-m", "services.cli", "up"], env, f"{gw.url}/health/live", gw.log_path):
        from shared import orgs

        db = Database(database_url, maxconn=2)
        with db.transaction() as cur:
            key = orgs.create_api_key(cur, "redis-down")
        # Given uploads being imported
        before = [upload(gw, key, SEED + n) for n in range(2)]
        wait_for(lambda: task_state(gw, key, before[0]["task_id"])["state"] in ("running", "completed"),
                 timeout=60, interval=0.1)
        # When Redis stops for 20 s
        own_valkey.stop()
        stopped_at = time.monotonic()
        # Then new uploads are still accepted, each within 5 s, and stored as queued
        during = []
        for n in range(2):
            seconds, task = timed(lambda n=n: upload(gw, key, SEED + 10 + n))
            assert seconds < 5 and task["state"] == "queued"
            during.append(task)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
        own_valkey.start()
        restarted_at = time.monotonic()
        # And once it is back, every upload completes, each with all its rows exactly once
        for task in before + during:
            done = wait_for(lambda t=task: (lambda s: s if s["state"] in ("completed", "failed") else None)(
                task_state(gw, key, t["task_id"])), timeout=150, interval=0.5)
            assert done["state"] == "completed", done
            assert done["result"]["rows_inserted"] == ROWS
        recovered_after = time.monotonic() - restarted_at
        with db.transaction() as cur:
            cur.execute("SELECT upload_task_id::text AS task, count(*) AS n FROM responses GROUP BY 1")
            counts = {row["task"]: row["n"] for row in cur.fetchall()}
        db.close()
        assert counts == {task["task_id"]: ROWS for task in before + during}
        print(f"uploads accepted during the outage completed {recovered_after:.1f}s after Redis came back")
