"""What the control service does to a task. Every change is a guarded transition (shared.tasks);
messages to workers are sent after the transaction commits."""

from __future__ import annotations

import logging
import time
import uuid

from shared import storage
from shared import tasks as t
from shared.control_middleware import announce_stop
from shared.tasks import Task, TaskState
from shared.wake import schedule_pause_expiry_or_leave_to_sweep, wake_task

logger = logging.getLogger(__name__)

SWEEPER = "scheduler:sweep"


def _apply_first(cur, transitions, task_id, **kwargs) -> Task:
    """Apply the first of `transitions` the task's current state allows (raises TransitionRefused with
    the current state when none does)."""
    refused = None
    for transition in transitions:
        try:
            return t.apply(cur, transition, task_id, **kwargs)
        except t.TransitionRefused as exc:
            refused = exc
    raise refused


class TaskControl:
    def __init__(self, db, broker, settings) -> None:
        self.db = db
        self.broker = broker
        self.settings = settings

    def _wake(self, task: Task) -> None:
        # Best-effort: the change is committed; with Redis down the sweep sends the message later.
        wake_task(self.db, self.broker, task)

    def pause(self, organization_id: uuid.UUID, task_id: uuid.UUID, actor: str) -> Task:
        """A queued task is paused at once; a running one is asked to stop at its next batch boundary."""
        with self.db.transaction() as cur:
            task = _apply_first(cur, (t.PAUSE_QUEUED, t.REQUEST_PAUSE), task_id, actor=actor,
                                reason="requested", organization_id=organization_id,
                                pause_timeout=self.settings.pause_timeout_seconds)
        if task.state is TaskState.PAUSED:
            schedule_pause_expiry_or_leave_to_sweep(self.broker, task, self.settings.pause_timeout_seconds)
        else:
            announce_stop(self.broker, task.id)
        return task

    def resume(self, organization_id: uuid.UUID, task_id: uuid.UUID, actor: str) -> Task:
        """A paused or failed task is queued to continue from its checkpoint; a pausing one just keeps running."""
        with self.db.transaction() as cur:
            task = _apply_first(cur, (t.RESUME_PAUSED, t.CANCEL_PAUSE, t.RESUME_FAILED), task_id, actor=actor,
                                reason="requested", organization_id=organization_id)
        if task.state is TaskState.QUEUED:
            self._wake(task)
        return task

    def revoke(self, organization_id: uuid.UUID | None, task_id: uuid.UUID, actor: str,
               reason: str = "user") -> Task:
        """Stop the task and undo its effects. A task that never started is revoked at once; otherwise
        its service's worker rolls it back (state `revoking` until then)."""
        with self.db.transaction() as cur:
            task = _apply_first(cur, (t.REVOKE_UNSTARTED, t.REQUEST_REVOKE), task_id, actor=actor,
                                reason=reason, organization_id=organization_id)
            if task.state is TaskState.REVOKED:
                storage.delete_task_files(cur, task.id)
        if task.state is TaskState.REVOKING:
            announce_stop(self.broker, task.id)
            self._wake(task)
        return task

    def expire_pause(self, task_id: uuid.UUID) -> Task | None:
        """Revoke the task if it is still paused past its deadline; None (and no change) otherwise.
        Safe to run any number of times, from any number of schedulers."""
        try:
            with self.db.transaction() as cur:
                task = t.apply(cur, t.EXPIRE_PAUSE, task_id, actor=SWEEPER, reason="pause_timeout")
        except (t.TransitionRefused, t.TaskNotFound):
            return None
        logger.info("task %s paused past its deadline: revoking", task_id)
        self._wake(task)
        return task

    def expire_failure(self, task_id: uuid.UUID) -> Task | None:
        """Revoke the task (reason `failed_timeout`) if it is still failed FAILED_TASK_TTL_HOURS after it
        failed; None (and no change) otherwise. Safe to run any number of times, from any number of schedulers."""
        try:
            with self.db.transaction() as cur:
                task = t.apply(cur, t.EXPIRE_FAILURE, task_id, actor=SWEEPER, reason="failed_timeout",
                               failed_ttl_hours=self.settings.failed_task_ttl_hours)
        except (t.TransitionRefused, t.TaskNotFound):
            return None
        logger.info("task %s failed more than %dh ago: revoking", task_id, self.settings.failed_task_ttl_hours)
        self._wake(task)
        return task

    def sweep(self) -> dict[str, int]:
        """Expire overdue pauses and old failures, and re-send the message of every task no worker is acting
        on. Every change is a guarded transition: two sweeps at once change nothing twice."""
        with self.db.transaction() as cur:
            overdue = t.expired_pauses(cur)
            failures = t.expired_failures(cur, self.settings.failed_task_ttl_hours)
        expired = sum(1 for task_id in overdue if self.expire_pause(task_id) is not None)
        failures_expired = sum(1 for task_id in failures if self.expire_failure(task_id) is not None)
        with self.db.transaction() as cur:
            stalled = t.stalled_tasks(cur, queued_grace_seconds=max(60, 2 * self.settings.task_lease_seconds))
            for task in stalled:
                t.mark_enqueued(cur, task.id)
        for task in stalled:
            logger.info("task %s (%s) has no live worker: re-sending its message", task.id, task.state)
            self._wake(task)
        return {"pauses_expired": expired, "failures_expired": failures_expired, "tasks_recovered": len(stalled)}

    def wait_for_change(self, organization_id: uuid.UUID, task_id: uuid.UUID, transient: TaskState,
                        timeout: float, poll_interval: float = 0.02) -> Task:
        """Poll until the task leaves `transient` (e.g. pausing) or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            with self.db.transaction() as cur:
                task = t.get_task(cur, task_id, organization_id)
            if task.state is not transient or time.monotonic() >= deadline:
                return task
            time.sleep(poll_interval)
