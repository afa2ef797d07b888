"""Every row of the performance table (issue 10), each against its baseline measured in the same run.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \\
        scripts/bench [--quick] [--rounds 3] [--port 8099]

Works in its own database (collect_bench, dropped and recreated on the server DATABASE_URL names) and its own
broker namespace on REDIS_URL, and starts the stack exactly as `collect up` does (services.cli.stack_commands)
on --port (BENCH_DATABASE names another database). Baselines, as the issue fixes them:
- upload: `psql \\copy` of the same CSV file into a flat table (one typed column per CSV column, primary key
  on response_id, an index on (submitted_at, response_id));
- export: `psql \\copy (SELECT the CSV's columns FROM flat WHERE submitted_at in range ORDER BY submitted_at,
  response_id) TO file WITH (FORMAT csv, HEADER)` over the same rows;
- requests: a minimal Falcon app (scripts/bench_limit_app.py) under the gateway's gunicorn settings, one
  indexed primary-key SELECT per request from the same pool, under the same load: the gateway and the limit
  app take turns of half a second while the same upload runs.
--quick (100k rows, one round, small scale rows) is the CI smoke test: it prints the table without pass/fail.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_stack import (  # noqa: E402
    BENCH_DATABASE,
    EXPORT_RANGE,
    Bench,
    Row,
    Sizes,
    Stack,
)
from benchlib import server_urls  # noqa: E402

from scripts.sample_data import QUESTIONS  # noqa: E402
from shared.db import drop_database  # noqa: E402

# --- baselines -------------------------------------------------------------------------------------------

_FLAT_COLUMNS = ["response_id", "form_id", "submitted_at", *QUESTIONS]


def psql(bench: Bench, command: str) -> float:
    """Run one psql command (e.g. a \\copy) against the bench database; returns its seconds."""
    started = time.perf_counter()
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", bench.database_url, "-c", command], check=True)
    return time.perf_counter() - started


def baseline_copy_in(bench: Bench, path: Path) -> float:
    """psql \\copy of the file into a fresh flat table: one typed column per CSV column, the primary key on
    response_id and an index on (submitted_at, response_id), as responses has for its keys."""
    questions = ", ".join(f'"{q}" text' for q in QUESTIONS)
    bench.sql("DROP TABLE IF EXISTS flat")
    bench.sql(f"CREATE TABLE flat (response_id uuid PRIMARY KEY, form_id text NOT NULL, "
              f"submitted_at timestamptz NOT NULL, {questions})")
    bench.sql("CREATE INDEX flat_submitted ON flat (submitted_at, response_id)")
    columns = ", ".join(f'"{c}"' for c in _FLAT_COLUMNS)
    return psql(bench, f"\\copy flat ({columns}) FROM '{path}' WITH (FORMAT csv, HEADER true)")


def baseline_copy_out(bench: Bench, out: Path) -> float:
    """psql \\copy (SELECT the CSV's columns FROM flat in the range ORDER BY submitted_at, response_id) TO file."""
    columns = ", ".join(f'"{c}"' for c in _FLAT_COLUMNS)
    select = (f"SELECT {columns} FROM flat WHERE submitted_at >= '{EXPORT_RANGE['from_date']}T00:00:00Z' "
              f"AND submitted_at < '{EXPORT_RANGE['to_date']}T00:00:00Z'::timestamptz + interval '1 day' "
              "ORDER BY submitted_at, response_id")
    return psql(bench, f"\\copy ({select}) TO '{out}' WITH (FORMAT csv, HEADER)")


def csv_records(path: Path) -> int:
    """Data records of a CSV file (its header row not counted)."""
    with path.open(newline="", encoding="utf-8") as data:
        return sum(1 for _ in csv.reader(data)) - 1


# --- the measurements ------------------------------------------------------------------------------------

def copy_rounds(bench: Bench, sizes: Sizes) -> tuple[list[Row], float]:
    """Rows 1 and 2: upload and export of `sizes.rows` rows against their COPY baselines, round after round
    (each round's pair back to back, so both meet the same load); returns the rows and the upload's median
    rows/s (what the scale rows compare with)."""
    path = bench.csv_file(sizes.rows)
    ups, up_bases, exports, export_bases = [], [], [], []
    with bench.stack() as stack:
        for _ in range(sizes.rounds):
            bench.reset()
            up_bases.append(baseline_copy_in(bench, path))
            key = bench.api_key()
            ups.append(stack.upload(key, path, sizes.rows))
            # Both tables vacuumed alike: neither reader pays for setting hint bits on fresh rows.
            bench.vacuum("flat", "responses")
            baseline_out = bench.scratch / "baseline-export.csv"
            export_bases.append(baseline_copy_out(bench, baseline_out))
            seconds, exported = _export(bench, stack, key)
            exports.append(seconds)
            expected = csv_records(baseline_out)
            if exported != expected:
                raise RuntimeError(f"the export has {exported} rows, the baseline {expected}")
    n = sizes.rows
    upload_rate = n / statistics.median(ups)
    bench.growth.append((n, statistics.median(ups), None))
    return [
        Row(f"upload {n:,} rows, end to end / psql \\copy (rows/s)", upload_rate, "rows/s",
            n / statistics.median(up_bases), ">= 0.80",
            statistics.median(b / u for b, u in zip(up_bases, ups, strict=True)) >= 0.8),
        Row(f"export {n:,} rows, end to end / psql \\copy out (rows/s)", n / statistics.median(exports), "rows/s",
            n / statistics.median(export_bases), ">= 0.60",
            statistics.median(b / e for b, e in zip(export_bases, exports, strict=True)) >= 0.6),
    ], upload_rate


def _export(bench: Bench, stack: Stack, key: str) -> tuple[float, int]:
    """Export the whole range through the API; returns the seconds from the POST to `completed` and the rows
    of the downloaded file."""
    started = time.perf_counter()
    query = "&".join(f"{k}={v}" for k, v in EXPORT_RANGE.items())
    status, task = stack.request("POST", f"/api/export/?{query}", key)
    if status != 202:
        raise RuntimeError(f"export refused: {status} {task}")
    task = stack.wait(key, task["task_id"], "completed", "failed")
    seconds = time.perf_counter() - started
    if task["state"] != "completed":
        raise RuntimeError(f"export failed: {task}")
    out = bench.scratch / "api-export.csv"
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=600)
    conn.request("GET", f"/api/tasks/{task['task_id']}/download", headers={"Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    with out.open("wb") as file:
        while chunk := response.read(1 << 20):
            file.write(chunk)
    conn.close()
    return seconds, csv_records(out)


def scale_rows(bench: Bench, sizes: Sizes, upload_rate: float) -> list[Row]:
    """Rows 3 and 4: the big upload's rows/s against the base size's, and the upload worker's peak RSS for
    the big upload against a small one; each size in a freshly started stack (a worker's peak RSS is its
    lifetime's). Every size's time and peak also go into `bench.growth` (the cost-growth table)."""
    measured = {}
    for rows in sorted({sizes.growth_small, sizes.rss_small, sizes.big}):
        bench.reset()
        with bench.stack() as stack:
            seconds = stack.upload(bench.api_key(), bench.csv_file(rows), rows)
            measured[rows] = (seconds, stack.worker_peak_rss())
        bench.growth.append((rows, *measured[rows]))
    (big_seconds, big_rss), small_rss = measured[sizes.big], measured[sizes.rss_small][1]
    big_rate = sizes.big / big_seconds
    return [
        Row(f"upload {sizes.big:,} rows: rows/s / {sizes.rows:,} rows' rows/s", big_rate, "rows/s", upload_rate,
            ">= 0.9", big_rate / upload_rate >= 0.9),
        Row(f"upload worker peak RSS, {sizes.big:,} rows / {sizes.rss_small:,} rows", big_rss / 2**20, "MiB",
            small_rss / 2**20, "<= 1.1", big_rss / small_rss <= 1.1),
    ]


def growth_table(growth: list[tuple[int, float, int | None]]) -> str:
    """How an upload's cost grows with its size: seconds, rows/s and the worker's peak RSS per size."""
    lines = ["| rows | seconds | rows/s | upload worker peak RSS |", "|---|---|---|---|"]
    for rows, seconds, rss in sorted(growth):
        peak = "-" if rss is None else f"{rss / 2**20:,.0f} MiB"
        lines.append(f"| {rows:,} | {seconds:,.1f} | {rows / seconds:,.0f} | {peak} |")
    return "\n".join(lines)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def control_rows(bench: Bench, sizes: Sizes) -> list[Row]:
    """Rows 5 and 6: pause -> `paused` and resume -> first batch committed, over `pause_trials` trials with
    four uploads (of four organizations) running."""
    bench.reset()
    path = bench.csv_file(sizes.rows)
    pauses, resumes = [], []
    with bench.stack() as stack:
        tasks = stack.running_uploads(bench, path, 4)
        for trial in range(sizes.pause_trials):
            if not tasks:
                break  # every upload completed: the trials so far are all there is
            key, task_id = tasks[trial % len(tasks)]
            started = time.perf_counter()
            status, task = stack.request("POST", f"/api/pause/{task_id}/?wait=10", key)
            if task["state"] == "completed":
                tasks.remove((key, task_id))
                continue
            if status != 200 or task["state"] != "paused":
                raise RuntimeError(f"pause not confirmed: {status} {task}")
            pauses.append(time.perf_counter() - started)
            done = task["progress"]["done"]
            started = time.perf_counter()
            stack.request("POST", f"/api/resume/{task_id}/", key)
            deadline = started + 30
            while bench.sql("SELECT progress_done FROM tasks WHERE id = %s", (task_id,))[0]["progress_done"] == done:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"no batch committed within 30 s of resuming {task_id}")
                time.sleep(0.002)
            resumes.append(time.perf_counter() - started)
    pause_p99, resume_p99 = p99(pauses) * 1000, p99(resumes) * 1000
    return [
        Row(f"pause -> paused, p99 of {len(pauses)}, 4 tasks running", pause_p99, "ms", None, "< 150 ms",
            pause_p99 < 150, f"median {statistics.median(pauses) * 1000:.0f} ms"),
        Row("resume -> first batch committed, p99", resume_p99, "ms", None, "< 300 ms", resume_p99 < 300,
            f"median {statistics.median(resumes) * 1000:.0f} ms"),
    ]


def hammer(port: int, path: str, key: str, clients: int, seconds: float) -> tuple[list[float], float]:
    """`clients` threads GET `path` on keep-alive connections for `seconds`; returns the latencies of the
    200 answers (any other answer is an error) and the seconds it took."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while (now := time.perf_counter()) < deadline:
            conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(str(response.status))
                break
            mine.append(time.perf_counter() - now)
        conn.close()
        latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{path} answered {errors[:3]}")
    return latencies, time.perf_counter() - started


# Ours and the limit app take turns of this many seconds, so that both meet the same phases of the upload.
TURN_SECONDS = 0.5


def request_row(bench: Bench, sizes: Sizes) -> list[Row]:
    """Row 7: GET /api/tasks/{id}/ req/s with 32 clients while an upload of `sizes.rows` runs, against the
    limit app under the same load: the two take turns while the upload runs (up to `load_seconds` each)."""
    bench.reset()
    path = bench.csv_file(sizes.rows)
    with bench.stack() as stack, bench.limit_app() as limit_port:
        key = bench.api_key()
        task_id = stack.post_file(key, path)
        stack.wait(key, task_id, "running", interval=0.01)
        targets = {"ours": (stack.port, f"/api/tasks/{task_id}/"), "limit": (limit_port, f"/tasks/{task_id}")}
        latencies: dict[str, list[float]] = {name: [] for name in targets}
        seconds = dict.fromkeys(targets, 0.0)
        while seconds["ours"] < sizes.load_seconds and stack.task(key, task_id)["state"] == "running":
            for name, (port, target) in targets.items():
                answered, took = hammer(port, target, key, sizes.clients, TURN_SECONDS)
                latencies[name] += answered
                seconds[name] += took
    if not latencies["ours"]:
        raise RuntimeError("the upload ended before the first turn: nothing was measured")
    ours, limit = (len(latencies[name]) / seconds[name] for name in targets)
    ours_p99 = p99(latencies["ours"]) * 1000
    note = (f"p99 {ours_p99:.0f} ms, the limit app's {p99(latencies['limit']) * 1000:.0f} ms; "
            f"{seconds['ours']:.1f} s each, in turns of {TURN_SECONDS} s")
    return [Row(f"GET /api/tasks/{{id}}/ req/s, {sizes.clients} clients, upload running / limit app", ours,
                "req/s", limit, ">= 0.7, p99 < 50 ms", ours / limit >= 0.7 and ours_p99 < 50, note)]


def concurrency_rows(bench: Bench, sizes: Sizes, upload_rate: float) -> list[Row]:
    """Rows 8 and 9: `orgs` organizations uploading at once against one big upload's rows/s; a small upload
    of another organization while one organization runs a big upload and has queued five more."""
    bench.reset()
    path = bench.csv_file(sizes.org_rows)
    with bench.stack() as stack:
        keys = [bench.api_key() for _ in range(sizes.orgs)]
        seconds: list[float] = []
        started = time.perf_counter()
        threads = [threading.Thread(target=lambda k=key: seconds.append(stack.upload(k, path, sizes.org_rows)))
                   for key in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(seconds) != sizes.orgs:
            raise RuntimeError("an organization's upload failed")
        together = sizes.orgs * sizes.org_rows / (time.perf_counter() - started)
    bench.reset()
    big, small = bench.csv_file(sizes.big), bench.csv_file(sizes.neighbour_rows)
    with bench.stack() as stack:
        busy = bench.api_key()
        first = stack.post_file(busy, big)
        stack.wait(busy, first, "running", interval=0.01)
        for _ in range(5):
            stack.post_file(busy, bench.csv_file(sizes.rows))
        neighbour = stack.upload(bench.api_key(), small, sizes.neighbour_rows)
    return [
        Row(f"{sizes.orgs} organizations x {sizes.org_rows:,} rows at once: total rows/s / one upload's",
            together, "rows/s", upload_rate, ">= 0.9", together / upload_rate >= 0.9),
        Row(f"{sizes.neighbour_rows:,}-row upload of another organization during a {sizes.big:,}-row one "
            "(+5 queued)", neighbour, "s", None, "< 3 s", neighbour < 3),
    ]


# The groups of rows, in the table's order (--only picks some).
GROUPS = ("copy", "scale", "control", "requests", "concurrency")


# --- the table -------------------------------------------------------------------------------------------

def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row], judge: bool) -> str:
    """The rows as a Markdown table: measured, baseline, ratio, target, pass/fail (`-` when not judged)."""
    lines = ["| what | measured | baseline | ratio | target | pass |", "|---|---|---|---|---|---|"]
    for row in rows:
        verdict = ("pass" if row.passed else "FAIL") if judge else "-"
        measured = _number(row.measured, row.unit) + (f" ({row.note})" if row.note else "")
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(f"| {row.what} | {measured} | {_number(row.baseline, row.unit)} | {ratio} | {row.target} "
                     f"| {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, one round, no pass/fail (CI smoke test)")
    parser.add_argument("--rounds", type=int, help="rounds of the upload and export rows (default 3; 1 quick)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8099")),
                        help="the gateway's port")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DATABASE} database afterwards")
    parser.add_argument("--limit-port", type=int, help="the limit app's port (default: the gateway's + 1)")
    parser.add_argument("--only", choices=GROUPS, action="append",
                        help="run only these groups of rows (repeatable; default: all). 'scale' and "
                             "'concurrency' compare with the upload rate of 'copy', which they then measure too")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    server_url, redis_url = server_urls()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="collect-bench-") as scratch:
        bench = Bench(server_url, redis_url, (args.port, args.limit_port or args.port + 1), Path(scratch))
        try:
            rows: list[Row] = []
            only = set(args.only or GROUPS)
            upload_rate = 0.0
            if only & {"copy", "scale", "concurrency"}:
                rows, upload_rate = copy_rounds(bench, sizes)
                _progress(rows)
            if "scale" in only:
                rows += scale_rows(bench, sizes, upload_rate)
                _progress(rows)
            if "control" in only:
                rows += control_rows(bench, sizes)
                _progress(rows)
            if "requests" in only:
                rows += request_row(bench, sizes)
                _progress(rows)
            if "concurrency" in only:
                rows += concurrency_rows(bench, sizes, upload_rate)
            growth = bench.growth
        finally:
            bench.db.close()
            if not args.keep:
                drop_database(server_url, BENCH_DATABASE)
    mode = "--quick: timings not judged" if args.quick else f"median of {sizes.rounds} rounds for rows 1-2"
    print(f"\nscripts/bench {' '.join(argv if argv is not None else sys.argv[1:])}  "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, {mode}, "
          f"{time.perf_counter() - started:.0f} s)\n")
    print(table(rows, judge=not args.quick))
    print("\nHow an upload's cost grows with its size (one run each; the base size is the median of its rounds):\n")
    print(growth_table(growth))
    return 0


def _progress(rows: list[Row]) -> None:
    print(f"  ... {rows[-1].what}: {_number(rows[-1].measured, rows[-1].unit)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
