"""GET /metrics: the gateway's Prometheus exposition.

It serves, in one text:
* the instruments of every gunicorn worker process of this gateway, added up by prometheus_client's
  multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (`collect up` and gunicorn_config set it up);
  otherwise (one process, e.g. the tests' in-process app) this process's own registry;
* the task metrics read from PostgreSQL and Redis at scrape time (shared.metrics.TaskCollector).

Request counts and durations are labelled with the route's template (`/api/tasks/{task_id:uuid}`), never
the raw path, so task ids never become labels.
"""

from __future__ import annotations

import os
import time

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from shared.metrics import TaskCollector

# A path no route matches (a 404) gets this label: raw paths would make the label set unbounded.
UNMATCHED = "unmatched"

REQUESTS = Counter("collect_http_requests", "HTTP requests answered by the gateway.", ["method", "route", "status"])
REQUEST_SECONDS = Histogram("collect_http_request_duration_seconds", "Time the gateway took to answer.",
                            ["method", "route", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class RequestMetrics:
    """Falcon middleware that counts and times every request by method, route template and status."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        # Methods are bounded too: anything unusual is one label value.
        method = req.method if req.method in _METHODS else "other"
        labels = (method, req.uri_template or UNMATCHED, str(falcon.http_status_to_code(resp.status)))
        REQUESTS.labels(*labels).inc()
        REQUEST_SECONDS.labels(*labels).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsResource:
    """The Prometheus text exposition of the gateway's and the tasks' metrics."""

    def __init__(self, db, redis_url: str, namespace: str = "dramatiq") -> None:
        self.tasks = TaskCollector(db, redis_url, namespace)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The Prometheus text format (docs/metrics.md lists the metrics). Operational, like Prometheus
        exporters everywhere: not part of the OpenAPI document and not behind the API key."""
        multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if multiprocess_dir:
            processes = CollectorRegistry()
            MultiProcessCollector(processes, multiprocess_dir)
        else:
            processes = REGISTRY
        # The task collector is a registry of its own per scrape: it reads shared state, never files.
        tasks = CollectorRegistry()
        tasks.register(self.tasks)
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(processes) + generate_latest(tasks)
