"""scripts/bench --quick, the CI smoke test of the benchmark: it runs every row of the performance table at
small sizes, against real baselines, and prints the table (its timings are not judged here)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ROWS = ("upload 100,000 rows", "export 100,000 rows", "upload 200,000 rows", "upload worker peak RSS",
        "pause -> paused", "resume -> first batch committed", "GET /api/tasks/{id}/ req/s",
        "8 organizations x 12,500 rows", "1,000-row upload of another organization")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(420)
def test_bench_quick_prints_every_row_of_the_table():
    # Given the test servers and two free ports
    env = {**os.environ, "BENCH_DATABASE": f"{os.environ['DATABASE_URL'].rsplit('/', 1)[1]}_bench"}
    # When the quick benchmark runs
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--port", str(_free_port()),
                           "--limit-port", str(_free_port())], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    # Then it prints the table: one row per line of the table, each with a measured number and its
    # baseline where there is one, and no verdict on timing
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines[0] == "| what | measured | baseline | ratio | target | pass |"
    table = lines[1:1 + len(ROWS)]
    assert len(table) == len(ROWS) and all(row.startswith(f"| {name}") for row, name in zip(table, ROWS, strict=True))
    for row in table:
        what, measured, baseline, ratio, target, verdict = row.strip("| ").split(" | ")
        assert measured[0].isdigit(), row
        assert verdict == "-", row
        if ratio != "-":
            assert float(ratio) > 0 and baseline[0].isdigit(), row
    # And how an upload's cost grows with its size
    assert "| rows | seconds | rows/s | upload worker peak RSS |" in done.stdout
