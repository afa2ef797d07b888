"""A worker's claim is a transition like every other: START (queued -> running) or TAKE_OVER (a task whose
holder's lease expired, in the state it was left), through `apply`, logged and announced."""

from __future__ import annotations

import time
import uuid

from shared import orgs
from shared import tasks as t
from tests.conftest import new_key


def queued_task(rt) -> t.Task:
    with rt.db.transaction() as cur:
        organization_id = orgs.authenticate(cur, new_key(rt))[0]
        return t.create_task(cur, organization_id=organization_id, kind="claimed", queue_name="nowhere",
                             actor_name="nobody", progress_unit="steps", actor="test")


def test_claims_are_transitions_of_the_table():
    assert (t.START.allowed_from, t.START.to) == ((t.TaskState.QUEUED,), t.TaskState.RUNNING)
    assert t.TAKE_OVER.allowed_from == t.LEASED_STATES and t.TAKE_OVER.to is None


def test_a_live_holder_keeps_the_task_and_an_expired_one_loses_it(rt):
    # Given a queued task claimed by a first worker for 1 s
    task = queued_task(rt)
    first, second = uuid.uuid4(), uuid.uuid4()
    with rt.db.transaction() as cur:
        started = t.claim(cur, task.id, first, 1, "worker:first")
        # Then no other worker can take it while the lease runs
        assert t.claim(cur, task.id, second, 30, "worker:second") is None
    assert started.state is t.TaskState.RUNNING and started.lease_owner == first
    # When the lease has expired (the first worker died)
    time.sleep(1.2)
    with rt.db.transaction() as cur:
        taken = t.claim(cur, task.id, second, 30, "worker:second")
        events = t.task_events(cur, task.id)
    # Then the second worker takes it over in the state it was left, and both claims are in the event log
    assert taken.state is t.TaskState.RUNNING and taken.lease_owner == second
    assert [(e["from_state"], e["to_state"], e["reason"]) for e in events] == [
        (None, "queued", "created"),
        ("queued", "running", "worker started"),
        ("running", "running", "previous worker's lease expired"),
    ]


def test_a_finished_or_unknown_task_is_not_claimed(rt):
    task = queued_task(rt)
    with rt.db.transaction() as cur:
        t.apply(cur, t.REVOKE_UNSTARTED, task.id, actor="test", reason="user")
        assert t.claim(cur, task.id, uuid.uuid4(), 30, "worker") is None
        assert t.claim(cur, uuid.uuid4(), uuid.uuid4(), 30, "worker") is None
