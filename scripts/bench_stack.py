"""The bench's machinery: the sizes of a run, its result rows, the stack it starts (exactly as `collect up`)
and the readers it feeds uploads from. scripts/bench.py measures with it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import redis  # noqa: E402
from benchlib import NAMESPACE, fresh_database  # noqa: E402

from scripts.sample_data import write_responses  # noqa: E402
from services.cli import gunicorn_command, metrics_environments, stack_commands  # noqa: E402
from shared.db import Database  # noqa: E402

BENCH_DATABASE = os.environ.get("BENCH_DATABASE") or "collect_bench"
# The sample data's responses are submitted during 2024: the export range covers all of them.
EXPORT_RANGE = {"from_date": "2024-01-01", "to_date": "2024-12-31"}


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: the issue's sizes for a full run, small ones for --quick."""

    rows: int = 1_000_000
    big: int = 5_000_000
    rss_small: int = 500_000
    growth_small: int = 100_000
    pause_trials: int = 50
    load_seconds: float = 8.0
    clients: int = 32
    orgs: int = 8
    org_rows: int = 250_000
    neighbour_rows: int = 1_000
    rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rows=100_000, big=200_000, rss_small=100_000, growth_small=50_000, pause_trials=10,
                   load_seconds=1.0, org_rows=12_500, rounds=1)


@dataclass
class Row:
    """One line of the table: `measured` against `baseline` (their ratio), or alone against `target`."""

    what: str
    measured: float
    unit: str
    baseline: float | None
    target: str
    passed: bool
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.measured / self.baseline


# --- the stack and the database ------------------------------------------------------------------------

