"""How PostgreSQL's own rate changes with the file's size on this machine: `psql \\copy` of the bench's sample
CSV into the upload baseline's flat table (the same table, file and command as scripts/bench's upload
baseline, a fresh table each time), at each size, alternating sizes for --rounds rounds. Prints rows/s per
size and each size's rate against the first size's: the ratio the "5M rows / 1M rows" row of scripts/bench
asks of an upload, asked of PostgreSQL alone.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python scripts/bench_baseline_scale.py [--rows 1000000 5000000]
        [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import baseline_copy_in  # noqa: E402
from bench_stack import BENCH_DATABASE, Bench  # noqa: E402
from benchlib import server_urls  # noqa: E402

from shared.db import drop_database  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server_url, redis_url = server_urls()
    rates: dict[int, list[float]] = {rows: [] for rows in args.rows}
    with tempfile.TemporaryDirectory(prefix="collect-bench-") as scratch:
        bench = Bench(server_url, redis_url, (0, 0), Path(scratch))
        try:
            for _ in range(args.rounds):
                for rows in args.rows:
                    path = bench.csv_file(rows)
                    bench.sql("CHECKPOINT")  # each load starts without the one before's dirty pages
                    rates[rows].append(rows / baseline_copy_in(bench, path))
                    print(f"  ... {rows:,} rows: {rates[rows][-1]:,.0f} rows/s", file=sys.stderr, flush=True)
        finally:
            bench.db.close()
            drop_database(server_url, BENCH_DATABASE)
    base = statistics.median(rates[args.rows[0]])
    print(f"| rows | psql \\copy rows/s (median of {args.rounds}) | / {args.rows[0]:,} rows |")
    print("|---|---|---|")
    for rows, measured in rates.items():
        rate = statistics.median(measured)
        print(f"| {rows:,} | {rate:,.0f} | {rate / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
