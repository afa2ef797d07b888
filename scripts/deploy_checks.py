#!/usr/bin/env python3
"""The real flow against a running Compose stack, through the gateway's published port (scripts/test-deploy).

Usage: scripts/deploy_checks.py --url http://127.0.0.1:PORT --project COMPOSE_PROJECT --work DIR

Checks, each printed as `PASS name` or `FAIL name: why`, then `N passed, N failed`; exits 1 on any failure:
every service's /health/{service} is `pass`; create an API key (in the gateway container); upload a CSV;
pause it while it runs and see `paused`; resume; it completes with exact row counts; export it and
download the file; upload again, kill the upload-worker container that runs it, and the task still
completes exactly (another worker takes it over once its lease has expired).
Only the standard library: it runs on the host, outside the project's virtualenv.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEALTH_PATHS = ("live", "ready", "upload", "export", "control")


class CheckFailed(Exception):
    """A check's expectation did not hold; the message says what was seen."""


class Gateway:
    """HTTP calls to the gateway with an API key; JSON in, (status, JSON or bytes) out."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.key = ""

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
             timeout: float = 30) -> tuple[int, object]:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in kind else raw)

    def upload(self, csv_path: Path) -> str:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{csv_path.name}\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + csv_path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        status, task = self.call("POST", "/api/upload-file/", body, f"multipart/form-data; boundary={boundary}",
                                 timeout=120)
        expect(status == 202, f"upload answered {status}: {task}")
        return task["task_id"]

    def task(self, task_id: str, events: bool = False) -> dict:
        status, task = self.call("GET", f"/api/tasks/{task_id}/" + ("?events=1" if events else ""))
        expect(status == 200, f"GET task answered {status}: {task}")
        return task

    def wait_for(self, task_id: str, done, what: str, timeout: float) -> dict:
        """Poll the task until `done(task)` holds; CheckFailed naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        task = self.task(task_id)
        while not done(task):
            expect(task["state"] not in ("failed", "revoked"), f"task ended {task['state']}: {task.get('error')}")
            expect(time.monotonic() < deadline, f"no {what} within {timeout:.0f} s; task is {task}")
            time.sleep(0.05)
            task = self.task(task_id)
        return task


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def completed(task: dict) -> bool:
    return task["state"] == "completed"


def docker(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise CheckFailed(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def containers(project: str, service: str) -> list[str]:
    """Ids of the project's running containers of one Compose service."""
    return docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                  "--filter", f"label=com.docker.compose.service={service}").split()


def generate_csv(rows: int, path: Path, seed: int) -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts" / "generate_dummy_data.py"), str(rows),
                    "--out", str(path), "--seed", str(seed)], check=True, capture_output=True, timeout=120)
    return path


def check_health(gateway: Gateway) -> None:
    for name in HEALTH_PATHS:
        status, report = gateway.call("GET", f"/health/{name}")
        expect(status == 200 and report.get("status") == "pass", f"/health/{name} answered {status}: {report}")


def check_create_key(gateway: Gateway, project: str) -> None:
    output = docker("exec", containers(project, "gateway")[0], "collect", "keys", "create", "--org", "deploy-test")
    gateway.key = output.splitlines()[-1].strip()
    status, body = gateway.call("GET", "/api/tasks/")
    expect(status == 200, f"the new key is refused: {status} {body}")


def check_upload_pause_resume(gateway: Gateway, csv_path: Path, rows: int) -> str:
    task_id = gateway.upload(csv_path)
    gateway.wait_for(task_id, lambda t: t["state"] == "running" and t["progress"]["done"] > 0, "running upload", 60)
    status, paused = gateway.call("POST", f"/api/pause/{task_id}/?wait=10")
    expect(status == 200 and paused["state"] == "paused", f"pause answered {status}: {paused}")
    seen = gateway.task(task_id)
    expect(seen["state"] == "paused", f"the task reads {seen['state']} after the pause")
    progress = seen["progress"]
    expect(0 < progress["done"] < progress["total"], f"paused at {progress}, not part-way: upload too small?")
    status, resumed = gateway.call("POST", f"/api/resume/{task_id}/")
    expect(status == 202, f"resume answered {status}: {resumed}")
    task = gateway.wait_for(task_id, completed, "completion after resume", 180)
    result = task["result"]
    expect(result["rows_inserted"] == rows and result["rows_rejected"] == 0
           and result["rows_skipped_duplicate"] == 0, f"upload result {result}, expected {rows} rows inserted")
    return task_id


