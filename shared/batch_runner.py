"""The batch runner: every long task is a loop of batches, each committed with its checkpoint.

One batch = the job's writes + the new checkpoint + progress, in ONE transaction. The same UPDATE that
stores the checkpoint reads back the state the control service left, so a pause or revoke request is
answered at the next batch boundary: a crash at any moment loses nothing (the batch rolls back and is
redone from the last checkpoint) and duplicates nothing (the checkpoint moved with the writes).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from contextlib import nullcontext
from typing import Any

import psycopg2.errors

from shared import fairness, metrics, storage
from shared import tasks as t
from shared.batches import Batch, BatchJob, Step, Stop, TaskFailed, pipelines
from shared.broker import schedule_pause_expiry
from shared.pipeline import Pipeline
from shared.stop_requests import StopListener, StopRequested
from shared.tasks import Task, TaskState
from shared.transient import Backoff, describe, is_transient

logger = logging.getLogger(__name__)


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
        pipeline = None
        if pipelines(job):
            save = functools.partial(self.save, task=task, owner=owner, actor=actor)
            pipeline = Pipeline(self.db, self.broker, job, task, save)
        try:
            return self._loop(job, task, owner, actor, pipeline)
        finally:
            if pipeline is not None:
                pipeline.close()

    def _loop(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str,
              pipeline: Pipeline | None) -> TaskState | None:
        state, checkpoint = task.state, task.checkpoint
        backoff = Backoff(self.settings.transient_retry_seconds)
        while True:
            step = self._step(job, task, owner, actor, state, checkpoint, pipeline)
            match step.stop:
                case Stop.CONTINUE:
                    state, checkpoint = step.state, step.checkpoint
                    if step.committed:
                        backoff.reset()
                case Stop.RETRY:
                    logger.warning("task %s: %s; retrying from the checkpoint", task.id, step.error["message"])
                    # Whatever the reader of the old connection had buffered is gone with the batch.
                    job.close()
                    if not backoff.wait():
                        return self._fail(task, owner, actor, step.error)
                    state = None
                case Stop.PAUSE:
                    return TaskState.PAUSED
                case Stop.REVOKE:
                    return TaskState.REVOKED
                case Stop.FINISHED:
                    return TaskState.COMPLETED
                case Stop.FAILED:
                    return self._fail(task, owner, actor, step.error)
                case Stop.LEASE_LOST:
                    logger.warning("task %s: lease lost to another worker; stopping without writes", task.id)
                    return None

    def _step(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str, state: TaskState | None,
              checkpoint: dict[str, Any] | None, pipeline: Pipeline | None) -> Step:
        """Do what the task's state asks for next, turning every way it can end into a Step. A pipelined
        job's first batch (no checkpoint yet) runs alone; the next ones are written side by side."""
        try:
            match state:
                case None:
                    return self._reload(task.id, owner)
                case TaskState.RUNNING if pipeline is not None and checkpoint is not None:
                    return pipeline.step(checkpoint)
                case TaskState.RUNNING:
                    return self._batch(job, task, owner, actor, checkpoint)
                case TaskState.PAUSING:
                    return self._confirm_pause(task, owner, actor)
                case TaskState.REVOKING:
                    return self._revoke(job, task, owner, actor)
                case _:
                    return Step(Stop.LEASE_LOST, state)
        except (psycopg2.errors.QueryCanceled, StopRequested):
            # A stop request cut the step short. What was committed is in the database: go on from there,
            # whatever this run last saw.
            return Step(Stop.CONTINUE)
        except TaskFailed as failure:
            return Step(Stop.FAILED, error=failure.error)
        except Exception as exc:
            if is_transient(exc):
                return Step(Stop.RETRY, error={"code": "transient_database_error", "message": describe(exc)})
            logger.exception("task %s failed unexpectedly", task.id)
            return Step(Stop.FAILED, error={"code": "internal_error", "message": describe(exc)})

    def _batch(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str,
               checkpoint: dict[str, Any] | None) -> Step:
        """One batch and its checkpoint in one transaction; the state read back says what comes next. A
        pause or revoke read here lets the batch commit: the next step confirms it (a revoke undoes it)."""
        control = StopListener.of(self.broker)
        started = time.monotonic()
        with self.db.transaction() as cur:
            with control.interruptible(task.id, cur.connection) if control else nullcontext():
                batch = job.run_batch(cur, task, checkpoint)
            return self.save(cur, batch, started, task=task, owner=owner, actor=actor)

    def save(self, cur, batch: Batch, started: float, *, task: Task, owner: uuid.UUID, actor: str,
             after: dict[str, Any] | None = None) -> Step:
        """Store the batch's checkpoint and progress in its transaction (`cur`), and complete the task after
        its last batch. With `after`, only if the stored checkpoint is `after` (the batch follows the last
        one committed); if not, the transaction is rolled back and the state is to be read again."""
        state = t.save_progress(cur, task.id, owner, self.settings.task_lease_seconds,
                                checkpoint=batch.checkpoint, done=batch.done, total=batch.total, after=after)
        if state is None:
            cur.connection.rollback()
            return Step(Stop.LEASE_LOST if after is None else Stop.CONTINUE)
        metrics.record_batch(cur, task.kind, batch.rows, batch.bytes, time.monotonic() - started)
        if batch.finished and state is not TaskState.REVOKING:
            t.apply(cur, t.COMPLETE, task.id, actor=actor, reason="all batches done",
                    lease_owner=owner, result=batch.result or {})
            logger.info("task %s completed", task.id)
            return Step(Stop.FINISHED, TaskState.COMPLETED)
        return Step(Stop.CONTINUE, state, batch.checkpoint, committed=True)

    def _reload(self, task_id: uuid.UUID, owner: uuid.UUID) -> Step:
        """The task's state and checkpoint as stored (its lease renewed), or LEASE_LOST."""
        with self.db.transaction() as cur:
            if t.renew_lease(cur, task_id, owner, self.settings.task_lease_seconds) is None:
                return Step(Stop.LEASE_LOST)
            current = t.get_task(cur, task_id)
        return Step(Stop.CONTINUE, current.state, current.checkpoint)

    def _confirm_pause(self, task: Task, owner: uuid.UUID, actor: str) -> Step:
        """Pause at this batch boundary. A pause already superseded (resumed, revoked) is no error: the
        state is read again and acted on."""
        try:
            with self.db.transaction() as cur:
                paused = t.apply(cur, t.CONFIRM_PAUSE, task.id, actor=actor, reason="stopped at batch boundary",
                                 lease_owner=owner, pause_timeout=self.settings.pause_timeout_seconds)
                metrics.record_pause(cur, task.kind, task.id)
        except t.TransitionRefused as refused:
            logger.info("task %s: pause superseded (task is %s); going on", task.id, refused.state)
            return Step(Stop.CONTINUE)
        schedule_pause_expiry(self.broker, task.id, self.settings.pause_timeout_seconds)
        logger.info("task %s paused at %s", task.id, paused.progress_done)
        return Step(Stop.PAUSE, TaskState.PAUSED)

    def _revoke(self, job: BatchJob, task: Task, owner: uuid.UUID, actor: str) -> Step:
        try:
            with self.db.transaction() as cur:
                job.rollback(cur, task)
                storage.delete_task_files(cur, task.id)
                t.apply(cur, t.CONFIRM_REVOKE, task.id, actor=actor, reason="effects rolled back", lease_owner=owner)
        except t.TransitionRefused:
            return Step(Stop.CONTINUE)
        logger.info("task %s revoked and rolled back", task.id)
        return Step(Stop.REVOKE, TaskState.REVOKED)

    def _fail(self, task: Task, owner: uuid.UUID, actor: str, error: dict) -> TaskState | None:
        """Record the failure. The committed batches and the checkpoint stay: `resume` retries from there,
        `revoke` (or FAILED_TASK_TTL_HOURS) rolls them back."""
        try:
            with self.db.transaction() as cur:
                t.apply(cur, t.FAIL, task.id, actor=actor, reason=error["code"], lease_owner=owner, error=error)
        except t.TransitionRefused as refused:
            # Revoked or taken over meanwhile: the other party's outcome stands.
            logger.warning("task %s: failure not recorded, task is %s", task.id, refused.state)
            return None
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The lease runs out and the sweep hands the task to a worker again, which retries or fails it.
            logger.error("task %s: failure (%s) not recorded: %s", task.id, error["message"], describe(exc))
            return None
        logger.warning("task %s failed: %s", task.id, error["message"])
        return TaskState.FAILED
