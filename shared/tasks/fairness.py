"""The task core's side of fairness across organizations: whether a queued task may start now, and which of
an organization's queued tasks its free slots let start (shared/fairness.py says why and sends the wake-ups).

A claim and a wake-up of the same organization serialize on a transaction-scoped advisory lock, so two
workers can never both take the organization's last slot, and a slot freed while a claim was refused is
always seen by one of the two.
"""

from __future__ import annotations

import uuid

from shared.task_states import TaskState, names
from shared.tasks.model import QUEUE_POSITION

_LOCK_ORGANIZATION = "SELECT pg_advisory_xact_lock(hashtextextended('org-slots:' || %s::text, 0))"
# Only tasks that hold a worker count: running, or asked to pause and not there yet.
_HOLDING_A_WORKER = (TaskState.RUNNING, TaskState.PAUSING)
_RUNNING = "SELECT count(*) AS n FROM tasks WHERE organization_id = %s AND state = ANY(%s)"
_QUEUED_TASK = f"""
SELECT t.organization_id, t.state, {QUEUE_POSITION}
FROM tasks t WHERE t.id = %s
"""
_FIRST_IN_LINE = """
SELECT id, queue_name, actor_name FROM tasks
WHERE organization_id = %(org)s AND state = %(waiting)s
ORDER BY created_at, id LIMIT %(free)s
"""


def _running(cur, organization_id) -> int:
    cur.execute(_RUNNING, (organization_id, names(_HOLDING_A_WORKER)))
    return cur.fetchone()["n"]


def may_start(cur, task_id: uuid.UUID, limit: int) -> bool:
    """Whether a worker may claim the task now. Only a queued task can be held back: one that is running,
    pausing or revoking is taken over or wound up whatever the limit. Call it in the claim's transaction:
    it holds the organization's slot lock until that commits."""
    cur.execute(_QUEUED_TASK, (task_id,))
    row = cur.fetchone()
    if row is None or row["state"] != TaskState.QUEUED:
        return True
    cur.execute(_LOCK_ORGANIZATION, (row["organization_id"],))
    # Read again under the lock: a claim or a wake-up that held it may have changed the line.
    cur.execute(_QUEUED_TASK, (task_id,))
    row = cur.fetchone()
    if row["state"] != TaskState.QUEUED:
        return True
    return row["queue_position"] <= limit - _running(cur, row["organization_id"])


def first_in_line(cur, organization_id: uuid.UUID, limit: int) -> list[dict]:
    """The organization's queued tasks (id, queue_name, actor_name) that its free slots now let start, in
    the order they were created; holds the organization's slot lock until `cur`'s transaction ends."""
    cur.execute(_LOCK_ORGANIZATION, (organization_id,))
    free = limit - _running(cur, organization_id)
    if free <= 0:
        return []
    cur.execute(_FIRST_IN_LINE, {"org": organization_id, "waiting": str(TaskState.QUEUED), "free": free})
    return cur.fetchall()
