"""Fairness across organizations: at most ORG_MAX_RUNNING_TASKS tasks of one organization run at once.

A queued task may start only when it is among the first (limit - running) of its organization's queued
tasks, in the order they were created (tasks.QUEUE_POSITION, which the task JSON shows; the queries are in
shared/tasks/fairness.py). A task that may not start stays `queued` and its message is dropped; the run that
frees a slot (its task completed, failed, paused or was revoked) sends the messages of the tasks now first in
line again. Paused tasks hold no slot. The control service's sweep re-sends the messages of tasks queued for
long: the safety net if a wake-up is lost with a crashed worker.

What it cannot do: a worker thread that picked up a message of a task that may not start is free again at
once, but the limit is per organization, so with ORG_MAX_RUNNING_TASKS at or above a queue's worker threads
one organization can still fill that queue.
"""

from __future__ import annotations

import logging
import uuid

from shared.broker import send_task_message
from shared.tasks.fairness import first_in_line, may_start

__all__ = ["may_start", "wake_waiting"]

logger = logging.getLogger(__name__)


def wake_waiting(db, broker, organization_id: uuid.UUID, limit: int) -> int:
    """Send again the messages of the organization's queued tasks that its free slots now let start;
    returns how many. Called when a run ends (a slot may have been freed)."""
    with db.transaction() as cur:
        waiting = first_in_line(cur, organization_id, limit)
    for task in waiting:
        send_task_message(broker, task["queue_name"], task["actor_name"], task["id"])
    if waiting:
        logger.info("organization %s: %d queued task(s) woken", organization_id, len(waiting))
    return len(waiting)
