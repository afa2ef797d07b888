"""An upload's two phases through the stack: seconds of the POST (the file streamed and stored, until the 202)
and of the run after it (until `completed`), for a sample file, N times, each from empty tables. Starts the
stack as scripts/bench does.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python scripts/upload_phases.py [--rows 1000000] [--times 4]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stack import BENCH_DATABASE, Bench  # noqa: E402
from benchlib import server_urls  # noqa: E402

from shared.db import drop_database  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--times", type=int, default=4)
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    server_url, redis_url = server_urls()
    with tempfile.TemporaryDirectory(prefix="collect-phases-") as scratch:
        bench = Bench(server_url, redis_url, (args.port, args.port + 1), Path(scratch))
        path = bench.csv_file(args.rows)
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(drop_database, server_url, BENCH_DATABASE)
            cleanup.callback(bench.db.close)
            stack = cleanup.enter_context(bench.stack())
            for _ in range(args.times):
                bench.reset()
                key = bench.api_key()
                posted = time.perf_counter()
                task_id = stack.post_file(key, path)
                accepted = time.perf_counter()
                task = stack.wait(key, task_id, "completed", "failed")
                done = time.perf_counter()
                print(f"POST {accepted - posted:.2f} s  run {done - accepted:.2f} s  total {done - posted:.2f} s  "
                      f"{task['state']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
