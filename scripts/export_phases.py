"""Where an export's time goes: runs the export job's batches directly (as the batch runner does, one
transaction each) against the bench database and prints the seconds spent in each part.

    scripts/bench --only copy --rounds 1 --keep     # leaves 1M rows and an export task in collect_bench
    .venv/bin/python scripts/export_phases.py [--parallel 2] [--batch-rows 40000]

The parts: waiting for the next page (read by the reader threads), storing it (storage.append), the
commit; and, summed over the reader threads, their probes and page reads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.export import exporter, pages  # noqa: E402
from shared import storage  # noqa: E402
from shared.db import Database, with_database  # noqa: E402
from shared.tasks import get_task  # noqa: E402

SPENT: Counter = Counter()


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started
    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=40000)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    db = Database(with_database(server, os.environ.get("BENCH_DATABASE") or "collect_bench"), maxconn=2)
    with db.transaction() as cur:
        cur.execute("SELECT id FROM tasks WHERE kind = 'export' ORDER BY created_at DESC LIMIT 1")
        task = get_task(cur, cur.fetchone()["id"])
        cur.execute("DELETE FROM stored_files WHERE task_id = %s", (task.id,))
    pages.PageReader.next = timed("wait for the next page", pages.PageReader.next)
    pages.PageReader._probe_and_read = timed("readers: probe and read (summed)", pages.PageReader._probe_and_read)
    storage.append = timed("store the page", storage.append)
    job = exporter.ExportJob(db, args.batch_rows, args.parallel)
    checkpoint, batches, started = None, 0, time.perf_counter()
    while True:
        with db.transaction() as cur:
            batch = job.run_batch(cur, task, checkpoint)
            committing = time.perf_counter()
        SPENT["commit"] += time.perf_counter() - committing
        checkpoint, batches = batch.checkpoint, batches + 1
        if batch.finished:
            break
    job.close()
    total = time.perf_counter() - started
    print(f"{checkpoint['rows']:,} rows, {checkpoint['bytes']:,} bytes, {batches} batches, {args.parallel} "
          f"reader(s): {total:.2f} s")
    for name, seconds in SPENT.most_common():
        print(f"  {name}: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
