"""A real `dramatiq` worker process: it beats (so `collect health` passes) and logs JSON lines; and
every log line written while a task runs names the task."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.sample_data import csv_bytes
from shared.logs import JsonFormatter
from tests.conftest import ROOT, upload, wait_for, wait_for_state
from tests.gateway.conftest import free_port


def collect(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **(env or {})})


def test_a_worker_process_beats_and_logs_json():
    # Given a control worker started as in production
    log = Path(tempfile.mkdtemp(prefix="collect-worker-")) / "worker.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "services.control.actors", "--skip-logging",
             "--queues", "control", "--processes", "1", "--threads", "1"],
            # Its own port for Dramatiq's Prometheus exporter: one that another process holds would make the
            # exporter print a traceback into the log this test reads.
            cwd=ROOT, env={**os.environ, "dramatiq_prom_port": str(free_port())}, stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        # Then `collect health control` reports it alive and exits 0
        result = wait_for(lambda: (r := collect("health", "control")).returncode == 0 and r, timeout=30)
        report = json.loads(result.stdout)
        assert report["serviceId"] == "control"
        assert report["checks"]["workers:alive"][0]["observedValue"] >= 1
        # And what the worker process logs are JSON lines
        lines = wait_for(lambda: [line for line in log.read_text().splitlines() if "dramatiq" in line],
                         timeout=10)
        entries = [json.loads(line) for line in lines]
        assert any(entry["logger"].startswith("dramatiq") for entry in entries)
    finally:
        process.terminate()
        process.wait(30)


def test_collect_health_exits_non_zero_on_fail():
    unreachable = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    for args in (("health",), ("health", "upload")):
        result = collect(*args, env=unreachable)
        assert result.returncode == 1, result.stderr
        assert json.loads(result.stdout)["status"] == "fail"
    assert collect("health").returncode == 0


def test_log_lines_written_while_a_task_runs_name_it(client, api_key, worker):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shared.batch_runner")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        task_id = upload(client, api_key, csv_bytes(10)).json["task_id"]
        wait_for_state(client, api_key, task_id, "completed")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    completed = [e for e in entries if e["message"] == f"task {task_id} completed"]
    assert completed and completed[0]["task_id"] == task_id
