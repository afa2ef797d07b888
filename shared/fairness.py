"""Fairness across organizations: at most ORG_MAX_RUNNING_TASKS tasks of one organization run at once.

A queued task may start only when it is among the first (limit - running) of its organization's queued
tasks, in the order they were created (tasks.QUEUE_POSITION, which the task JSON shows). A task that may not
start stays `queued` and its message is dropped; the run that frees a slot (its task completed, failed,
paused or was revoked) sends the messages of the tasks now first in line again. Paused tasks hold no slot.
The control service's sweep re-sends the messages of tasks queued for long: the safety net if a wake-up is
lost with a crashed worker.

A claim and a wake-up of the same organization serialize on a transaction-scoped advisory lock, so two
workers can never both take the organization's last slot, and a slot freed while a claim was refused is
always seen by one of the two.

What it cannot do: a worker thread that picked up a message of a task that may not start is free again at
once, but the limit is per organization, so with ORG_MAX_RUNNING_TASKS at or above a queue's worker threads
one organization can still fill that queue.
"""

from __future__ import annotations

import logging
import uuid

from shared.broker import send_task_message
from shared.tasks import QUEUE_POSITION

logger = logging.getLogger(__name__)

_LOCK_ORGANIZATION = "SELECT pg_advisory_xact_lock(hashtextextended('org-slots:' || %s::text, 0))"
# Only tasks that hold a worker count: running, or asked to pause and not there yet.
_RUNNING = "SELECT count(*) AS n FROM tasks WHERE organization_id = %s AND state IN ('running', 'pausing')"
_QUEUED_TASK = """
SELECT t.organization_id, t.state, {position}
FROM tasks t WHERE t.id = %s
"""
_FIRST_IN_LINE = """
SELECT id, queue_name, actor_name FROM tasks
WHERE organization_id = %(org)s AND state = 'queued'
ORDER BY created_at, id LIMIT %(free)s
"""


def _running(cur, organization_id) -> int:
    cur.execute(_RUNNING, (organization_id,))
    return cur.fetchone()["n"]


def may_start(cur, task_id: uuid.UUID, limit: int) -> bool:
    """Whether a worker may claim the task now. Only a queued task can be held back: one that is running,
    pausing or revoking is taken over or wound up whatever the limit. Call it in the claim's transaction:
    it holds the organization's slot lock until that commits."""
    cur.execute(_QUEUED_TASK.format(position=QUEUE_POSITION), (task_id,))
    row = cur.fetchone()
    if row is None or row["state"] != "queued":
        return True
    cur.execute(_LOCK_ORGANIZATION, (row["organization_id"],))
    # Read again under the lock: a claim or a wake-up that held it may have changed the line.
    cur.execute(_QUEUED_TASK.format(position=QUEUE_POSITION), (task_id,))
    row = cur.fetchone()
    if row["state"] != "queued":
        return True
    return row["queue_position"] <= limit - _running(cur, row["organization_id"])


def wake_waiting(db, broker, organization_id: uuid.UUID, limit: int) -> int:
    """Send again the messages of the organization's queued tasks that its free slots now let start;
    returns how many. Called when a run ends (a slot may have been freed)."""
    with db.transaction() as cur:
        cur.execute(_LOCK_ORGANIZATION, (organization_id,))
        free = limit - _running(cur, organization_id)
        if free <= 0:
            return 0
        cur.execute(_FIRST_IN_LINE, {"org": organization_id, "free": free})
        waiting = cur.fetchall()
    for task in waiting:
        send_task_message(broker, task["queue_name"], task["actor_name"], task["id"])
    if waiting:
        logger.info("organization %s: %d queued task(s) woken", organization_id, len(waiting))
    return len(waiting)
