"""Test fixtures: a fresh database and Redis db on the real servers, the gateway app, a worker.

DATABASE_URL / REDIS_URL name the servers (embedded ones are started when unset). The tests never touch
the databases they name: they create their own database (COLLECT_TEST_DB, default collect_tests) on that
server and use Redis logical db COLLECT_TEST_REDIS_DB (default 15), flushing it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from shared.db import recreate_database

ROOT = Path(__file__).resolve().parent.parent
_embedded = None


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytest_configure(config):
    """Point every process of the test run at the test database before any service module is imported."""
    global _embedded
    base_db, base_redis = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not base_db or not base_redis:
        from shared.embedded import EmbeddedServices

        _embedded = EmbeddedServices(ROOT / ".data" / "test").start(with_redis=not base_redis, redis_port=None)
        base_db = base_db or _embedded.database_url
        base_redis = base_redis or _embedded.redis_url
    db_name = os.environ.get("COLLECT_TEST_DB", "collect_tests")
    test_db = recreate_database(base_db, db_name)
    test_redis = _with_path(base_redis, f"/{os.environ.get('COLLECT_TEST_REDIS_DB', '15')}")
    redis.Redis.from_url(test_redis).flushdb()
    os.environ.update({
        # The workers the tests start serve Dramatiq's Prometheus exporter here, not on the default 9191
        # that a stack running on this machine may hold.
        "dramatiq_prom_port": str(_free_port()),
        "DATABASE_URL": test_db,
        "REDIS_URL": test_redis,
        "UPLOAD_BATCH_ROWS": "200",
        "EXPORT_BATCH_ROWS": "200",
        "TASK_LEASE_SECONDS": "3",
    })
    from shared.migrate import migrate

    migrate(test_db)


def pytest_unconfigure(config):
    if _embedded is not None:
        _embedded.stop()


@pytest.fixture(scope="session")
def rt():
    from shared.runtime import runtime

    return runtime()


@pytest.fixture(scope="session")
def worker(rt):
    """An in-process Dramatiq worker consuming every service queue."""
    import dramatiq

    import services.control.actors  # noqa: F401  (declares the actors)
    import services.export.actors  # noqa: F401
    import services.upload.actors  # noqa: F401

    worker = dramatiq.Worker(rt.broker, worker_threads=4, worker_timeout=50)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def app(rt):
    from services.gateway.app import create_app

    return create_app(rt.db, rt.broker, rt.settings)


@pytest.fixture(scope="session")
def idle_app(rt):
    """The gateway with a broker whose queues no worker consumes: its tasks stay queued."""
    from dramatiq.brokers.redis import RedisBroker

    from services.gateway.app import create_app

    return create_app(rt.db, RedisBroker(url=rt.settings.redis_url, namespace="idle"), rt.settings)


@pytest.fixture
def boundary_client(rt):
    """The gateway with a broker on which no worker listens for stop announcements: a pause or revoke it
    requests is answered at the task's next batch boundary (the slow, authoritative path), never by
    cancelling the batch in flight. Its task messages go nowhere: resume through `client`."""
    from dramatiq.brokers.redis import RedisBroker
    from falcon import testing

    from services.gateway.app import create_app

    return testing.TestClient(create_app(rt.db, RedisBroker(url=rt.settings.redis_url, namespace="quiet"),
                                         rt.settings))


@pytest.fixture
def idle_client(idle_app):
    from falcon import testing

    return testing.TestClient(idle_app)


@pytest.fixture
def client(app):
    from falcon import testing

    return testing.TestClient(app)


def new_key(rt, organization: str | None = None) -> str:
    from shared import orgs

    with rt.db.transaction() as cur:
        return orgs.create_api_key(cur, organization or f"org-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def api_key(rt) -> str:
    return new_key(rt)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for(predicate, timeout: float = 30, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def multipart(data: bytes, filename: str = "responses.csv", field: str = "file") -> tuple[bytes, dict]:
    boundary = "collect" + uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(client, key: str, data: bytes, **kwargs):
    body, headers = multipart(data, **kwargs)
    return client.simulate_post("/api/upload-file/", body=body, headers={**headers, **auth(key)})


def get_task(client, key: str, task_id: str) -> dict:
    result = client.simulate_get(f"/api/tasks/{task_id}/", headers=auth(key))
    assert result.status_code == 200, result.text
    return result.json


def wait_for_state(client, key: str, task_id: str, *states: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (lambda task: task if task["state"] in states else None)(get_task(client, key, task_id)),
                    timeout=timeout)


def count_responses(rt, task_id: str | None = None) -> int:
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM responses WHERE %s::uuid IS NULL OR upload_task_id = %s::uuid",
                    (task_id, task_id))
        return cur.fetchone()["n"]


def stored_for(rt, organization: str) -> dict[str, int]:
    """How many tasks and stored files the organization named `organization` has."""
    with rt.db.transaction() as cur:
        cur.execute("SELECT (SELECT count(*) FROM tasks t JOIN organizations o ON o.id = t.organization_id"
                    "        WHERE o.name = %(n)s) AS tasks,"
                    "       (SELECT count(*) FROM stored_files f JOIN organizations o"
                    "        ON o.id = f.organization_id WHERE o.name = %(n)s) AS files", {"n": organization})
        return dict(cur.fetchone())


def stop(process: subprocess.Popen, grace: float = 30, sig: int = signal.SIGTERM) -> None:
    """Ask the process to stop (`sig`), and kill it if it is still running `grace` seconds later."""
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextlib.contextmanager
def collect_up(env: dict[str, str], ready, timeout: float = 90, **popen) -> Iterator[subprocess.Popen]:
    """`collect up` running with `env` (in the repository), once `ready()` is true; stopped (SIGTERM, then
    killed after 30 s) when the block ends."""
    process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "collect"), "up"], env=env,
                               cwd=ROOT, **popen)
    try:
        wait_for(ready, timeout=timeout, interval=0.2)
        yield process
    finally:
        stop(process)
