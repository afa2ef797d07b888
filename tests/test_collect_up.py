"""`collect up` as a user runs it: the whole stack in one process tree. A worker killed mid-upload is
started again, and the upload completes with every row exactly once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid

import psutil
import pytest

from scripts.sample_data import csv_bytes
from tests.conftest import ROOT, collect_up, count_responses, multipart, wait_for

ROWS = 50_000
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, method: str, path: str, key: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(base + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {key}", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.load(response)


@pytest.fixture
def stack(rt):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "BROKER_NAMESPACE": f"up-{uuid.uuid4().hex[:8]}",
           "GATEWAY_WORKERS": "1"}
    base = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return urllib.request.urlopen(f"{base}/health/ready", timeout=2).status == 200
        except OSError:
            return False

    with collect_up(env, ready, timeout=60, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        yield base, env, process


def upload_workers(process: subprocess.Popen) -> list[psutil.Process]:
    """The live processes of the upload worker (dramatiq's main process and its worker process)."""
    found = []
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "services.upload.actors" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def test_collect_up_restarts_a_killed_worker_and_the_upload_completes(stack, rt):
    base, env, process = stack
    # The key printed last by `collect keys create`
    # (an organization of this run's own: the same file uploaded twice to one organization inserts nothing anew)
    organization = f"up-test-{uuid.uuid4().hex[:8]}"
    out = subprocess.run([os.path.join(BIN, "collect"), "keys", "create", "--org", organization], env=env,
                         cwd=ROOT, capture_output=True, text=True, check=True)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("ck_")
    body, headers = multipart(csv_bytes(ROWS, seed=5))
    status, task = call(base, "POST", "/api/upload-file/", key, body, headers)
    assert status == 202
    task_id = task["task_id"]
    wait_for(lambda: call(base, "GET", f"/api/tasks/{task_id}/", key)[1]["progress"]["done"] > 0, timeout=60)
    # When the upload worker processes are killed outright
    killed = upload_workers(process)
    assert killed
    for worker in killed:
        worker.kill()
    task = call(base, "GET", f"/api/tasks/{task_id}/", key)[1]
    assert task["state"] == "running" and task["progress"]["done"] < task["progress"]["total"], task
    # Then collect up starts the worker again, and the task is taken over from its checkpoint
    wait_for(lambda: (workers := upload_workers(process)) and all(w.pid not in {k.pid for k in killed}
                                                                   for w in workers), timeout=30)
    task = wait_for(lambda: (t := call(base, "GET", f"/api/tasks/{task_id}/", key)[1])["state"] == "completed" and t,
                    timeout=120, interval=0.5)
    assert task["result"]["rows_inserted"] == ROWS
    assert count_responses(rt, task_id) == ROWS
    events = call(base, "GET", f"/api/tasks/{task_id}/?events=1", key)[1]["events"]
    assert any(e["reason"] == "previous worker's lease expired" for e in events), events
