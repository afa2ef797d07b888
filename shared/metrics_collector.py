"""What the gateway's /metrics reads from the shared state at each scrape (docs/metrics.md lists it):
tasks by kind and state, throughput and pause-timeout totals from PostgreSQL, queue depth and the oldest
message's age from Redis. What the workers count as they go is in shared.metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from shared.health import oldest_message_age, redis_client
from shared.services import SERVICES
from shared.task_states import STOPPING_STATES, TaskState, names

logger = logging.getLogger(__name__)

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
    WHERE t.state = ANY(%(stopping)s)
    GROUP BY t.kind, t.state
"""
# A scrape must not hang on a locked or overloaded database: it reports the source as down instead.
SCRAPE_TIMEOUT_SECONDS = 5


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
        with self.db.transaction() as cur:
            cur.execute("SET LOCAL statement_timeout = %s", (SCRAPE_TIMEOUT_SECONDS * 1000,))
            cur.execute(_TASKS_BY_KIND_AND_STATE)
            by_kind_state = cur.fetchall()
            cur.execute(_THROUGHPUT)
            throughput = cur.fetchall()
            cur.execute(_OLDEST_STOPPING, {"stopping": names(STOPPING_STATES)})
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
            for queue in (service.queue for service in SERVICES):
                depth.add_metric([queue], client.llen(f"{self.namespace}:{queue}"))
                age.add_metric([queue], oldest_message_age(client, queue, self.namespace) or 0)
        finally:
            client.close()
        return [depth, age]
