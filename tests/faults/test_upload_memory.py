"""The upload worker's memory is bounded by bytes, not rows: a real `dramatiq` worker process (production
batch settings) imports a 5,000-column file, a file with a 50 MB field and a 1,000,000-row narrow file, and
its peak resident set (VmHWM) stays under 400 MB."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest
from dramatiq.brokers.redis import RedisBroker
from falcon import testing

from tests.conftest import ROOT, stop, upload, wait_for, wait_for_state
from tests.gateway.conftest import free_port

PEAK_LIMIT_BYTES = 400 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


class UploadWorker:
    """A `dramatiq services.upload.actors` process tree on its own broker namespace."""

    def __init__(self, process: subprocess.Popen, namespace: str) -> None:
        self.process = process
        self.namespace = namespace

    def worker_pids(self) -> list[int]:
        """The live processes Dramatiq forked (a child that already exited, e.g. an exporter, has no memory)."""
        return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)
                if child.status() != psutil.STATUS_ZOMBIE]

    def reset_peak(self) -> None:
        """Start measuring the peak afresh (Linux: writing 5 to clear_refs resets VmHWM), so that each
        file's figure is its own; where that is not allowed, the figure is the peak since the start."""
        for pid in self.worker_pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def peak(self) -> int:
        """The highest peak RSS among the processes that run actors (Dramatiq forks them)."""
        return max(peak_rss(pid) for pid in self.worker_pids())


@pytest.fixture(scope="module")
def upload_worker(rt):
    namespace = f"rss-{uuid.uuid4().hex[:8]}"
    log = Path(tempfile.mkdtemp(prefix="collect-rss-")) / "worker.log"
    # The production batch sizes (the test suite's environment shrinks UPLOAD_BATCH_ROWS to 200).
    env = {**os.environ, "BROKER_NAMESPACE": namespace, "UPLOAD_BATCH_ROWS": "20000",
           "UPLOAD_BATCH_BYTES": str(16 * 1024 * 1024), "TASK_LEASE_SECONDS": "30",
           # Its own port for Dramatiq's Prometheus exporter: another worker may hold the default one.
           "dramatiq_prom_port": str(free_port())}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "services.upload.actors", "--skip-logging", "--queues", "upload",
             "--processes", "1", "--threads", "1"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    worker = UploadWorker(process, namespace)
    try:
        wait_for(worker.worker_pids, timeout=30)
        yield worker
    finally:
        stop(process)


@pytest.fixture(scope="module")
def gateway(rt, upload_worker):
    """The gateway app sending its task messages to the worker's namespace."""
    from services.gateway.app import create_app

    return testing.TestClient(create_app(rt.db, RedisBroker(url=rt.settings.redis_url,
                                                            namespace=upload_worker.namespace), rt.settings))


def import_and_measure(gateway, key: str, upload_worker, data: bytes) -> tuple[dict, int]:
    upload_worker.reset_peak()
    result = upload(gateway, key, data)
    assert result.status_code == 202, result.text
    task = wait_for_state(gateway, key, result.json["task_id"], "completed", "failed", timeout=280)
    assert task["state"] == "completed", task["error"]
    peak = upload_worker.peak()
    print(f"\npeak RSS of the upload worker after a {len(data) / 1e6:.0f} MB file: {peak / 2**20:.0f} MiB")
    return task, peak


def rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_a_5000_column_file_of_6000_rows(gateway, api_key, upload_worker):
    # Given 6,000 rows of 5,000 answered columns (60 MB; 360 MB of answers as COPY data)
    header = "response_id,form_id,submitted_at," + ",".join(f"c{i}" for i in range(4997)) + "\n"
    cells = ",x" * 4997
    data = (header + "".join(f"{rid(n)},wide,2024-01-01{cells}\n" for n in range(6000))).encode()
    # When the worker imports it
    task, peak = import_and_measure(gateway, api_key, upload_worker, data)
    # Then every row is in, and the worker stayed under 400 MB
    assert task["result"]["rows_inserted"] == 6000
    assert peak < PEAK_LIMIT_BYTES


def test_a_file_with_a_50_mb_field(gateway, api_key, upload_worker):
    # Given a file whose third row has a 50 MB field, between ordinary rows
    rows = [f"{rid(n)},big,2024-01-01,a{n}\n".encode() for n in range(1000)]
    rows[2] = f"{rid(2)},big,2024-01-01,".encode() + b"y" * 50_000_000 + b"\n"
    data = b"response_id,form_id,submitted_at,q\n" + b"".join(rows)
    # When the worker imports it
    task, peak = import_and_measure(gateway, api_key, upload_worker, data)
    # Then that row is rejected as too long, the others are in, and the worker stayed under 400 MB
    assert task["result"]["rows_inserted"] == 999
    assert task["result"]["rejections"] == [
        {"line": 4, "reason": "the row is longer than 16777216 bytes (UPLOAD_BATCH_BYTES)"}]
    assert peak < PEAK_LIMIT_BYTES


def test_a_narrow_file_of_a_million_rows(gateway, api_key, upload_worker):
    # Given 1,000,000 narrow rows
    data = ("response_id,form_id,submitted_at\n"
            + "".join(f"{rid(n)},narrow,2024-01-01\n" for n in range(1_000_000))).encode()
    # When the worker imports it
    task, peak = import_and_measure(gateway, api_key, upload_worker, data)
    # Then every row is in, and the worker stayed under 400 MB
    assert task["result"]["rows_inserted"] == 1_000_000
    assert peak < PEAK_LIMIT_BYTES
