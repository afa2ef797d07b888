"""Benchmark: how long from a pause request to the worker's confirmed `paused`, on a running upload with
default settings (target: under 250 ms), against the round trip of a plain GET of the same task in the
same run. Pauses and resumes the upload REPEATS times, then checks it completed with every row once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import call, fresh_database, new_api_key, post_file, server_urls, stack, wait_state

from scripts.sample_data import write_responses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8098")))
    args = parser.parse_args()
    server, redis_url = server_urls()
    database_url = fresh_database(server, "collect_bench_control")
    key = new_api_key(database_url)
    pauses, gets = [], []
    with tempfile.TemporaryDirectory() as tmp, stack(database_url, redis_url, args.port) as base:
        path = Path(tmp) / "responses.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            write_responses(out, args.rows, seed=2)
        task_id = post_file(base, key, path)
        for _ in range(args.repeats):
            task = wait_state(base, key, task_id, ("running", "completed"), interval=0.01)
            if task["state"] == "completed":
                break
            time.sleep(0.3)
            started = time.perf_counter()
            call("GET", f"{base}/api/tasks/{task_id}/", key)
            gets.append(time.perf_counter() - started)
            started = time.perf_counter()
            status, task = call("POST", f"{base}/api/pause/{task_id}/?wait=10", key)
            elapsed = time.perf_counter() - started
            if task["state"] == "completed":
                break
            if status != 200 or task["state"] != "paused":
                print(f"pause was not confirmed: {status} {task}", file=sys.stderr)
                return 1
            pauses.append(elapsed)
            call("POST", f"{base}/api/resume/{task_id}/", key)
        task = wait_state(base, key, task_id, ("completed", "failed"))
    if task["state"] != "completed" or task["result"]["rows_inserted"] != args.rows:
        print(f"upload did not complete correctly: {task}", file=sys.stderr)
        return 1
    if not pauses:
        print("the upload finished before it could be paused: use more --rows", file=sys.stderr)
        return 1
    ms = [p * 1000 for p in pauses]
    print(f"pause -> paused confirmed over {len(ms)} pauses: median {statistics.median(ms):.0f} ms, "
          f"max {max(ms):.0f} ms (target < 250 ms)")
    print(f"baseline GET of the task: median {statistics.median(gets) * 1000:.1f} ms; "
          f"ratio pause/GET: {statistics.median(pauses) / statistics.median(gets):.0f}")
    print(f"upload completed with {task['result']['rows_inserted']} rows, each exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
