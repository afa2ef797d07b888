"""Pages read ahead and in parallel (services.export.pages): the same bytes as one page at a time, and
nothing left running or connected once a run ends."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime

import psycopg2
import pytest

from scripts.sample_data import csv_bytes
from services import export
from services.export.exporter import ExportJob
from services.export.params import ExportRange
from shared import storage
from shared.tasks import get_task
from tests.conftest import new_key, wait_for
from tests.export.conftest import upload_responses


@pytest.fixture
def organization(client, rt, worker) -> uuid.UUID:
    """An organization holding 700 generated responses submitted during 2024 (two uploads)."""
    key = new_key(rt)
    upload_responses(client, key, csv_bytes(400, seed=21))
    task = upload_responses(client, key, csv_bytes(300, seed=22))
    with rt.db.transaction() as cur:
        cur.execute("SELECT organization_id FROM tasks WHERE id = %s", (task["task_id"],))
        return cur.fetchone()["organization_id"]


def export_task(rt, organization_id: uuid.UUID):
    """An export task of the whole of 2024 that no worker runs (it is left paused): the test runs its job."""
    wanted = ExportRange("2024-01-01", "2024-12-31", datetime(2024, 1, 1, tzinfo=UTC),
                         datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    with rt.db.transaction() as cur:
        task = export.KIND_SPEC.create(cur, organization_id=organization_id, params=wanted.to_params(), actor="test")
        cur.execute("UPDATE tasks SET state = 'paused' WHERE id = %s", (task.id,))
        return get_task(cur, task.id, None)


def run_export(rt, task, job: ExportJob, stop_after: int | None = None,
               checkpoint: dict | None = None) -> tuple[bytes, list[int]]:
    """Run the job's batches as the batch runner does (a transaction each), from `checkpoint`; returns the
    file's bytes and the rows of each batch. With `stop_after`, the run ends after that many batches and a
    new job resumes."""
    rows, batches = [], 0
    while True:
        with rt.db.transaction() as cur:
            batch = job.run_batch(cur, task, checkpoint)
        checkpoint, batches = batch.checkpoint, batches + 1
        rows.append(batch.rows)
        if batch.finished:
            break
        if batches == stop_after:
            job.close()
            job = ExportJob(rt.db, job.batch_rows, job.parallel)
    job.close()
    with rt.db.transaction() as cur:
        info = storage.task_file(cur, task.id, "export")
    return b"".join(storage.iter_chunks(rt.db, info["id"])), rows


@pytest.mark.parametrize("parallel", [2, 5])
def test_pages_read_in_parallel_give_the_bytes_of_pages_read_one_at_a_time(rt, organization, parallel):
    alone, alone_rows = run_export(rt, export_task(rt, organization), ExportJob(rt.db, 64, parallel=1))
    together, rows = run_export(rt, export_task(rt, organization), ExportJob(rt.db, 64, parallel=parallel))
    resumed, _ = run_export(rt, export_task(rt, organization), ExportJob(rt.db, 64, parallel=parallel),
                            stop_after=3)
    assert together == alone == resumed
    # Every page but the last holds exactly the batch's rows; the file holds all 700 and the header.
    assert rows == alone_rows and rows[:-1] == [64] * 10 and rows[-1] == 700 - 640
    records = list(csv.reader(io.StringIO(alone.decode(), newline="")))
    assert len(records) == 701 and len({record[0] for record in records[1:]}) == 700


def test_closing_a_run_stops_its_readers_and_closes_their_connections(rt, organization):
    # Given a run that has read its first page and is reading the next ones ahead
    job = ExportJob(rt.db, 50, parallel=3)
    task = export_task(rt, organization)
    with rt.db.transaction() as cur:
        job.run_batch(cur, task, None)
    opened = list(job._pages._opened)
    assert opened and not any(conn.closed for conn in opened)
    pids = [conn.info.backend_pid for conn in opened]
    # When the run ends
    job.close()
    # Then every reader connection is closed and no backend of it is left
    assert all(conn.closed for conn in opened)

    def backends_left() -> int:
        with rt.db.transaction() as cur:
            cur.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            return cur.fetchone()["n"]

    # (a backend leaves pg_stat_activity a moment after its client hung up)
    wait_for(lambda: backends_left() == 0, timeout=5)


def within(seconds: float, call):
    """call()'s result or exception, or AssertionError if it has not returned within `seconds` (it is left
    running in a daemon thread: a hang shows as a failure, not as a stuck test run)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001  (handed to the caller)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} did not return within {seconds}s"
    return outcome


def test_reader_connections_killed_between_pages_fail_the_batch_and_close_without_hanging(rt, organization):
    # Given a run that has read its first page, with the next pages read ahead and their connections idle
    undisturbed, _ = run_export(rt, export_task(rt, organization), ExportJob(rt.db, 50, parallel=1))
    task = export_task(rt, organization)
    job = ExportJob(rt.db, 50, parallel=3)
    with rt.db.transaction() as cur:
        batch = job.run_batch(cur, task, None)
    checkpoint = batch.checkpoint
    pages = job._pages
    # (however many connections the reader threads opened: a thread may reuse one another gave back)
    wait_for(lambda: pages._pending and all(p.page.done() for p in pages._pending) and not pages._busy
             and pages._idle.qsize() == len(pages._opened) > 0, timeout=10)
    # When their backends are terminated
    with rt.db.transaction() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)",
                    ([conn.info.backend_pid for conn in pages._opened],))

    def next_batches():
        nonlocal checkpoint
        while True:  # the pages read before the kill are good; the first one read after it fails
            with rt.db.transaction() as cur:
                checkpoint = job.run_batch(cur, task, checkpoint).checkpoint

    # Then the batch that needs a page read on a dead connection fails with the lost connection, at once
    failed = within(10, next_batches)
    assert isinstance(failed.get("error"), psycopg2.OperationalError), failed
    # And the run closes without waiting for pages that can never be read
    assert "error" not in within(10, job.close)
    # And a new run goes on from the last checkpoint to the same bytes as a run nothing disturbed
    resumed, _ = run_export(rt, task, ExportJob(rt.db, 50, parallel=3), checkpoint=checkpoint)
    assert resumed == undisturbed
