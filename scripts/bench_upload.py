"""Benchmark: a 1,000,000-row upload end to end (POST to `completed`) against `psql \\copy` of the same file
into an equivalent table with the same indexes, measured in the same run. Prints both rates and the ratio.

Uses a dedicated database (collect_bench) on the server DATABASE_URL names (default: the local one) and
starts its own gateway and upload worker on BENCH_PORT (default 8099).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
from benchlib import fresh_database, new_api_key, post_file, server_urls, stack, wait_state

from scripts.sample_data import QUESTIONS, write_responses


def raw_copy_seconds(database_url: str, path: Path) -> float:
    """psql \\copy of the file into a table with the CSV's columns, typed, plus the organization and task
    columns (filled by constant defaults), carrying exactly the three indexes of `responses`."""
    columns = ", ".join(f'"{q}" text' for q in QUESTIONS)
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"""CREATE TABLE raw_responses (
            organization_id uuid NOT NULL DEFAULT '{uuid.uuid4()}',
            response_id uuid NOT NULL, form_id text NOT NULL, submitted_at timestamptz NOT NULL, {columns},
            upload_task_id uuid DEFAULT '{uuid.uuid4()}',
            PRIMARY KEY (organization_id, response_id))""")
        cur.execute("CREATE INDEX ON raw_responses (organization_id, submitted_at, response_id)")
        cur.execute("CREATE INDEX ON raw_responses (upload_task_id)")
    conn.close()
    column_list = ", ".join(["response_id", "form_id", "submitted_at", *(f'"{q}"' for q in QUESTIONS)])
    started = time.perf_counter()
    subprocess.run(["psql", database_url, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy raw_responses ({column_list}) FROM '{path}' WITH (FORMAT csv, HEADER true)"],
                   check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8099")))
    args = parser.parse_args()
    server, redis_url = server_urls()
    database_url = fresh_database(server, "collect_bench")
    key = new_api_key(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "responses.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            write_responses(out, args.rows, seed=1)
        print(f"file: {args.rows} rows, {path.stat().st_size / 1e6:.1f} MB")
        raw = raw_copy_seconds(database_url, path)
        print(f"psql \\copy       : {raw:7.2f} s  {args.rows / raw:9.0f} rows/s")
        with stack(database_url, redis_url, args.port, ("upload",)) as base:
            started = time.perf_counter()
            task_id = post_file(base, key, path)
            posted = time.perf_counter() - started
            task = wait_state(base, key, task_id, ("completed", "failed"))
            ours = time.perf_counter() - started
    if task["state"] != "completed" or task["result"]["rows_inserted"] != args.rows:
        print(f"upload did not complete correctly: {task}", file=sys.stderr)
        return 1
    print(f"upload, end to end: {ours:7.2f} s  {args.rows / ours:9.0f} rows/s  (of which the POST: {posted:.2f} s)")
    print(f"ratio upload / raw COPY rate: {raw / ours:.2f}  (target >= 0.60)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
