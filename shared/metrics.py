"""Task metrics for Prometheus (docs/metrics.md lists them).

Each number is taken where its truth lives:

* Observations that one process makes — a batch's duration, a pause's latency, a state transition it
  applied — are prometheus_client instruments in that process. Its exporter (the gateway's /metrics, a
  worker's Dramatiq exporter) serves them, prometheus_client's multiprocess mode adds up the processes
  behind one exporter on a machine, and Prometheus adds up the exporters of every machine.
* Totals and levels — tasks by state, rows and bytes processed, pause-timeout revocations, queue depth
  and age — live in PostgreSQL and Redis, which every machine shares. The gateway reads them at scrape
  time (TaskCollector), so they are global and exact whichever worker did the work: every gateway
  replica reports the same value (aggregate them with `max`, not `sum`).

prometheus_client is imported inside the functions: a Dramatiq worker imports this module before its
Prometheus middleware sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client chooses where it keeps values
(in memory or in that directory) when it is first imported.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared.health import SERVICES, oldest_message_age, redis_client

logger = logging.getLogger(__name__)

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
    FROM task_events WHERE task_id = %s AND to_state = 'pausing'
"""
# One index-only scan (tasks_kind_state) per scrape.
_TASKS_BY_KIND_AND_STATE = """
    SELECT kind, state, count(*) AS tasks,
           count(*) FILTER (WHERE revoke_reason = 'pause_timeout') AS pause_timeouts
    FROM tasks GROUP BY kind, state
"""
_THROUGHPUT = "SELECT kind, rows, bytes, batches FROM task_throughput"
# A pause or revoke is answered within a batch: a task that stays `pausing` or `revoking` for minutes is
# stuck. Few tasks are in these states (index tasks_active), each with its latest event into it.
_OLDEST_STOPPING = """
    SELECT t.kind, t.state, extract(epoch FROM clock_timestamp() - min(e.at)) AS seconds
    FROM tasks t CROSS JOIN LATERAL (
        SELECT max(at) AS at FROM task_events WHERE task_id = t.id AND to_state = t.state
    ) e
    WHERE t.state IN ('pausing', 'revoking')
    GROUP BY t.kind, t.state
"""
STOPPING_STATES = ("pausing", "revoking")
# A scrape must not hang on a locked or overloaded database: it reports the source as down instead.
SCRAPE_TIMEOUT_SECONDS = 5


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
    cur.execute(_PAUSE_LATENCY, (task_id,))
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


class TaskCollector:
    """A prometheus_client collector that reads the shared state at each scrape: tasks by kind and state,
    throughput and pause-timeout totals (PostgreSQL), queue depth and oldest message age (Redis).

    A source that cannot be read is reported as `collect_metrics_source_up{source} 0` and its metrics are
    left out: a scrape never fails because of it."""

    def __init__(self, db, redis_url: str, namespace: str = "dramatiq") -> None:
        self.db = db
        self.redis_url = redis_url
        self.namespace = namespace

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("collect_metrics_source_up", "Whether this scrape could read the source.",
                               labels=["source"])
        try:
            yield from self._database_metrics(CounterMetricFamily, GaugeMetricFamily)
            up.add_metric(["postgresql"], 1)
        except Exception:  # any failure: the scrape goes on without these numbers
            logger.warning("metrics: cannot read PostgreSQL", exc_info=True)
            up.add_metric(["postgresql"], 0)
        try:
            yield from self._queue_metrics(GaugeMetricFamily)
            up.add_metric(["redis"], 1)
        except Exception:
            logger.warning("metrics: cannot read Redis", exc_info=True)
            up.add_metric(["redis"], 0)
        yield up

    def _database_metrics(self, counter, gauge) -> list[Any]:
        from shared.tasks import TaskState  # shared.tasks counts its transitions here: imported when used

        with self.db.transaction() as cur:
            cur.execute("SET LOCAL statement_timeout = %s", (SCRAPE_TIMEOUT_SECONDS * 1000,))
            cur.execute(_TASKS_BY_KIND_AND_STATE)
            by_kind_state = cur.fetchall()
            cur.execute(_THROUGHPUT)
            throughput = cur.fetchall()
            cur.execute(_OLDEST_STOPPING)
            stopping = {(row["kind"], row["state"]): row["seconds"] for row in cur.fetchall()}
        tasks = gauge("collect_tasks", "Tasks by kind and state, now.", labels=["kind", "state"])
        timeouts = counter("collect_task_pause_timeout_revocations", "Tasks revoked because they stayed "
                           "paused past PAUSE_TIMEOUT_SECONDS.", labels=["kind"])
        counts: dict[str, dict[str, int]] = {}
        pause_timeouts: dict[str, int] = {}
        for row in by_kind_state:
            counts.setdefault(row["kind"], {})[row["state"]] = row["tasks"]
            pause_timeouts[row["kind"]] = pause_timeouts.get(row["kind"], 0) + row["pause_timeouts"]
        oldest = gauge("collect_task_oldest_in_state_seconds", "How long the task that has been `pausing` "
                       "(or `revoking`) the longest has been so (0 when none is).", labels=["kind", "state"])
        for kind, states in sorted(counts.items()):
            # Every state, zeros included: a gauge that vanishes cannot be told from one that was not scraped.
            for state in TaskState:
                tasks.add_metric([kind, state.value], states.get(state.value, 0))
            timeouts.add_metric([kind], pause_timeouts[kind])
            for state in STOPPING_STATES:
                oldest.add_metric([kind, state], float(stopping.get((kind, state)) or 0))
        rows = counter("collect_task_rows_processed", "Rows the task batches read (upload) or wrote "
                       "(export), counted when the batch commits.", labels=["kind"])
        size = counter("collect_task_bytes_processed", "CSV bytes of the rows the task batches read (upload) "
                       "or wrote (export), header excluded, counted when the batch commits.", labels=["kind"])
        batches = counter("collect_task_batches", "Task batches committed.", labels=["kind"])
        for row in throughput:
            rows.add_metric([row["kind"]], row["rows"])
            size.add_metric([row["kind"]], row["bytes"])
            batches.add_metric([row["kind"]], row["batches"])
        return [tasks, oldest, timeouts, rows, size, batches]

    def _queue_metrics(self, gauge) -> list[Any]:
        depth = gauge("collect_queue_depth", "Messages waiting in the queue.", labels=["queue"])
        age = gauge("collect_queue_oldest_message_age_seconds", "How long the oldest waiting message has "
                    "waited (0 when the queue is empty).", labels=["queue"])
        client = redis_client(self.redis_url, SCRAPE_TIMEOUT_SECONDS)
        try:
            for queue in SERVICES:
                depth.add_metric([queue], client.llen(f"{self.namespace}:{queue}"))
                age.add_metric([queue], oldest_message_age(client, queue, self.namespace) or 0)
        finally:
            client.close()
        return [depth, age]
