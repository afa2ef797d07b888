"""The gateway run by gunicorn on its own (as in a container, without `collect up`): /metrics adds up its
worker processes in a directory that gunicorn_config makes, and removes when gunicorn exits."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from tests.conftest import ROOT
from tests.gateway.conftest import free_port, wait_until_up
from tests.metrics.test_live_metrics import scrape, value

ROUTE = {"method": "GET", "route": "/health/live", "status": "200"}


def test_a_gunicorn_of_its_own_adds_up_its_workers_and_cleans_up(tmp_path):
    # Given gunicorn with 2 workers and no PROMETHEUS_MULTIPROC_DIR (temporary files go to tmp_path)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "python:services.gateway.gunicorn_config", "--bind",
         url.removeprefix("http://"), "--workers", "2", "--worker-class", "gthread", "--threads", "2",
         "services.gateway.wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"{url}/health/live", process)
        before = value(scrape(f"{url}/metrics"), "collect_http_requests_total", **ROUTE)
        # When 10 requests are spread over its workers
        for _ in range(10):
            with urllib.request.urlopen(f"{url}/health/live", timeout=10):
                pass
        # Then /metrics counts all 10, from the files of a directory made for this gunicorn
        assert value(scrape(f"{url}/metrics"), "collect_http_requests_total", **ROUTE) == before + 10
        (directory,) = tmp_path.glob("collect-metrics-*")
        assert list(directory.glob("*.db"))
    finally:
        process.terminate()
        process.wait(15)
    # ... which is gone once gunicorn has stopped
    assert not directory.exists()
