"""A stop request cancels the batch in flight (through the Redis channel the StopListener listens on)
instead of waiting for the batch to end."""

from __future__ import annotations

import threading
import time

from services.control.commands import TaskControl
from shared import tasks as t
from shared.batch_runner import BatchRunner
from shared.batches import Batch
from shared.stop_requests import StopListener
from tests.conftest import new_key, wait_for


class SlowJob:
    """A job whose every batch would take a minute, waiting on PostgreSQL (or in Python)."""

    def __init__(self, in_python: bool = False) -> None:
        self.in_python = in_python
        self.rolled_back = False
        self.closed = False

    def run_batch(self, cur, task, checkpoint):
        if self.in_python:
            for _ in range(600):
                time.sleep(0.1)
        else:
            cur.execute("SELECT pg_sleep(60)")
        return Batch(checkpoint={"n": 1}, done=1, total=2)

    def rollback(self, cur, task) -> None:
        self.rolled_back = True

    def close(self) -> None:
        self.closed = True


def start_slow_task(rt, in_python: bool = False):
    from shared import orgs

    key = new_key(rt)
    with rt.db.transaction() as cur:
        organization_id = orgs.authenticate(cur, key)[0]
        task = t.create_task(cur, organization_id=organization_id, kind="slow", queue_name="nowhere",
                             actor_name="nobody", progress_unit="steps", actor="test")
    job = SlowJob(in_python)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "state", BatchRunner(rt.db, rt.broker, rt.settings).run(job, task.id)))
    runner.start()
    middleware = StopListener.of(rt.broker)
    wait_for(lambda: middleware.in_batch(str(task.id)), timeout=10)
    return task, job, runner, outcome


def test_pause_cancels_the_batch_in_flight(rt, worker):
    # Given a task in the middle of a batch that would take a minute
    task, job, runner, outcome = start_slow_task(rt)
    started = time.monotonic()
    # When it is paused
    TaskControl(rt.db, rt.broker, rt.settings).pause(task.organization_id, task.id, "test")
    runner.join(30)
    # Then the run ends long before the batch would have: paused at the last checkpoint, worker released
    assert not runner.is_alive()
    assert time.monotonic() - started < 30
    assert outcome["state"] is t.TaskState.PAUSED
    with rt.db.transaction() as cur:
        paused = t.get_task(cur, task.id)
    assert paused.state is t.TaskState.PAUSED
    assert paused.checkpoint is None, "the cancelled batch must not have been committed"
    assert paused.lease_owner is None
    assert job.closed


def test_pause_interrupts_python_work_in_the_batch(rt, worker):
    task, job, runner, outcome = start_slow_task(rt, in_python=True)
    TaskControl(rt.db, rt.broker, rt.settings).pause(task.organization_id, task.id, "test")
    runner.join(30)
    assert not runner.is_alive()
    assert outcome["state"] is t.TaskState.PAUSED


def test_revoke_cancels_the_batch_in_flight_and_rolls_back(rt, worker):
    task, job, runner, outcome = start_slow_task(rt)
    TaskControl(rt.db, rt.broker, rt.settings).revoke(task.organization_id, task.id, "test")
    runner.join(30)
    assert not runner.is_alive()
    assert outcome["state"] is t.TaskState.REVOKED
    assert job.rolled_back


def test_interrupt_of_a_task_not_in_a_batch_does_nothing(rt):
    assert StopListener.of(rt.broker).interrupt("00000000-0000-0000-0000-000000000000") is False
