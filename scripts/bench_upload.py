"""Benchmark: a 1,000,000-row upload end to end (POST to `completed`) against `psql \\copy` of the same file
into an equivalent table with the same indexes, measured in the same run. Prints both rates and the ratio.

Runs against a dedicated database (collect_bench) on the server named by DATABASE_URL, or on the local
default server; starts its own gateway and upload worker processes on BENCH_PORT (default 8099).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.upload.sample_data import QUESTIONS, write_responses  # noqa: E402
from shared import orgs  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.migrate import migrate  # noqa: E402

BENCH_DB = "collect_bench"


def recreate(server_url: str) -> str:
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    conn.close()
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{BENCH_DB}"))


def raw_copy_seconds(database_url: str, path: Path) -> float:
    """psql \\copy of the file into a table with the CSV's columns, typed, plus the organization and task
    columns (filled by constant defaults), carrying exactly the three indexes of `responses`."""
    columns = ", ".join(f'"{q}" text' for q in QUESTIONS)
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS raw_responses")
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
                    f"\\copy raw_responses ({column_list}) FROM '{path}' WITH (FORMAT csv, HEADER true)"], check=True)
    return time.perf_counter() - started


def upload_seconds(database_url: str, redis_url: str, path: Path, rows: int, port: int) -> tuple[float, dict]:
    db = Database(database_url, maxconn=2)
    with db.transaction() as cur:
        key = orgs.create_api_key(cur, "bench")
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "BROKER_NAMESPACE": "bench", "PORT": str(port)}
    bin_dir = Path(sys.executable).parent
    procs = [
        subprocess.Popen([str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
                          "--worker-class", "gthread", "--threads", "4", "services.gateway.wsgi:app"],
                         env=env, cwd=ROOT, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(bin_dir / "dramatiq"), "services.upload.actors", "--queues", "upload",
                          "--processes", "1", "--threads", "1"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL),
    ]
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1)
        started = time.perf_counter()
        out = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {key}", "-F", f"file=@{path}",
                              f"http://127.0.0.1:{port}/api/upload-file/"], check=True, capture_output=True)
        task_id = json.loads(out.stdout)["task_id"]
        posted = time.perf_counter() - started
        while True:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/tasks/{task_id}/",
                                             headers={"Authorization": f"Bearer {key}"})
            task = json.load(urllib.request.urlopen(request))
            if task["state"] in ("completed", "failed"):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if task["state"] != "completed" or task["result"]["rows_inserted"] != rows:
            raise SystemExit(f"upload did not complete correctly: {task}")
        return elapsed, {"post_seconds": round(posted, 2)}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8099")))
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    database_url = recreate(server)
    migrate(database_url)
    redis.Redis.from_url(redis_url).delete(*(redis.Redis.from_url(redis_url).keys("bench:*") or ["-"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "responses.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            write_responses(out, args.rows, seed=1)
        size = path.stat().st_size
        print(f"file: {args.rows} rows, {size / 1e6:.1f} MB")
        raw = raw_copy_seconds(database_url, path)
        print(f"psql \\copy      : {raw:7.2f} s  {args.rows / raw:10.0f} rows/s")
        ours, extra = upload_seconds(database_url, redis_url, path, args.rows, args.port)
        print(f"upload (e2e)    : {ours:7.2f} s  {args.rows / ours:10.0f} rows/s  (HTTP POST took {extra['post_seconds']} s)")
        print(f"ratio upload/raw: {raw / ours:.2f}  (target >= 0.60)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
