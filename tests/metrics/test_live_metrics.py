"""/metrics of a live `collect up` (gunicorn with 2 workers, one Dramatiq command per domain, each with
Dramatiq's exporter on its own port) while an upload runs, is paused and resumed. The dashboard and the
alert rules only name metrics that this real output has."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.upload.sample_data import csv_bytes
from shared import orgs
from shared.db import Database, drop_database, recreate_database
from shared.migrate import migrate
from tests.conftest import ROOT, collect_up, multipart, wait_for

ROWS = 40_000
DASHBOARD = ROOT / "deploy" / "grafana" / "collect-tasks.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Metrics named in PromQL: ours and Dramatiq's.
METRIC_NAME = re.compile(r"\b(?:collect|dramatiq)_[a-z0-9_]+\b")


def free_ports(count: int, start: int = 8170) -> int:
    """The first of `count` consecutive free ports at or after `start` (the team's range for this area)."""
    for base in range(start, start + 2000, count):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no free ports")


def new_key(db: Database) -> str:
    with db.transaction() as cur:
        return orgs.create_api_key(cur, f"org-{uuid.uuid4().hex[:8]}")


def get(url: str, key: str | None = None, method: str = "GET", body: bytes | None = None,
        headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers={
        **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, by (sample name, labels)."""
    text = get(url)[1].decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def live_db():
    """A database of the stack's own: the metrics it reads are global (all tasks, every worker), so no
    other test's task may move them, nor may the stack's sweep take over another test's stalled task."""
    url = recreate_database(os.environ["DATABASE_URL"], f"{urlsplit(os.environ['DATABASE_URL']).path[1:]}_live")
    migrate(url)
    db = Database(url, maxconn=2)
    yield db
    db.close()
    drop_database(os.environ["DATABASE_URL"], urlsplit(url).path[1:])


@pytest.fixture(scope="module")
def stack(live_db):
    base = free_ports(4)
    env = {**os.environ, "DATABASE_URL": live_db.dsn, "PORT": str(base), "WORKER_METRICS_PORT": str(base + 1),
           "BROKER_NAMESPACE": f"metrics-{uuid.uuid4().hex[:8]}", "GATEWAY_WORKERS": "2"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    gateway = f"http://127.0.0.1:{base}"
    exporters = {queue: f"http://127.0.0.1:{base + 1 + offset}/metrics"
                 for offset, queue in enumerate(("upload", "control", "export"))}

    def up():
        try:
            get(f"{gateway}/health/ready")
            return all(get(url)[0] == 200 for url in exporters.values())
        except OSError:
            return False

    with collect_up(env, up, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        yield gateway, exporters, process


def test_task_metrics_move_during_an_upload_paused_and_resumed(stack, live_db):
    gateway, exporters, _ = stack
    metrics = f"{gateway}/metrics"
    key = new_key(live_db)
    data = csv_bytes(ROWS, seed=11)
    before = scrape(metrics)
    assert value(before, "collect_tasks", kind="upload", state="paused") == 0
    rows_before = value(before, "collect_task_rows_processed_total", kind="upload")
    bytes_before = value(before, "collect_task_bytes_processed_total", kind="upload")

    # Given an upload that is running
    body, headers = multipart(data)
    status, task = get(f"{gateway}/api/upload-file/", key, "POST", body, headers)
    assert status == 202
    task_id = json.loads(task)["task_id"]

    # Then the rows processed, read from /metrics, increase while it runs
    first = wait_for(lambda: (v := value(scrape(metrics), "collect_task_rows_processed_total", kind="upload"))
                     > rows_before and v, timeout=60, interval=0.1)
    wait_for(lambda: value(scrape(metrics), "collect_task_rows_processed_total", kind="upload") > first,
             timeout=60, interval=0.1)

    # When it is paused, the paused gauge goes to 1 and the rows stop moving
    status, paused = get(f"{gateway}/api/pause/{task_id}/?wait=10", key, "POST")
    assert status == 200 and json.loads(paused)["state"] == "paused"
    during = scrape(metrics)
    assert value(during, "collect_tasks", kind="upload", state="paused") == 1
    rows_paused = value(during, "collect_task_rows_processed_total", kind="upload")
    assert rows_before < rows_paused < rows_before + ROWS
    assert value(scrape(metrics), "collect_task_rows_processed_total", kind="upload") == rows_paused
    # ... the gateway counted the pause request, the upload worker the confirmation and its latency
    assert value(during, "collect_task_transitions_total", from_state="running", to_state="pausing") >= 1
    worker = scrape(exporters["upload"])
    assert value(worker, "collect_task_transitions_total", from_state="pausing", to_state="paused") >= 1
    assert value(worker, "collect_task_pause_latency_seconds_count", kind="upload") >= 1
    assert value(worker, "collect_task_batch_duration_seconds_count", kind="upload") >= 2

    # When it is resumed, the gauge goes back to 0, and the upload completes with every row counted once
    status, _ = get(f"{gateway}/api/resume/{task_id}/", key, "POST")
    assert status == 202
    assert value(scrape(metrics), "collect_tasks", kind="upload", state="paused") == 0
    wait_for(lambda: json.loads(get(f"{gateway}/api/tasks/{task_id}/", key)[1])["state"] == "completed",
             timeout=120, interval=0.3)
    after = scrape(metrics)
    assert value(after, "collect_task_rows_processed_total", kind="upload") == rows_before + ROWS
    header = data.index(b"\n") + 1
    assert value(after, "collect_task_bytes_processed_total", kind="upload") == bytes_before + len(data) - header
    # Dramatiq's own metrics, from the upload worker's exporter
    worker = scrape(exporters["upload"])
    assert value(worker, "dramatiq_messages_total", queue_name="upload", actor_name="run_upload") >= 2


def test_requests_are_counted_by_route_template_across_gunicorn_workers(stack, live_db):
    gateway, _, _ = stack
    key = new_key(live_db)
    task_id = str(uuid.uuid4())
    route = {"method": "GET", "route": "/api/tasks/{task_id:uuid}", "status": "404"}
    before = value(scrape(f"{gateway}/metrics"), "collect_http_requests_total", **route)
    # When 20 requests go to a route (gunicorn spreads them over its 2 workers) and one to no route
    for _ in range(20):
        with pytest.raises(urllib.error.HTTPError, match="404"):
            get(f"{gateway}/api/tasks/{task_id}/", key)
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(f"{gateway}/no/such/{task_id}")
    # Then /metrics adds up the workers: exactly 20, under the template; the raw paths appear nowhere
    text = get(f"{gateway}/metrics")[1].decode()
    samples = scrape(f"{gateway}/metrics")
    assert value(samples, "collect_http_requests_total", **route) == before + 20
    assert value(samples, "collect_http_request_duration_seconds_count", **route) == before + 20
    assert value(samples, "collect_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert task_id not in text


def test_each_worker_domain_has_its_own_exporter_and_directory(stack):
    gateway, exporters, process = stack
    # Each exporter serves its own domain's messages only (a shared directory would serve them all)
    for queue, url in exporters.items():
        queues = {dict(labels).get("queue_name") for (name, labels) in scrape(url)
                  if name == "dramatiq_messages_total"}
        assert queues <= {queue}, (queue, queues)
    # ... from a fresh directory per process group, made for this run
    directories = set()
    for child in psutil.Process(process.pid).children():
        directory = child.environ().get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            directories.add(directory)
    assert len(directories) == 4, directories
    assert len({os.path.dirname(d) for d in directories}) == 1
    assert all(Path(d).is_dir() for d in directories)


@pytest.fixture(scope="module")
def exposed(stack, live_db) -> set[str]:
    """The sample names of the gateway's and the workers' real output, once an upload was paused and
    completed (a labelled metric shows only once something was counted)."""
    gateway, exporters, _ = stack
    if not any(name == "collect_task_pause_latency_seconds_count" for name, _ in scrape(exporters["upload"])):
        pause_and_complete_an_upload(gateway, new_key(live_db))
    names = {name for name, _ in scrape(f"{gateway}/metrics")}
    for url in exporters.values():
        names |= {name for name, _ in scrape(url)}
    return names


def pause_and_complete_an_upload(gateway: str, key: str) -> None:
    body, headers = multipart(csv_bytes(ROWS, seed=12))
    task_id = json.loads(get(f"{gateway}/api/upload-file/", key, "POST", body, headers)[1])["task_id"]

    def task() -> dict:
        return json.loads(get(f"{gateway}/api/tasks/{task_id}/", key)[1])

    wait_for(lambda: task()["progress"]["done"] > 0, timeout=60, interval=0.1)
    assert json.loads(get(f"{gateway}/api/pause/{task_id}/?wait=10", key, "POST")[1])["state"] == "paused"
    get(f"{gateway}/api/resume/{task_id}/", key, "POST")
    wait_for(lambda: task()["state"] == "completed", timeout=120, interval=0.3)


def test_every_metric_the_dashboard_queries_is_exposed(exposed):
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 10
    for expression in expressions:
        named = METRIC_NAME.findall(expression)
        assert named, expression
        assert set(named) <= exposed, (expression, set(named) - exposed)


def test_every_metric_the_alert_rules_use_is_exposed(exposed):
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert {"CollectQueueMessageTooOld", "CollectTasksStuckPausing", "CollectPauseLatencyHigh"} <= {
        rule["alert"] for rule in rules}
    for rule in rules:
        named = METRIC_NAME.findall(rule["expr"])
        assert named and set(named) <= exposed, (rule["alert"], set(named) - exposed)
