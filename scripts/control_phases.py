"""Where the time of a pause and a resume goes while uploads run: starts the stack as scripts/bench does,
starts N 1M-row uploads (one organization each), then pauses and resumes them in turn and prints, per trial,
milliseconds from the pause POST to the answer, split at the task's recorded transitions, and from the
resume POST to `running` and to its first committed batch.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python scripts/control_phases.py [--uploads 4] [--trials 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stack import Bench  # noqa: E402
from benchlib import server_urls  # noqa: E402

COLUMNS = ("pause: POST -> answer", "POST -> pausing", "pausing -> paused (worker)", "paused -> answer",
           "resume: POST -> running", "running -> first batch")


def trial(bench: Bench, stack, key: str, task_id: str) -> tuple[float, ...] | None:
    posted = time.time()
    _, task = stack.request("POST", f"/api/pause/{task_id}/?wait=10", key)
    answered = time.time()
    if task["state"] != "paused":
        return None
    at = {row["to_state"]: float(row["at"]) for row in bench.sql(
        "SELECT to_state, extract(epoch FROM at) AS at FROM task_events WHERE task_id = %s ORDER BY id DESC LIMIT 2",
        (task_id,))}
    done = task["progress"]["done"]
    resumed = time.time()
    stack.request("POST", f"/api/resume/{task_id}/", key)
    while bench.sql("SELECT state FROM tasks WHERE id = %s", (task_id,))[0]["state"] != "running":
        time.sleep(0.002)
    running = time.time()
    while bench.sql("SELECT progress_done FROM tasks WHERE id = %s", (task_id,))[0]["progress_done"] == done:
        time.sleep(0.002)
    return (answered - posted, at["pausing"] - posted, at["paused"] - at["pausing"], answered - at["paused"],
            running - resumed, time.time() - running)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=4)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("-v", action="store_true", help="print every trial")
    args = parser.parse_args()
    server_url, redis_url = server_urls()
    rows = []
    with tempfile.TemporaryDirectory(prefix="collect-phases-") as scratch:
        bench = Bench(server_url, redis_url, (args.port, args.port + 1), Path(scratch))
        path = bench.csv_file(args.rows)
        with bench.stack() as stack:
            tasks = stack.running_uploads(bench, path, args.uploads)
            for number in range(args.trials):
                measured = trial(bench, stack, *tasks[number % len(tasks)])
                if measured is not None:
                    rows.append(measured)
        bench.db.close()
    print(f"{len(rows)} trials, {args.uploads} upload(s) running; milliseconds, median (max):")
    for i, name in enumerate(COLUMNS):
        values = [row[i] * 1000 for row in rows]
        print(f"  {name}: {statistics.median(values):.0f} ({max(values):.0f})")
    if "-v" in sys.argv[1:]:
        for row in rows:
            print(" ".join(f"{value * 1000:6.0f}" for value in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
