"""The batch runner: every long task is a loop of batches, each committed with its checkpoint.

One batch = the job's writes + the new checkpoint + progress, in ONE transaction. The same UPDATE that
stores the checkpoint reads back the state the control service left, so a pause or revoke request is
answered at the next batch boundary: a crash at any moment loses nothing (the batch rolls back and is
redone from the last checkpoint) and duplicates nothing (the checkpoint moved with the writes).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2.errors

from shared import fairness, metrics, storage
from shared import tasks as t
from shared.broker import schedule_pause_expiry
from shared.control_middleware import ControlMiddleware, StopRequested
from shared.tasks import Task, TaskState

logger = logging.getLogger(__name__)


class TaskFailed(Exception):
    """The job cannot finish (bad input, impossible parameters); recorded on the task as its error."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, **details}


class _StopBatch(BaseException):
    """Leaves the batch transaction without committing (derives from BaseException so that a job's
    `except Exception` cannot swallow it)."""

    def __init__(self, state: TaskState | None) -> None:
        super().__init__(state)
        self.state = state


@dataclass
class Batch:
    """What one batch did: where the next one starts and how far the task has come."""

    checkpoint: dict[str, Any]
    done: int
    total: int | None = None
    finished: bool = False
    result: dict[str, Any] | None = field(default=None)
    # What this batch alone read or wrote, for the metrics (shared.metrics).
    rows: int = 0
    bytes: int = 0


class BatchJob(Protocol):
    def run_batch(self, cur, task: Task, checkpoint: dict[str, Any] | None) -> Batch:
        """Do the next batch's writes with `cur` (inside the batch transaction), starting at `checkpoint`
        (None for the first batch). Raises TaskFailed when the task cannot go on."""

    def rollback(self, cur, task: Task) -> None:
        """Undo every effect of the task other than its stored files (those are deleted by the runner)."""

    def close(self) -> None:
        """Release what the job holds between batches (threads, readers); called when the run ends."""


def worker_name() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


class BatchRunner:
    def __init__(self, db, broker, settings) -> None:
        self.db = db
        self.broker = broker
        self.settings = settings

    def run(self, job: BatchJob, task_id: uuid.UUID | str) -> TaskState | None:
        """Run the task until it completes, fails, pauses or is revoked; returns the state it was left in,
        or None when another worker holds it or it needs no work."""
        task_id = uuid.UUID(str(task_id))
        owner = uuid.uuid4()
        actor = worker_name()
        lease = self.settings.task_lease_seconds
        limit = self.settings.org_max_running_tasks
        with self.db.transaction() as cur:
            if not fairness.may_start(cur, task_id, limit):
                logger.info("task %s waits in queued: its organization runs %d task(s) already", task_id, limit)
                return None
            task = t.claim(cur, task_id, owner, lease, actor)
        if task is None:
            return None
        try:
            return self._run_claimed(job, task, owner, actor)
        finally:
            job.close()
            # Whatever ended the run, the task no longer holds a slot unless it is still running elsewhere.
            fairness.wake_waiting(self.db, self.broker, task.organization_id, limit)

    def _run_claimed(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str) -> TaskState | None:
        task_id, lease = task.id, self.settings.task_lease_seconds
        if task.state is TaskState.REVOKING:
            return self._revoke(job, task, owner, actor)
        if task.state is TaskState.PAUSING:
            return self._confirm_pause(task, owner, actor)

        checkpoint = task.checkpoint
        control = ControlMiddleware.of(self.broker)
        try:
            while True:
                try:
                    started = time.monotonic()
                    with self.db.transaction() as cur:
                        with control.interruptible(task_id, cur.connection) if control else nullcontext():
                            batch = job.run_batch(cur, task, checkpoint)
                        state = t.save_progress(cur, task_id, owner, lease, checkpoint=batch.checkpoint,
                                                done=batch.done, total=batch.total)
                        if state is None or state is TaskState.REVOKING:
                            raise _StopBatch(state)
                        metrics.record_batch(cur, task.kind, batch.rows, batch.bytes, time.monotonic() - started)
                        if batch.finished:
                            t.apply(cur, t.COMPLETE, task_id, actor=actor, reason="all batches done",
                                    lease_owner=owner, result=batch.result or {})
                            logger.info("task %s completed", task_id)
                            return TaskState.COMPLETED
                except (psycopg2.errors.QueryCanceled, StopRequested):
                    # A stop request cut the batch short. What was committed is in the database: go on
                    # from there, whatever the state and checkpoint this run last saw.
                    current = self._reload(task_id, owner)
                    state = None if current is None else current.state
                    if state is None or state is TaskState.REVOKING:
                        raise _StopBatch(state) from None
                    checkpoint = current.checkpoint
                    if state is TaskState.RUNNING:
                        continue
                if state is TaskState.PAUSING:
                    return self._confirm_pause(task, owner, actor)
                checkpoint = batch.checkpoint
        except _StopBatch as stop:
            if stop.state is None:
                logger.warning("task %s: lease lost to another worker; stopping without writes", task_id)
                return None
            return self._revoke(job, task, owner, actor)
        except TaskFailed as failure:
            return self._fail(job, task, owner, actor, failure.error)
        except Exception as exc:
            logger.exception("task %s failed unexpectedly", task_id)
            return self._fail(job, task, owner, actor, {"code": "internal_error", "message": str(exc)})

    def _reload(self, task_id: uuid.UUID, owner: uuid.UUID) -> Task | None:
        """The task as stored (its lease renewed), or None when this run no longer holds it."""
        with self.db.transaction() as cur:
            if t.renew_lease(cur, task_id, owner, self.settings.task_lease_seconds) is None:
                return None
            return t.get_task(cur, task_id)

    def _confirm_pause(self, task: Task, owner: uuid.UUID, actor: str) -> TaskState:
        with self.db.transaction() as cur:
            paused = t.apply(cur, t.CONFIRM_PAUSE, task.id, actor=actor, reason="stopped at batch boundary",
                             lease_owner=owner, pause_timeout=self.settings.pause_timeout_seconds)
            metrics.record_pause(cur, task.kind, task.id)
        schedule_pause_expiry(self.broker, task.id, self.settings.pause_timeout_seconds)
        logger.info("task %s paused at %s", task.id, paused.progress_done)
        return TaskState.PAUSED

    def _revoke(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str) -> TaskState:
        with self.db.transaction() as cur:
            job.rollback(cur, task)
            storage.delete_task_files(cur, task.id)
            t.apply(cur, t.CONFIRM_REVOKE, task.id, actor=actor, reason="effects rolled back", lease_owner=owner)
        logger.info("task %s revoked and rolled back", task.id)
        return TaskState.REVOKED

    def _fail(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str, error: dict) -> TaskState | None:
        try:
            with self.db.transaction() as cur:
                job.rollback(cur, task)
                t.apply(cur, t.FAIL, task.id, actor=actor, reason=error["code"], lease_owner=owner, error=error)
        except t.TransitionRefused as refused:
            # Revoked or taken over meanwhile: the other party's outcome stands.
            logger.warning("task %s: failure not recorded, task is %s", task.id, refused.state)
            return None
        return TaskState.FAILED
