"""Pipelined batches (shared/pipeline.py): a job's next batch is written while the one before is still being
written, on a connection of its own, and still every batch commits alone, in order, with its checkpoint."""

from __future__ import annotations

import select
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from services.control.commands import TaskControl
from shared import orgs
from shared import tasks as t
from shared.batch_runner import BatchRunner
from shared.batches import Batch, pipelines
from shared.stop_requests import StopListener
from tests.conftest import new_key, wait_for

BATCHES = 8


@pytest.fixture
def written(rt):
    """A table the test jobs write their batches' rows to, one row a batch, as many times as committed."""
    with rt.db.transaction() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS pipeline_rows (task_id uuid, batch int)")
        cur.execute("CREATE TABLE IF NOT EXISTS pipeline_lock (id int PRIMARY KEY)")
        cur.execute("INSERT INTO pipeline_lock VALUES (1) ON CONFLICT DO NOTHING")
    return "pipeline_rows"


@dataclass(frozen=True)
class Planned:
    batch: int
    position: dict
    last: bool

    def conflicts_with(self, earlier: Planned) -> bool:
        return False


class CountingJob:
    """Batch n writes a row (n) and moves the checkpoint's `next` to n + 1. Hooks let a test hold a batch's
    write (`before_write`) and see which batches were being written at once."""

    streams = 2

    def __init__(self, before_write=None, before_plan=None) -> None:
        self.before_write = before_write or (lambda cur, batch: None)
        self.before_plan = before_plan or (lambda batch: None)
        self.writing: set[int] = set()
        self.overlapped: set[int] = set()
        self.lock = threading.Lock()
        self.closed = False

    def plan(self, task, checkpoint):
        batch = checkpoint["next"]
        self.before_plan(batch)
        return Planned(batch, {**checkpoint, "next": batch + 1}, batch == BATCHES - 1)

    def write(self, cur, task, planned):
        with self.lock:
            if self.writing:
                self.overlapped.update({planned.batch, *self.writing})
            self.writing.add(planned.batch)
        try:
            self.before_write(cur, planned.batch)
            cur.execute("INSERT INTO pipeline_rows VALUES (%s, %s)", (task.id, planned.batch))
            time.sleep(0.05)
        finally:
            with self.lock:
                self.writing.discard(planned.batch)
        return planned

    def settle(self, cur, task, checkpoint, planned):
        assert checkpoint["next"] == planned.batch, "settled after a checkpoint it does not follow"
        new = {"next": planned.batch + 1, "written": checkpoint["written"] + 1}
        return Batch(checkpoint=new, done=planned.batch + 1, total=BATCHES, finished=planned.last,
                     result={"written": new["written"]} if planned.last else None)

    def run_batch(self, cur, task, checkpoint):
        checkpoint = checkpoint or {"next": 0, "written": 0}
        return self.settle(cur, task, checkpoint, self.write(cur, task, self.plan(task, checkpoint)))

    def rollback(self, cur, task) -> None:
        cur.execute("DELETE FROM pipeline_rows WHERE task_id = %s", (task.id,))

    def close(self) -> None:
        self.closed = True


def new_task(rt):
    key = new_key(rt)
    with rt.db.transaction() as cur:
        organization_id = orgs.authenticate(cur, key)[0]
        return t.create_task(cur, organization_id=organization_id, kind="pipelined", queue_name="nowhere",
                             actor_name="nobody", progress_unit="batches", actor="test")


def rows_of(rt, task) -> list[int]:
    with rt.db.transaction() as cur:
        cur.execute("SELECT batch FROM pipeline_rows WHERE task_id = %s ORDER BY batch", (task.id,))
        return [row["batch"] for row in cur.fetchall()]


def start_running(rt, job, task) -> tuple[threading.Thread, dict]:
    """Run the task in a thread of its own; the dict gets the state the run left it in."""
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "state", BatchRunner(rt.db, rt.broker, rt.settings).run(job, task.id)))
    runner.start()
    return runner, outcome


