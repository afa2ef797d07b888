"""Task metrics for Prometheus (docs/metrics.md lists them).

Each number is taken where its truth lives:

* Observations that one process makes — a batch's duration, a pause's latency, a state transition it
  applied — are prometheus_client instruments in that process. Its exporter (the gateway's /metrics, a
  worker's Dramatiq exporter) serves them, prometheus_client's multiprocess mode adds up the processes
  behind one exporter on a machine, and Prometheus adds up the exporters of every machine.
* Totals and levels — tasks by state, rows and bytes processed, pause-timeout revocations, queue depth
  and age — live in PostgreSQL and Redis, which every machine shares. The gateway reads them at scrape
  time (shared.metrics_collector.TaskCollector), so they are global and exact whichever worker did the
  work: every gateway replica reports the same value (aggregate them with `max`, not `sum`).

prometheus_client is imported inside the functions: a Dramatiq worker imports this module before its
Prometheus middleware sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client chooses where it keeps values
(in memory or in that directory) when it is first imported.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from shared.task_states import TaskState

# A batch is sized to take seconds (UPLOAD_BATCH_ROWS / EXPORT_BATCH_ROWS); the tail shows a slow database.
BATCH_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# A pause is answered in about 0.1 s (fast stop) or at the next batch boundary; minutes mean a lost worker.
PAUSE_SECONDS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# The creation of a task is a transition from no state.
NO_STATE = "none"

# Adds one batch's counts to its kind's totals, in the batch's transaction (see 0003_task_metrics.sql).
_ADD_THROUGHPUT = """
    INSERT INTO task_throughput AS t (kind, rows, bytes, batches) VALUES (%(kind)s, %(rows)s, %(bytes)s, 1)
    ON CONFLICT (kind) DO UPDATE
    SET rows = t.rows + EXCLUDED.rows, bytes = t.bytes + EXCLUDED.bytes, batches = t.batches + 1
"""
# The pause being confirmed was requested by the task's latest move to `pausing`. Both ends are read from
# the database's clock, so the latency is right whichever machines requested and confirmed it.
_PAUSE_LATENCY = """
    SELECT extract(epoch FROM clock_timestamp() - max(at)) AS seconds
    FROM task_events WHERE task_id = %(id)s AND to_state = %(to_state)s
"""


@dataclass(frozen=True)
class _Instruments:
    transitions: Any
    batch_seconds: Any
    pause_latency: Any


_instruments: _Instruments | None = None
_instruments_lock = threading.Lock()


def _get_instruments() -> _Instruments:
    """This process's instruments, created on first use (after the worker's Prometheus middleware booted),
    once: prometheus_client refuses a second metric of the same name."""
    global _instruments
    if _instruments is None:
        with _instruments_lock:
            if _instruments is None:
                from prometheus_client import Counter, Histogram

                _instruments = _Instruments(
                    transitions=Counter("collect_task_transitions", "Task state transitions applied by this "
                                        "process (creation counts from 'none').", ["from_state", "to_state"]),
                    batch_seconds=Histogram("collect_task_batch_duration_seconds", "Time a batch took, from "
                                            "its start to its checkpoint.", ["kind"],
                                            buckets=BATCH_SECONDS_BUCKETS),
                    pause_latency=Histogram("collect_task_pause_latency_seconds", "From the pause request of a "
                                            "running task to its confirmed `paused` state.", ["kind"],
                                            buckets=PAUSE_SECONDS_BUCKETS),
                )
    return _instruments


def count_transition(from_state: str | None, to_state: str) -> None:
    """Count one state transition made by this process (labels are states only: bounded)."""
    _get_instruments().transitions.labels(str(from_state or NO_STATE), str(to_state)).inc()


def record_batch(cur, kind: str, rows: int, bytes_: int, seconds: float) -> None:
    """Count a batch's rows and bytes in its own transaction (`cur`: counted only if it commits) and
    observe how long it took."""
    cur.execute(_ADD_THROUGHPUT, {"kind": kind, "rows": rows, "bytes": bytes_})
    _get_instruments().batch_seconds.labels(kind).observe(seconds)


def record_pause(cur, kind: str, task_id: uuid.UUID) -> None:
    """Observe the latency of the pause being confirmed in `cur`'s transaction."""
    cur.execute(_PAUSE_LATENCY, {"id": task_id, "to_state": str(TaskState.PAUSING)})
    row = cur.fetchone()
    if row and row["seconds"] is not None:
        _get_instruments().pause_latency.labels(kind).observe(max(0.0, float(row["seconds"])))


def prepare_multiprocess_dir() -> str:
    """Make PROMETHEUS_MULTIPROC_DIR name an empty directory for the processes about to start (call it
    before they start or fork, and before prometheus_client is imported): the one the environment names
    (`collect up` makes a fresh one per run), or else a new temporary one, removed when this process
    exits. Returns it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="collect-metrics-")
        atexit.register(_remove_directory, directory, os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    # Files of an earlier run would add its counts to this one's. Only prometheus_client's own files go:
    # the directory may be the operator's.
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)
    return directory


def _remove_directory(directory: str, owner_pid: int) -> None:
    # Forked children (gunicorn's workers) inherit the exit handler: only the process that made it removes it.
    if os.getpid() == owner_pid:
        shutil.rmtree(directory, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """Forget the live gauges of a process that exited (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
