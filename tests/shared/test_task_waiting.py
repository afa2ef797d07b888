"""`?wait=N` is woken by the NOTIFY of the transition it waits for, not by polling the database."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg2.extensions
from dramatiq.brokers.redis import RedisBroker
from falcon import testing

from services.gateway.app import create_app
from shared import orgs
from shared import tasks as t
from shared.db import Database
from tests.conftest import auth, new_key


class CountingConnection(psycopg2.extensions.connection):
    """A connection whose every cursor counts the statements it executes (in `statements`), and whether
    each ran in autocommit mode (in `in_autocommit`)."""

    statements: list[str] = []
    in_autocommit: list[bool] = []

    def cursor(self, *args, **kwargs):
        base = kwargs.pop("cursor_factory", None) or psycopg2.extensions.cursor
        statements, modes = self.statements, self.in_autocommit

        class Counting(base):
            def execute(self, query, vars=None):
                statements.append(query if isinstance(query, str) else query.as_string(self))
                modes.append(self.connection.autocommit)
                return super().execute(query, vars)

        return super().cursor(*args, cursor_factory=Counting, **kwargs)


def counted_gateway(rt) -> tuple[Database, testing.TestClient]:
    """A gateway whose every SQL statement is counted (CountingConnection, counts cleared), its broker on a
    namespace no worker listens to; close the database when done."""
    counted = Database(rt.db.dsn, maxconn=4, connection_factory=CountingConnection)
    client = testing.TestClient(create_app(counted, RedisBroker(url=rt.settings.redis_url, namespace="quiet"),
                                           rt.settings))
    CountingConnection.statements.clear()
    CountingConnection.in_autocommit.clear()
    return counted, client


def running_task(rt, key: str) -> tuple[t.Task, uuid.UUID]:
    owner = uuid.uuid4()
    with rt.db.transaction() as cur:
        organization_id = orgs.authenticate(cur, key)[0]
        task = t.create_task(cur, organization_id=organization_id, kind="waited", queue_name="nowhere",
                             actor_name="nobody", progress_unit="steps", actor="test")
        t.claim(cur, task.id, owner, 60, "test")
    return task, owner


def test_a_wait_costs_a_handful_of_statements_and_ends_at_the_transition(rt):
    # Given a gateway whose every SQL statement is counted, and a running task no worker will stop
    key = new_key(rt)
    task, owner = running_task(rt, key)
    counted, client = counted_gateway(rt)
    answer = {}

    def pause_and_wait() -> None:
        answer["response"] = client.simulate_post(f"/api/pause/{task.id}/", params={"wait": "10"},
                                                  headers=auth(key))
        answer["at"] = time.monotonic()

    # When the pause is requested with ?wait=10 and the task stays `pausing` for 3 s before its worker confirms
    waiter = threading.Thread(target=pause_and_wait)
    waiter.start()
    time.sleep(3.5)  # off the 2 s safety poll: only the notification can answer within 100 ms
    confirming_at = time.monotonic()
    with rt.db.transaction() as cur:
        assert t.get_task(cur, task.id).state is t.TaskState.PAUSING
        t.apply(cur, t.CONFIRM_PAUSE, task.id, actor="test", lease_owner=owner, pause_timeout=60)
    confirmed_at = time.monotonic()
    waiter.join(15)
    counted.close()

    # Then the request answers the paused task within 100 ms of the commit
    assert answer["response"].status_code == 200, answer["response"].text
    assert answer["response"].json["state"] == t.TaskState.PAUSED
    assert answer["at"] > confirming_at
    assert answer["at"] - confirmed_at < 0.1, f"answered {answer['at'] - confirmed_at:.3f}s after the transition"
    # and the whole request (authentication, the pause, the 3.5 s wait) ran a handful of statements, where polling
    # every 20 ms ran about 175
    statements = CountingConnection.statements
    assert len(statements) <= 12, statements
    assert sum("LISTEN" in statement for statement in statements) == 1


def test_a_wait_that_times_out_returns_the_task_as_it_is(rt):
    # Given a running task asked to pause, that no worker confirms
    key = new_key(rt)
    task, _ = running_task(rt, key)
    with rt.db.transaction() as cur:
        t.apply(cur, t.REQUEST_PAUSE, task.id, actor="test")
    # When a request waits 1.5 s for it to leave `pausing`
    started = time.monotonic()
    waited = t.wait_for_change(rt.db, task.id, task.organization_id, t.TaskState.PAUSING, 1.5)
    # Then it answers once the time is up, with the task still pausing
    assert 1.5 <= time.monotonic() - started < 5
    assert waited.state is t.TaskState.PAUSING