def check_export_download(gateway: Gateway, rows: int, work: Path) -> None:
    status, task = gateway.call("POST", "/api/export/?from_date=1970-01-01&to_date=2099-12-31")
    expect(status == 202, f"export answered {status}: {task}")
    task = gateway.wait_for(task["task_id"], completed, "completed export", 180)
    expect(task["result"]["rows"] == rows, f"export result {task['result']}, expected {rows} rows")
    status, body = gateway.call("GET", f"/api/tasks/{task['task_id']}/download", timeout=120)
    expect(status == 200 and isinstance(body, bytes), f"download answered {status}")
    path = work / "export.csv"
    path.write_bytes(body)
    with path.open(newline="", encoding="utf-8") as file:
        records = sum(1 for _ in csv.reader(file)) - 1
    expect(records == rows, f"the downloaded file has {records} rows, expected {rows}")


def check_worker_killed(gateway: Gateway, project: str, csv_path: Path, rows: int) -> None:
    workers = containers(project, "upload-worker")
    expect(len(workers) >= 2, f"{len(workers)} upload-worker containers running, expected 2")
    hosts = {docker("inspect", "-f", "{{.Config.Hostname}}", worker): worker for worker in workers}
    task_id = gateway.upload(csv_path)
    task = gateway.wait_for(task_id, lambda t: t["state"] == "running" and t["progress"]["done"] > 0,
                            "running upload", 60)
    # The worker that claimed it names itself in the event: worker:<container hostname>:<pid>.
    actors = [event["actor"] for event in gateway.task(task_id, events=True)["events"]
              if event["to_state"] == "running"]
    running_on = [worker for host, worker in hosts.items() if any(f":{host}:" in actor for actor in actors)]
    expect(len(running_on) == 1, f"cannot tell which upload-worker runs the task: actors {actors}, hosts {hosts}")
    done_before = gateway.task(task_id)["progress"]["done"]
    docker("kill", running_on[0])
    print(f"     killed upload-worker {running_on[0][:12]} at byte {done_before} of {task['progress']['total']}",
          flush=True)
    task = gateway.wait_for(task_id, completed, "completion after the kill", 240)
    result = task["result"]
    expect(result["rows_inserted"] == rows and result["rows_rejected"] == 0
           and result["rows_skipped_duplicate"] == 0, f"upload result {result}, expected {rows} rows inserted")
    actors = [event["actor"] for event in gateway.task(task_id, events=True)["events"]
              if event["to_state"] == "running"]
    killed_host = next(host for host, worker in hosts.items() if worker == running_on[0])
    expect(len(actors) >= 2 and f":{killed_host}:" not in actors[-1],
           f"no other worker took the task over after the kill: running events by {actors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--project", required=True, help="Compose project name (container labels)")
    parser.add_argument("--work", required=True, type=Path, help="directory for the generated files")
    parser.add_argument("--rows", type=int, default=60000, help="rows of each uploaded CSV")
    args = parser.parse_args(argv)
    gateway = Gateway(args.url)
    first = generate_csv(args.rows, args.work / "first.csv", seed=1)
    second = generate_csv(args.rows, args.work / "second.csv", seed=2)
    checks = [
        ("every /health/{service} is pass", lambda: check_health(gateway)),
        ("create an API key in the gateway container", lambda: check_create_key(gateway, args.project)),
        ("upload, pause (paused), resume, complete with exact rows",
         lambda: check_upload_pause_resume(gateway, first, args.rows)),
        ("export and download exactly the uploaded rows", lambda: check_export_download(gateway, args.rows, args.work)),
        ("kill the upload-worker running an upload: another completes it exactly",
         lambda: check_worker_killed(gateway, args.project, second, args.rows)),
    ]
    passed = failed = 0
    for name, check in checks:
        started = time.monotonic()
        try:
            check()
        except (CheckFailed, OSError, KeyError, subprocess.SubprocessError) as error:
            failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            if name.startswith("create an API key"):
                break  # nothing after it can run without a key
        else:
            passed += 1
            print(f"PASS {name} ({time.monotonic() - started:.1f} s)", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
