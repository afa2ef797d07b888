"""What the benchmark scripts share: a dedicated database, and the stack (gateway + workers) as processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.db import recreate_database  # noqa: E402
from shared.migrate import migrate  # noqa: E402

NAMESPACE = "bench"


def server_urls() -> tuple[str, str]:
    return (os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres",
            os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")


def fresh_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server, migrate it; returns its URL."""
    url = recreate_database(server_url, name)
    migrate(url)
    return url


@contextlib.contextmanager
def stack(database_url: str, redis_url: str, port: int, queues: tuple[str, ...] = ("upload",)):
    """Gateway (gunicorn) and one worker process per queue, on a broker namespace of their own."""
    client = redis.Redis.from_url(redis_url)
    stale = client.keys(f"{NAMESPACE}:*")
    if stale:
        client.delete(*stale)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "BROKER_NAMESPACE": NAMESPACE}
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
                               "--worker-class", "gthread", "--threads", "4", "services.gateway.wsgi:app"],
                              env=env, cwd=ROOT, stderr=subprocess.DEVNULL)]
    for queue in queues:
        procs.append(subprocess.Popen([str(bin_dir / "dramatiq"), f"services.{queue}.actors", "--queues", queue,
                                       "--processes", "1", "--threads", "1"],
                                      env=env, cwd=ROOT, stderr=subprocess.DEVNULL))
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1.5)  # let the workers finish booting
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def call(method: str, url: str, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_file(base: str, key: str, path: Path) -> str:
    out = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {key}", "-F", f"file=@{path}",
                          f"{base}/api/upload-file/"], check=True, capture_output=True)
    return json.loads(out.stdout)["task_id"]


def wait_state(base: str, key: str, task_id: str, states: tuple[str, ...], interval: float = 0.05) -> dict:
    while True:
        _, task = call("GET", f"{base}/api/tasks/{task_id}/", key)
        if task["state"] in states:
            return task
        time.sleep(interval)


def new_api_key(database_url: str, organization: str = "bench") -> str:
    """An API key for a new organization in the benchmark database."""
    from shared import orgs
    from shared.db import Database

    db = Database(database_url, maxconn=1)
    try:
        with db.transaction() as cur:
            return orgs.create_api_key(cur, organization)
    finally:
        db.close()


@contextlib.contextmanager
def collect_up(database_url: str, redis_url: str, port: int, extra_env: dict[str, str] | None = None):
    """The whole stack as scripts/run starts it (`collect up --dev-key`) on its own broker namespace;
    yields (base URL, the development API key it printed)."""
    client = redis.Redis.from_url(redis_url)
    stale = client.keys(f"{NAMESPACE}:*")
    if stale:
        client.delete(*stale)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "BROKER_NAMESPACE": NAMESPACE,
           "PORT": str(port), **(extra_env or {})}
    process = subprocess.Popen([str(Path(sys.executable).parent / "collect"), "up", "--dev-key"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        key = None
        for line in process.stdout:  # `collect up` prints the key last, once everything is up
            if key == "":
                key = line.strip()
                break
            if line.startswith("Development API key"):
                key = ""
        if not key:
            raise RuntimeError("collect up exited before printing its development API key")
        # Keep draining its output so that it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
        yield f"http://127.0.0.1:{port}", key
    finally:
        process.terminate()
        process.wait(30)
