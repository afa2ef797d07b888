"""Benchmark: the control API's p99 latency (pause and resume requests) with no dashboard open, then with
DASHBOARDS simulated dashboards polling as the page does: the task list every 0.9 s with If-None-Match
(with --detail, also one open task's detail and events, as when every dashboard has a task open). Target:
p99 < 100 ms while 50 dashboards are open. Also prints the gateway's CPU time per poll, a figure that does
not depend on how busy the machine is.

The gateway runs as `collect up` runs it (gunicorn, gthread, 2 workers x 8 threads), without task workers,
so the measured tasks stay queued/paused and every request is the same work. Loopback only; each phase is
bounded by --seconds, the pollers stop with it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
from benchlib import NAMESPACE, ROOT, fresh_database, new_api_key, server_urls

from services.upload.sample_data import csv_bytes

POLL_SECONDS = 0.9  # as the dashboard polls (app.js, POLL_MS)


class Client:
    """One keep-alive connection, as a browser tab keeps one."""

    def __init__(self, base: str, key: str) -> None:
        self.netloc = urlsplit(base).netloc
        self.key = key
        self.conn = http.client.HTTPConnection(self.netloc, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        all_headers = {"Authorization": f"Bearer {self.key}", **(headers or {})}
        try:
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.netloc, timeout=30)
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
        return response.status, response.getheader("ETag"), response.read()


def poller(base: str, key: str, paths: list[str], stop_at: float, out) -> None:
    """One dashboard: GETs `paths` every POLL_SECONDS, conditionally, until stop_at."""
    client = Client(base, key)
    tags: dict[str, str | None] = {}
    statuses: dict[int, int] = {}
    latencies = []
    # Dashboards are opened at different moments: their polls are spread over the second, not a burst.
    time.sleep(random.uniform(0, POLL_SECONDS))
    while time.time() < stop_at:
        started = time.perf_counter()
        for path in paths:
            sent = time.perf_counter()
            status, tag, _ = client.request("GET", path, headers={"If-None-Match": tags[path]} if tags.get(path)
                                            else {})
            latencies.append(time.perf_counter() - sent)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                tags[path] = tag
        time.sleep(max(0.0, POLL_SECONDS - (time.perf_counter() - started)))
    out.put((statuses, latencies))


def measure_control(client: Client, task_ids: list[str], seconds: float) -> list[float]:
    """Pause then resume each task in turn (queued -> paused -> queued), for `seconds`; each request's time."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for task_id in task_ids:
            for action, expected in (("pause", 200), ("resume", 202)):
                started = time.perf_counter()
                status, _, body = client.request("POST", f"/api/{action}/{task_id}/")
                latencies.append(time.perf_counter() - started)
                if status != expected:
                    raise RuntimeError(f"{action} answered {status}: {body[:300]!r}")
            time.sleep(0.02)  # a user's pace, not a flood: the pollers are the load under test
    return latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboards", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase (default 30)")
    parser.add_argument("--tasks", type=int, default=30, help="tasks in the organization (default 30)")
    parser.add_argument("--detail", action="store_true", help="each dashboard also polls an open task's detail")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8096")))
    args = parser.parse_args()
    server, redis_url = server_urls()
    database_url = fresh_database(server, "collect_bench_dashboard")
    key = new_api_key(database_url)
    broker = redis.Redis.from_url(redis_url)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "BROKER_NAMESPACE": NAMESPACE}
    gateway = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{args.port}", "--worker-class",
         "gthread", "--workers", "2", "--threads", "8", "services.gateway.wsgi:app"],
        env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(150):
            try:
                Client(base, key).request("GET", "/health/live")
                break
            except OSError:
                time.sleep(0.2)
        client = Client(base, key)
        body = csv_bytes(20)
        boundary = "bench-dashboard"
        form = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.csv"\r\n'
                "Content-Type: text/csv\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        task_ids = []
        for _ in range(args.tasks):
            status, _, answer = client.request("POST", "/api/upload-file/", form,
                                               {"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert status == 202, answer
            task_ids.append(json.loads(answer)["task_id"])
        # The newest tasks: on the dashboards' first page, so that each pause/resume changes what they see.
        controlled = task_ids[-5:]

        quiet = measure_control(client, controlled, args.seconds)
        print(f"control API, no dashboard open: {len(quiet)} requests, p50 {statistics.median(quiet) * 1000:.1f} ms, "
              f"p99 {p99(quiet):.1f} ms", flush=True)

        results = multiprocessing.Queue()
        stop_at = time.time() + args.seconds + 5
        # Pollers live in 5 processes, so that their client-side work does not slow the measuring thread.
        groups = [list(range(i, args.dashboards, 5)) for i in range(5)]
        processes = [multiprocessing.Process(target=_poller_group,
                                             args=(base, key, task_ids, args.detail, group, stop_at, results))
                     for group in groups if group]
        for process in processes:
            process.start()
        time.sleep(3)  # every poller has opened its connection and done its first full reads
        cpu_before = gateway_cpu_seconds(gateway.pid)
        busy = measure_control(client, controlled, args.seconds)
        cpu_used = gateway_cpu_seconds(gateway.pid) - cpu_before
        collected = [results.get(timeout=args.seconds + 60) for _ in range(args.dashboards)]
        for process in processes:
            process.join(30)
        statuses: dict[int, int] = {}
        poll_latencies = []
        for counts, latencies in collected:
            poll_latencies += latencies
            for status, n in counts.items():
                statuses[status] = statuses.get(status, 0) + n
        total_polls = sum(statuses.values())
        print(f"control API, {args.dashboards} dashboards polling: {len(busy)} requests, "
              f"p50 {statistics.median(busy) * 1000:.1f} ms, p99 {p99(busy):.1f} ms (target < 100 ms)")
        print(f"dashboard polls: {total_polls} in {args.seconds + 5:.0f} s ({total_polls / (args.seconds + 5):.0f}/s), "
              f"statuses {dict(sorted(statuses.items()))}, {100 * statuses.get(304, 0) / total_polls:.0f}% 304, "
              f"p99 {p99(poll_latencies):.1f} ms")
        polls_measured = total_polls * args.seconds / (args.seconds + 5)
        per_request = 1000 * cpu_used / (polls_measured + len(busy))
        print(f"gateway CPU while measuring: {cpu_used:.1f} s in {args.seconds:.0f} s "
              f"({100 * cpu_used / args.seconds:.0f}% of one core, ~{per_request:.1f} ms a request)")
        return 0 if p99(busy) < 100 else 1
    finally:
        gateway.terminate()
        gateway.wait(30)
        stale = broker.keys(f"{NAMESPACE}:*")
        if stale:
            broker.delete(*stale)


def gateway_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of gunicorn's master and workers so far."""
    import psutil

    total = 0.0
    master = psutil.Process(pid)
    for process in [master, *master.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _poller_group(base: str, key: str, task_ids: list[str], detail: bool, group: list[int], stop_at: float,
                  out) -> None:
    import threading

    def paths(i: int) -> list[str]:
        listing = ["/api/tasks/?limit=20&offset=0"]
        return listing + [f"/api/tasks/{task_ids[i % len(task_ids)]}/?events=1"] if detail else listing

    threads = [threading.Thread(target=poller, args=(base, key, paths(i), stop_at, out)) for i in group]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    raise SystemExit(main())
