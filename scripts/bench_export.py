"""Benchmark the export against PostgreSQL's own COPY.

Loads N responses (default 1,000,000) into a dedicated database (collect_bench_export, dropped and
recreated on the server DATABASE_URL names; never the database DATABASE_URL itself), exports a range
covering most of them end to end through the real actor and batch runner, then times
`psql -c "\\copy (the same SELECT over the same range) TO file"`, and prints both rates and their ratio.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \\
        scripts/bench_export [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.db import drop_database, recreate_database  # noqa: E402

BENCH_DATABASE = "collect_bench_export"
FROM_DATE, TO_DATE = "2024-01-15", "2024-12-15"
FORMS = {
    "household-survey": ["village", "household_size", "water_source", "notes"],
    "clinic-visit": ["patient_age", "symptoms", "temperature_c", "notes"],
    "crop-yield": ["district", "crop", "yield_kg", "notes"],
}
# Three forms, submitted over 2024, with text a real export meets: non-ASCII, commas, quotes, newlines,
# formula-like cells and negative numbers.
LOAD_RESPONSES = """
INSERT INTO responses (organization_id, response_id, form_id, submitted_at, answers)
SELECT %(org)s, gen_random_uuid(), form, timestamptz '2024-01-01' + random() * interval '366 days',
       CASE form
         WHEN 'household-survey' THEN jsonb_build_object(
           'village', (ARRAY['Kibera', 'São Paulo', 'Łódź', 'Dharavi'])[1 + mod(g, 4)],
           'household_size', (1 + mod(g, 9))::text,
           'water_source', (ARRAY['well', 'river', 'tap'])[1 + mod(g, 3)],
           'notes', note)
         WHEN 'clinic-visit' THEN jsonb_build_object(
           'patient_age', mod(g, 90)::text,
           'symptoms', (ARRAY['fever', 'cough', 'fever, cough'])[1 + mod(g, 3)],
           'temperature_c', round(35.5 + mod(g, 50) / 10.0, 1)::text, 'notes', note)
         ELSE jsonb_build_object(
           'district', (ARRAY['North', 'South', 'East', 'West'])[1 + mod(g, 4)],
           'crop', (ARRAY['maize', 'rice', 'cassava'])[1 + mod(g, 3)], 'yield_kg', (-5 + mod(g, 5000))::text,
           'notes', note)
       END
