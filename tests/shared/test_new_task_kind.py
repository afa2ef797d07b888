"""A task kind defined here, through the documented extension point only (docs/adding-a-task-kind.md): a
TaskKind registered once, a BatchJob, and its actor declared with `task_actor`. It has no control code of
its own, and gets pause, resume from the checkpoint, revoke with its own rollback, the pause timeout and
crash recovery."""

from __future__ import annotations

import dataclasses
import time
import uuid

import dramatiq
import pytest

from services.control.commands import TaskControl
from shared import orgs
from shared import tasks as t
from shared.batches import Batch
from shared.broker import create_broker
from shared.kinds import TaskKind, register, task_actor
from shared.runtime import Runtime, worker_middleware
from shared.wake import wake_task
from tests.conftest import new_key, wait_for

# The whole of the kind's registration.
TALLY = register(TaskKind("tally", queue="tally", actor_name="run_tally", progress_unit="marks"))

MARKS_PER_BATCH = 3
# Where each batch started, per task: a resumed task starts at its checkpoint.
batch_starts: dict[str, list[int]] = {}
rolled_back: set[str] = set()


class TallyJob:
    """Writes the marks 0..count-1 of the task, a few per batch; a mark written twice would break the key."""

    def run_batch(self, cur, task: t.Task, checkpoint):
        start, count = (checkpoint or {}).get("next", 0), task.params["count"]
        batch_starts.setdefault(str(task.id), []).append(start)
        end = min(start + MARKS_PER_BATCH, count)
        cur.execute("SELECT pg_sleep(%s)", (task.params["pace"],))
        cur.execute("INSERT INTO tally_marks SELECT %s, n FROM generate_series(%s, %s) n", (task.id, start, end - 1))
        return Batch(checkpoint={"next": end}, done=end, total=count, finished=end >= count,
                     result={"marks": end})

    def rollback(self, cur, task: t.Task) -> None:
        cur.execute("DELETE FROM tally_marks WHERE task_id = %s", (task.id,))
        rolled_back.add(str(task.id))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def tally(rt):
    """The kind's worker, on a broker of its own (so that no other test's worker or sweep sees it)."""
    with rt.db.transaction() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS tally_marks (task_id uuid, n int, PRIMARY KEY (task_id, n))")
    settings = dataclasses.replace(rt.settings, pause_timeout_seconds=2)
    broker = create_broker(rt.settings.redis_url, f"tally-{uuid.uuid4().hex[:8]}")
    for middleware in worker_middleware(rt.db, settings):
        broker.add_middleware(middleware)
    runtime = Runtime(settings=settings, db=rt.db, broker=broker)
    task_actor(TALLY, TallyJob, runtime)
    worker = dramatiq.Worker(broker, queues={TALLY.queue}, worker_threads=2)
    worker.start()
    yield runtime, TaskControl(rt.db, broker, settings)
    worker.stop()
    broker.client.delete(*broker.client.keys(f"{broker.namespace}:*") or ["none"])


def start(rt, runtime, count: int = 30, pace: float = 0.15) -> t.Task:
    with rt.db.transaction() as cur:
        organization_id = orgs.authenticate(cur, new_key(rt))[0]
        task = TALLY.create(cur, organization_id=organization_id, params={"count": count, "pace": pace},
                            actor="test")
    wake_task(rt.db, runtime.broker, task)
    return task


def current(rt, task: t.Task) -> t.Task:
    with rt.db.transaction() as cur:
        return t.get_task(cur, task.id)


def marks(rt, task: t.Task) -> int:
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tally_marks WHERE task_id = %s", (task.id,))
        return cur.fetchone()["n"]


def wait_for_progress(rt, task: t.Task) -> None:
    wait_for(lambda: current(rt, task).progress_done > 0, timeout=20)


def wait_for_state(rt, task: t.Task, state: t.TaskState) -> t.Task:
    wait_for(lambda: current(rt, task).state is state, timeout=30)
    return current(rt, task)


