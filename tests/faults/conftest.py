"""Fault-suite helpers: worker processes of our own (each in its own broker namespace, so that no other test's
worker sees their messages), killed or stopped for real, and the gateway that sends them work.

Every random choice comes from a seeded random.Random: FAULT_SEED (default 7) replays a run exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from dramatiq.brokers.redis import RedisBroker
from falcon import testing

from shared import storage
from shared.db import Database
from tests.conftest import ROOT

SEED = int(os.environ.get("FAULT_SEED", "7"))
WORKER_MODULES = ("services.upload.actors", "services.export.actors", "services.control.actors")
STABLE_STATES = ("paused", "completed", "revoked", "failed")


def _worker_log():
    """FAULT_WORKER_LOG names a file for the workers' logs (to see what a failing run did)."""
    path = os.environ.get("FAULT_WORKER_LOG")
    return open(path, "ab") if path else subprocess.DEVNULL  # noqa: SIM115  (the child owns it)


def start_worker(namespace: str, threads: int = 4, **env: str) -> subprocess.Popen:
    """A Dramatiq worker process (one process, `threads` threads) serving every queue of `namespace`, with
    extra environment `env` (tiny batches, a short lease, another database)."""
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dramatiq"), *WORKER_MODULES,
         "--queues", "upload", "export", "control", "--processes", "1", "--threads", str(threads)],
        env={**os.environ, "BROKER_NAMESPACE": namespace, **env}, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=_worker_log(),
    )


def kill(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    """Signal the worker's whole process group (dramatiq forks) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextmanager
def running_worker(namespace: str, threads: int = 4, **env: str) -> Iterator[subprocess.Popen]:
    proc = start_worker(namespace, threads, **env)
    try:
        yield proc
    finally:
        kill(proc, signal.SIGTERM)


@pytest.fixture
def namespace() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fault_client(rt, namespace):
    """The gateway, sending its messages to the workers of `namespace`, with a pool for 20 requests at once."""
    from services.gateway.app import create_app

    db = Database(rt.settings.database_url, maxconn=30)
    yield testing.TestClient(create_app(db, RedisBroker(url=rt.settings.redis_url, namespace=namespace),
                                        rt.settings))
    db.close()


def reached(client, key: str, task_id: str, share: float) -> bool:
    """Whether the task has done `share` of its work, or finished."""
    from tests.conftest import get_task

    task = get_task(client, key, task_id)
    progress = task["progress"]
    return task["state"] not in ("queued", "running") or bool(progress["total"]) and \
        progress["done"] >= share * progress["total"]


def task_row(db, task_id) -> dict:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,))
        return cur.fetchone()


def task_rows(db, task_id) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM responses WHERE upload_task_id = %s", (task_id,))
        return cur.fetchone()["n"]


def export_bytes(db, task_id) -> bytes | None:
    """The bytes an export has stored so far (None when it has no file)."""
    with db.transaction() as cur:
        cur.execute("SELECT id FROM stored_files WHERE task_id = %s AND purpose = 'export'", (task_id,))
        row = cur.fetchone()
    return None if row is None else b"".join(storage.iter_chunks(db, row["id"]))


def task_files(db, task_id) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stored_files WHERE task_id = %s", (task_id,))
        return cur.fetchone()["n"]