FROM (
  SELECT g, (ARRAY['household-survey', 'clinic-visit', 'crop-yield'])[1 + mod(g, 3)] AS form,
         (ARRAY['ok', 'needs follow-up', 'Zoë''s farm, near the river', 'said "yes"', E'multi\\nline note',
                'नमस्ते', '你好', '=1+1 looks like a formula', '-3.5'])[1 + mod(g, 9)] AS note
  FROM generate_series(1, %(rows)s) AS g
) AS generated
"""


def load(database_url: str, rows: int) -> uuid.UUID:
    from shared.migrate import migrate

    migrate(database_url)
    organization_id = uuid.uuid4()
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO organizations (id, name) VALUES (%s, 'bench')", (str(organization_id),))
        for form_id, questions in FORMS.items():
            cur.execute("INSERT INTO forms (organization_id, form_id, questions) VALUES (%s, %s, %s)",
                        (str(organization_id), form_id, questions))
        cur.execute(LOAD_RESPONSES, {"org": str(organization_id), "rows": rows})
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE responses")
    conn.close()
    return organization_id


def run_export(organization_id: uuid.UUID):
    """Create the export task as the API does and run it through the real actor; returns (task, seconds)."""
    from services import export
    from services.export.actors import run_export as actor
    from services.export.params import parse_export_query
    from shared import tasks as t
    from shared.runtime import runtime

    rt = runtime()
    wanted = parse_export_query({"from_date": FROM_DATE, "to_date": TO_DATE})
    started = time.perf_counter()
    with rt.db.transaction() as cur:
        task = t.create_task(cur, organization_id=organization_id, kind=export.KIND, queue_name=export.QUEUE,
                             actor_name=export.ACTOR, progress_unit="rows", actor="bench",
                             params=wanted.to_params())
    actor(str(task.id))
    seconds = time.perf_counter() - started
    with rt.db.transaction() as cur:
        return t.get_task(cur, task.id), seconds


def time_psql_copy(database_url: str, task, out: Path) -> float:
    """Time psql's \\copy of the export's own SELECT over the whole range, in one statement."""
    from services.export.exporter import bind, page_select
    from shared.runtime import runtime

    columns = task.checkpoint["columns"]
    params = {
        "org": task.organization_id, "from": task.params["submitted_from"], "to": task.params["submitted_to"],
        "form": None, "after_at": None, "after_id": None,
        "last_at": task.params["submitted_to"], "last_id": "ffffffff-ffff-ffff-ffff-ffffffffffff",
        **{f"q{i}": name for i, name in enumerate(columns)},
    }
    with runtime().db.transaction() as cur:
        select = " ".join(bind(cur, page_select(columns), params).split())  # \copy takes one line
    started = time.perf_counter()
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", database_url,
                    "-c", f"\\copy ({select}) TO '{out}' WITH (FORMAT csv)"], check=True)
    return time.perf_counter() - started


def drop_export_file(task) -> None:
    from shared import storage
    from shared.runtime import runtime

    with runtime().db.transaction() as cur:
        storage.delete_task_files(cur, task.id)


def main() -> int:
    from shared.runtime import runtime

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="export and copy this many times each")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DATABASE} database afterwards")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url = recreate_database(server_url, BENCH_DATABASE)
    os.environ["DATABASE_URL"] = database_url  # the runtime (and its actor) use the benchmark database only

    started = time.perf_counter()
    organization_id = load(database_url, args.rows)
    print(f"loaded {args.rows:,} responses into {BENCH_DATABASE} in {time.perf_counter() - started:.1f}s")

    # The two alternate, back to back, so that each round's pair meets about the same load from whatever
    # else the machine runs; the ratio reported is the median of the rounds' ratios.
    export_times, copy_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "copy.csv"
        for round_number in range(1, args.rounds + 1):
            task, seconds = run_export(organization_id)
            assert task.state == "completed", task.error
            export_times.append(seconds)
            copy_times.append(time_psql_copy(database_url, task, out))
            copy_size = out.stat().st_size
            drop_export_file(task)
            print(f"round {round_number}: export {export_times[-1]:.2f}s, psql \\copy {copy_times[-1]:.2f}s, "
                  f"ratio {copy_times[-1] / export_times[-1]:.0%}")
    export_seconds, copy_seconds = statistics.median(export_times), statistics.median(copy_times)
    rows, size = task.result["rows"], task.result["bytes"]
    # Both write the same rows (the export adds its header row), so rows per second compare directly.
    export_rate, copy_rate = rows / export_seconds, rows / copy_seconds
    batch_rows = runtime().settings.export_batch_rows
    print(f"range {FROM_DATE}..{TO_DATE}: {rows:,} rows")
    print(f"export (actor + batch runner, {batch_rows} rows a batch): {export_seconds:.2f}s, "
          f"{export_rate:,.0f} rows/s, {size / export_seconds / 1e6:.1f} MB/s ({size:,} bytes)")
    print(f"psql \\copy of the same SELECT: {copy_seconds:.2f}s, {copy_rate:,.0f} rows/s, "
          f"{copy_size / copy_seconds / 1e6:.1f} MB/s ({copy_size:,} bytes)")
    ratio = statistics.median(c / e for c, e in zip(copy_times, export_times, strict=True))
    print(f"export / raw COPY rate: {ratio:.0%} (median of {args.rounds} rounds; rates above are medians)")
    if not args.keep:
        runtime().db.close()
        drop_database(server_url, BENCH_DATABASE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