def test_the_kind_pauses_and_resumes_from_its_checkpoint(rt, tally):
    runtime, control = tally
    # Given a tally task in the middle of its batches
    task = start(rt, runtime)
    wait_for_progress(rt, task)
    # When it is paused
    control.pause(task.organization_id, task.id, "test")
    paused = wait_for_state(rt, task, t.TaskState.PAUSED)
    # Then the pause is confirmed at a batch boundary: the marks written are the checkpoint's
    assert paused.checkpoint["next"] == paused.progress_done == marks(rt, task) < 30
    # When it is resumed
    control.resume(task.organization_id, task.id, "test")
    completed = wait_for_state(rt, task, t.TaskState.COMPLETED)
    # Then it went on from the checkpoint and wrote every mark exactly once
    assert paused.checkpoint["next"] in batch_starts[str(task.id)][1:]
    assert marks(rt, task) == 30
    assert completed.result == {"marks": 30}


def test_the_kind_is_revoked_with_its_own_rollback(rt, tally):
    runtime, control = tally
    task = start(rt, runtime)
    wait_for_progress(rt, task)
    control.revoke(task.organization_id, task.id, "test")
    revoked = wait_for_state(rt, task, t.TaskState.REVOKED)
    assert str(task.id) in rolled_back
    assert marks(rt, task) == 0
    assert revoked.revoke_reason == "user"


def test_a_pause_of_the_kind_times_out_into_a_rollback(rt, tally):
    runtime, control = tally
    # Given a tally task paused with a pause timeout of 2 s
    task = start(rt, runtime)
    wait_for_progress(rt, task)
    control.pause(task.organization_id, task.id, "test")
    wait_for_state(rt, task, t.TaskState.PAUSED)
    assert marks(rt, task) > 0
    # When the sweep runs after the deadline
    time.sleep(2.2)
    assert control.sweep()["pauses_expired"] >= 1
    # Then the task is revoked for its timeout and its marks are rolled back
    revoked = wait_for_state(rt, task, t.TaskState.REVOKED)
    assert revoked.revoke_reason == "pause_timeout"
    assert marks(rt, task) == 0


def test_a_task_of_the_kind_survives_its_worker_crashing(rt, tally):
    runtime, control = tally
    # Given a tally task whose worker committed one batch and died (its 1 s lease ran out, no message is queued)
    with rt.db.transaction() as cur:
        organization_id = orgs.authenticate(cur, new_key(rt))[0]
        task = TALLY.create(cur, organization_id=organization_id, params={"count": 12, "pace": 0.01}, actor="test")
    dead_worker = uuid.uuid4()
    with rt.db.transaction() as cur:
        claimed = t.claim(cur, task.id, dead_worker, 1, "worker:crashed")
        batch = TallyJob().run_batch(cur, claimed, None)
        t.save_progress(cur, task.id, dead_worker, 1, checkpoint=batch.checkpoint, done=batch.done, total=batch.total)
    time.sleep(1.5)
    # When the sweep runs
    assert control.sweep()["tasks_recovered"] >= 1
    # Then a live worker takes it over and finishes it from the dead worker's checkpoint, each mark once
    completed = wait_for_state(rt, task, t.TaskState.COMPLETED)
    assert batch_starts[str(task.id)][:2] == [0, MARKS_PER_BATCH]
    assert marks(rt, task) == 12
    assert completed.result == {"marks": 12}


def test_the_guide_names_only_what_exists():
    # The guide's imports from shared are the extension point this module uses: each one exists.
    import importlib
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "docs" / "adding-a-task-kind.md").read_text()
    imports = re.findall(r"^from (shared[\w.]*) import (.+)$", guide, flags=re.MULTILINE)
    assert {module for module, _ in imports} >= {"shared.kinds", "shared.batches", "shared.wake"}
    for module, names in imports:
        for name in names.split(", "):
            assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
    assert "register(TaskKind(" in guide and "task_actor(" in guide and ".create(cur" in guide
