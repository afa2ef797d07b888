"""The worker's stale-message check and the sweep survive a pool full of connections the server has closed
(a restart, an idle-connection reaper): each dead connection fails once, is discarded, and the work is
done on a live one."""

from __future__ import annotations

import uuid

import dramatiq
import psycopg2
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import SkipMessage

from services.control.commands import TaskControl
from shared.control_middleware import ControlMiddleware
from shared.db import Database
from shared.transient import describe, is_transient, with_retries

POOL = 4


def pool_of_dead_connections(rt) -> Database:
    """A pool holding POOL idle connections whose backends have been terminated."""
    db = Database(rt.settings.database_url, maxconn=POOL)
    pool = db._get_pool()
    connections = [pool.getconn() for _ in range(POOL)]
    pids = [conn.get_backend_pid() for conn in connections]
    for conn in connections:
        pool.putconn(conn)
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) AS n FROM unnest(%s::int[]) AS pid", (pids,))
        assert cur.fetchone()["n"] == POOL
    return db


def test_a_pool_of_dead_connections_fails_a_plain_transaction_and_the_real_cause_is_named(rt):
    # (the fault is real: without retries, the first use of the pool fails)
    db = pool_of_dead_connections(rt)
    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)) as failure:
        with db.transaction() as cur:
            cur.execute("SELECT 1")
    # Rolling back on the dead connection raises "connection already closed"; the cause named is the real one
    assert is_transient(failure.value)
    assert "already closed" not in describe(failure.value)
    assert describe(failure.value).startswith(("OperationalError", "AdminShutdown")), describe(failure.value)
    db.close()


def test_the_sweep_survives_dead_pooled_connections(rt):
    db = pool_of_dead_connections(rt)
    control = TaskControl(db, RedisBroker(url=rt.settings.redis_url, namespace="stale"), rt.settings)
    summary = with_retries(control.sweep, attempts=db.maxconn + 1)
    assert set(summary) == {"pauses_expired", "failures_expired", "tasks_recovered"}
    db.close()


def test_the_stale_message_check_survives_dead_pooled_connections(rt):
    db = pool_of_dead_connections(rt)
    broker = RedisBroker(url=rt.settings.redis_url, namespace="stale")
    middleware = ControlMiddleware(db)
    broker.add_middleware(middleware)

    @dramatiq.actor(broker=broker, queue_name="stale", actor_name="stale_task", controls_task=True)
    def stale_task(task_id: str) -> None:
        """Never runs: only its message is checked."""

    message = dramatiq.Message(queue_name="stale", actor_name="stale_task", args=(str(uuid.uuid4()),), kwargs={},
                               options={})
    # The check reaches the database and answers (an unknown task's message is skipped), instead of failing
    with pytest.raises(SkipMessage, match="does not exist"):
        middleware.before_process_message(broker, message)
    db.close()