def paused_at_once(rt, task, runner: threading.Thread, outcome: dict) -> bool:
    """Pause the task; whether its run then ended in `paused` within 10 s."""
    started = time.monotonic()
    TaskControl(rt.db, rt.broker, rt.settings).pause(task.organization_id, task.id, "test")
    runner.join(30)
    return not runner.is_alive() and time.monotonic() - started < 10 and outcome["state"] is t.TaskState.PAUSED


def stored(rt, task) -> t.Task:
    with rt.db.transaction() as cur:
        return t.get_task(cur, task.id)


def test_the_job_is_pipelined_only_with_more_than_one_stream():
    assert pipelines(CountingJob())
    one = CountingJob()
    one.streams = 1
    assert not pipelines(one)


def test_batches_are_written_two_at_a_time_and_each_commits_once_in_order(rt, written):
    # Given a pipelined job of 8 batches
    task = new_task(rt)
    job = CountingJob()
    # When it runs
    state = BatchRunner(rt.db, rt.broker, rt.settings).run(job, task.id)
    # Then batches were written side by side (after the first, which runs alone), and yet every batch's
    # row was committed exactly once, with a checkpoint that counts each batch once
    assert state is t.TaskState.COMPLETED
    assert job.overlapped >= {1, 2}
    assert 0 not in job.overlapped
    assert rows_of(rt, task) == list(range(BATCHES))
    done = stored(rt, task)
    assert done.result == {"written": BATCHES}
    assert done.checkpoint == {"next": BATCHES, "written": BATCHES}
    assert job.closed


def test_a_batch_whose_predecessor_rolled_back_is_rolled_back_too_and_both_are_redone(rt, written):
    # Given a pipelined job whose batch 3 meets a lock another session holds, once: its statement times out
    # (a transient error) while batch 4 has already been written beside it
    task = new_task(rt)
    holder = rt.db.connect()
    holder.cursor().execute("SELECT * FROM pipeline_lock FOR UPDATE")
    attempts = {3: 0}

    def before_write(cur, batch):
        if batch == 3:
            attempts[3] += 1
            if attempts[3] == 1:
                cur.execute("SET LOCAL lock_timeout = '300ms'")
                cur.execute("SELECT * FROM pipeline_lock FOR UPDATE")

    job = CountingJob(before_write)
    try:
        # When it runs
        state = BatchRunner(rt.db, rt.broker, rt.settings).run(job, task.id)
    finally:
        holder.close()
    # Then batch 3 was redone, batch 4 written beside it never committed on its own, and every batch is
    # stored exactly once
    assert attempts[3] == 2
    assert {3, 4} <= job.overlapped
    assert state is t.TaskState.COMPLETED
    assert rows_of(rt, task) == list(range(BATCHES))
    assert stored(rt, task).result == {"written": BATCHES}


def test_a_batch_cannot_commit_after_a_checkpoint_it_does_not_follow(rt):
    # Given a task leased to a worker, with a stored checkpoint
    task = new_task(rt)
    owner = uuid.uuid4()
    with rt.db.transaction() as cur:
        t.claim(cur, task.id, owner, 30, "test")
        t.save_progress(cur, task.id, owner, 30, checkpoint={"next": 5}, done=5)
    # When a batch planned after another checkpoint tries to store its own
    with rt.db.transaction() as cur:
        refused = t.save_progress(cur, task.id, owner, 30, checkpoint={"next": 4}, done=4, after={"next": 3})
    # Then nothing is stored; a batch that does follow the stored checkpoint is
    assert refused is None
    assert stored(rt, task).checkpoint == {"next": 5}
    with rt.db.transaction() as cur:
        accepted = t.save_progress(cur, task.id, owner, 30, checkpoint={"next": 6}, done=6, after={"next": 5})
    assert accepted is t.TaskState.RUNNING
    assert stored(rt, task).checkpoint == {"next": 6}