class Bench:
    def __init__(self, server_url: str, redis_url: str, ports: tuple[int, int], scratch: Path) -> None:
        self.database_url = fresh_database(server_url, BENCH_DATABASE)
        self.redis_url = redis_url
        self.port, self.limit_port = ports
        self.scratch = scratch
        self.db = Database(self.database_url, maxconn=4)
        self.env = {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": redis_url,
                    "BROKER_NAMESPACE": NAMESPACE}
        self._files: dict[int, Path] = {}
        # (rows, seconds, upload worker peak RSS or None) of each upload size measured: the cost-growth table.
        self.growth: list[tuple[int, float, int | None]] = []

    def csv_file(self, rows: int) -> Path:
        """A sample CSV of `rows` responses (made once per run; the same seed gives the same rows)."""
        if rows not in self._files:
            path = self.scratch / f"responses-{rows}.csv"
            with path.open("w", newline="", encoding="utf-8") as out:
                write_responses(out, rows, seed=rows)
            self._files[rows] = path
        return self._files[rows]

    def api_key(self) -> str:
        """An API key of a new organization."""
        from shared import orgs

        with self.db.transaction() as cur:
            return orgs.create_api_key(cur, f"bench-{uuid.uuid4()}")

    def sql(self, statement: str, params: tuple = ()) -> list[dict]:
        with self.db.transaction() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def reset(self) -> None:
        """Forget every response, task and file of earlier measurements (each starts from empty tables)."""
        self.sql("TRUNCATE responses, tasks, stored_files, answer_layouts, forms CASCADE")
        self.vacuum()

    def vacuum(self, *tables: str) -> None:
        """VACUUM ANALYZE (outside a transaction, as it must run)."""
        with contextlib.closing(psycopg2.connect(self.database_url)) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"VACUUM ANALYZE {', '.join(tables)}")

    @contextlib.contextmanager
    def stack(self) -> Iterator[Stack]:
        client = redis.Redis.from_url(self.redis_url)
        stale = client.keys(f"{NAMESPACE}:*")
        if stale:
            client.delete(*stale)
        env = {**self.env, "PORT": str(self.port), "WORKER_METRICS_PORT": str(self.limit_port + 1)}
        metrics_dir, environments = metrics_environments(env, self.limit_port + 1)
        procs = [subprocess.Popen(command, env=environment, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for command, environment in zip(stack_commands(), environments, strict=True)]
        try:
            _wait_live(f"http://127.0.0.1:{self.port}/health/live")
            time.sleep(2)  # the workers boot more slowly than the gateway
            yield Stack(self.port, procs)
        finally:
            _stop(procs)
            shutil.rmtree(metrics_dir, ignore_errors=True)

    @contextlib.contextmanager
    def limit_app(self) -> Iterator[int]:
        """The limit app, running under the gateway's gunicorn settings; yields its port."""
        port = self.limit_port
        command = gunicorn_command("bench_limit_app:app")
        proc = subprocess.Popen([*command[:-1], "--pythonpath", str(ROOT / "scripts"), command[-1]],
                                env={**self.env, "PORT": str(port)}, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            _wait_live(f"http://127.0.0.1:{port}/tasks/{uuid.uuid4()}", expect_status=404)
            yield port
        finally:
            _stop([proc])


def _wait_live(url: str, expect_status: int = 200, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError as error:
            if error.code == expect_status:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop the processes and whatever they forked (a worker still importing gets 30 s, then SIGKILL)."""
    import psutil

    tree = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            tree += psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    _, alive = psutil.wait_procs(tree, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


class Stack:
    """The running stack's API, as a client sees it."""

    def __init__(self, port: int, procs: list[subprocess.Popen]) -> None:
        self.port = port
        self.procs = procs

    def request(self, method: str, path: str, key: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600, blocksize=1 << 20)
        try:
            conn.request(method, path, body=body, headers={"Authorization": f"Bearer {key}", **(headers or {})})
            response = conn.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else {})
        finally:
            conn.close()

    def post_file(self, key: str, path: Path) -> str:
        """POST the file as multipart/form-data, streamed from disk; returns the task id."""
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
                "Content-Type: text/csv\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = _Concatenated(head, path, tail)
        status, task = self.request("POST", "/api/upload-file/", key, body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(body.length)})
        if status != 202:
            raise RuntimeError(f"upload refused: {status} {task}")
        return task["task_id"]

    def running_uploads(self, bench: Bench, path: Path, count: int) -> list[tuple[str, str]]:
        """Start `count` uploads of the file, one new organization each, and return (key, task id) of each
        once all are running (and half a second into their batches)."""
        tasks = []
        for _ in range(count):
            key = bench.api_key()
            tasks.append((key, self.post_file(key, path)))
        for key, task_id in tasks:
            self.wait(key, task_id, "running", interval=0.01)
        time.sleep(0.5)
        return tasks

    def task(self, key: str, task_id: str) -> dict:
        return self.request("GET", f"/api/tasks/{task_id}/", key)[1]

    def wait(self, key: str, task_id: str, *states: str, interval: float = 0.05, timeout: float = 3600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.task(key, task_id)
            if task["state"] in states:
                return task
            time.sleep(interval)
        raise RuntimeError(f"task {task_id} did not reach {states} within {timeout} s")

    def upload(self, key: str, path: Path, rows: int) -> float:
        """Upload the file; returns the seconds from the POST's first byte to `completed` (checking every row
        was inserted)."""
        started = time.perf_counter()
        task_id = self.post_file(key, path)
        task = self.wait(key, task_id, "completed", "failed", "revoked")
        seconds = time.perf_counter() - started
        if task["state"] != "completed" or task["result"]["rows_inserted"] != rows:
            raise RuntimeError(f"upload did not insert every row: {task}")
        return seconds

    def worker_peak_rss(self, queue: str = "upload") -> int:
        """The peak resident set (bytes, Linux VmHWM) of the worker processes of `queue` so far."""
        import psutil

        master = next(p for p in self.procs if f"--queues {queue} " in " ".join(map(str, p.args)) + " ")
        peak = 0
        for proc in [psutil.Process(master.pid), *psutil.Process(master.pid).children(recursive=True)]:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        return peak


class _Concatenated:
    """A request body read from bytes, a file and bytes, without holding the file in memory."""

    def __init__(self, head: bytes, path: Path, tail: bytes) -> None:
        self.length = len(head) + path.stat().st_size + len(tail)
        self._parts = iter([head, path, tail])
        self._current = None

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._current is None:
                part = next(self._parts, None)
                if part is None:
                    return b""
                self._current = part.open("rb") if isinstance(part, Path) else _BytesReader(part)
            data = self._current.read(size)
            if data:
                return data
            self._current.close()
            self._current = None


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size < 0 else size
        out, self._data = self._data[:size], self._data[size:]
        return out

    def close(self) -> None:
        pass