def test_a_pause_cancels_every_batch_in_flight(rt, worker, written):
    # Given a pipelined job whose batches after the first would take a minute each, two in flight
    task = new_task(rt)

    def before_write(cur, batch):
        if batch >= 1:
            cur.execute("SELECT pg_sleep(60)")

    job = CountingJob(before_write)
    runner, outcome = start_running(rt, job, task)
    wait_for(lambda: len(job.writing) == 2, timeout=20)
    # When it is paused, then both batches in flight are cancelled at once: paused after batch 0, nothing
    # of batches 1 and 2 stored, and no connection of the run left behind
    assert paused_at_once(rt, task, runner, outcome)
    paused = stored(rt, task)
    assert paused.checkpoint == {"next": 1, "written": 1}
    assert rows_of(rt, task) == [0]
    assert not StopListener.of(rt.broker).in_batch(str(task.id))
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%%' "
                    "AND pid <> pg_backend_pid()")
        assert cur.fetchone()["n"] == 0


def test_a_pause_while_the_next_batch_is_being_planned_is_answered_at_once(rt, worker, written):
    # Given a pipelined job whose batch 3 takes a minute to plan (an upload waiting for its parser), with
    # no batch being written meanwhile
    task = new_task(rt)
    planning = threading.Event()

    def before_plan(batch):
        if batch == 3:
            planning.set()
            for _ in range(1200):
                time.sleep(0.05)

    job = CountingJob(before_plan=before_plan)
    runner, outcome = start_running(rt, job, task)
    assert planning.wait(20)
    wait_for(lambda: not job.writing, timeout=20)
    # When it is paused, then the planning is interrupted: the task pauses at once, at the last batch
    # committed
    assert paused_at_once(rt, task, runner, outcome)
    assert rows_of(rt, task) == [0, 1, 2]
    assert stored(rt, task).checkpoint == {"next": 3, "written": 3}


def test_a_lane_whose_connection_is_killed_is_redone_on_a_new_one(rt, written):
    # Given a pipelined job whose batch 2's backend is terminated in the middle of its write, once
    task = new_task(rt)
    killed = []

    def before_write(cur, batch):
        if batch == 2 and not killed:
            killed.append(cur.connection.get_backend_pid())
            with rt.db.transaction() as other:
                other.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
            cur.execute("SELECT 1")

    job = CountingJob(before_write)
    # When it runs
    state = BatchRunner(rt.db, rt.broker, rt.settings).run(job, task.id)
    # Then the batch (and any written beside it) is redone from the checkpoint and the task completes exact
    assert killed
    assert state is t.TaskState.COMPLETED
    assert rows_of(rt, task) == list(range(BATCHES))
    assert stored(rt, task).result == {"written": BATCHES}


def test_lane_connections_are_kept_for_the_next_run_and_a_dead_one_is_replaced(rt, written):
    # Given a run whose lanes opened connections of their own
    opened = []
    job = CountingJob(lambda cur, batch: opened.append(cur.connection))
    BatchRunner(rt.db, rt.broker, rt.settings).run(job, new_task(rt).id)
    first_lanes = {conn for conn in opened[1:] if conn is not opened[0]}
    assert first_lanes and not any(conn.closed for conn in first_lanes)
    # When another task runs, one of the kept connections having lost its backend in between
    dead = next(iter(first_lanes))
    with rt.db.transaction() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (dead.get_backend_pid(),))
    wait_for(lambda: _readable(dead))  # its backend's farewell has arrived
    opened.clear()
    BatchRunner(rt.db, rt.broker, rt.settings).run(CountingJob(lambda cur, batch: opened.append(cur.connection)),
                                                   new_task(rt).id)
    second_lanes = {conn for conn in opened[1:] if conn is not opened[0]}
    # Then its lanes wrote on the live kept connections, not the dead one, which was closed
    assert second_lanes & (first_lanes - {dead}) and dead not in second_lanes and dead.closed
    # And closing the database closes every kept connection
    rt.db.close()
    assert all(conn.closed for conn in first_lanes | second_lanes)


def _readable(conn) -> bool:
    return bool(select.select([conn], [], [], 0)[0])
