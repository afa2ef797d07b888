"""A worker's hold on a task: claiming it, the checkpoint that renews the lease, and the queries that find
tasks no live worker is acting on (the sweep's work list)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg2.extras import Json

from shared.task_states import LEASED_STATES, MESSAGE_STATES, TaskState, names
from shared.tasks.model import Task, TaskNotFound
from shared.tasks.transitions import START, TAKE_OVER, TransitionRefused, apply


def claim(cur, task_id: uuid.UUID, lease_owner: uuid.UUID, lease_seconds: int, actor: str) -> Task | None:
    """Take the task for one worker run (the START or TAKE_OVER transition): a queued task starts running;
    a task whose previous worker's lease expired (it crashed) is taken over in whatever state it was left.
    None when the task is held by a live worker or is in a state no worker acts on."""
    for transition, reason in ((START, "worker started"), (TAKE_OVER, "previous worker's lease expired")):
        try:
            return apply(cur, transition, task_id, actor=actor, reason=reason, new_owner=lease_owner,
                         lease=lease_seconds)
        except TransitionRefused:
            continue
        except TaskNotFound:
            return None
    return None


def save_progress(
    cur,
    task_id: uuid.UUID,
    lease_owner: uuid.UUID,
    lease_seconds: int,
    *,
    checkpoint: dict[str, Any],
    done: int,
    total: int | None = None,
    after: dict[str, Any] | None = None,
) -> TaskState | None:
    """Store the checkpoint and progress in the caller's batch transaction and renew the lease.

    Returns the task's state as the control service left it (the worker's stop signal), or None when
    this worker no longer holds the task, or when `after` is given and the stored checkpoint is not it (the
    batch does not follow the last one committed)."""
    cur.execute(
        """
        UPDATE tasks SET checkpoint = %(checkpoint)s, progress_done = %(done)s,
            progress_total = coalesce(%(total)s, progress_total),
            lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
        WHERE id = %(id)s AND lease_owner = %(owner)s AND state = ANY(%(leased)s)
            AND (%(after)s::jsonb IS NULL OR checkpoint = %(after)s::jsonb)
        RETURNING state
        """,
        {"leased": names(LEASED_STATES), "id": task_id, "owner": lease_owner, "lease": lease_seconds,
         "checkpoint": Json(checkpoint), "done": done, "total": total,
         "after": None if after is None else Json(after)},
    )
    row = cur.fetchone()
    return None if row is None else TaskState(row["state"])


def renew_lease(cur, task_id: uuid.UUID, lease_owner: uuid.UUID, lease_seconds: int) -> TaskState | None:
    """Extend this worker's hold on the task; returns the current state, or None if the lease was lost."""
    cur.execute(
        """
        UPDATE tasks SET lease_expires_at = now() + make_interval(secs => %(lease)s)
        WHERE id = %(id)s AND lease_owner = %(owner)s RETURNING state
        """,
        {"id": task_id, "owner": lease_owner, "lease": lease_seconds},
    )
    row = cur.fetchone()
    return None if row is None else TaskState(row["state"])


def expired_pauses(cur, limit: int = 500) -> list[uuid.UUID]:
    """Paused tasks past their pause deadline (candidates for EXPIRE_PAUSE)."""
    cur.execute(
        "SELECT id FROM tasks WHERE state = %s AND pause_deadline <= now() ORDER BY pause_deadline LIMIT %s",
        (str(TaskState.PAUSED), limit),
    )
    return [row["id"] for row in cur.fetchall()]


def expired_failures(cur, failed_ttl_hours: int, limit: int = 500) -> list[uuid.UUID]:
    """Failed tasks left alone longer than `failed_ttl_hours` (candidates for EXPIRE_FAILURE)."""
    cur.execute(
        """SELECT id FROM tasks WHERE state = %s AND finished_at <= now() - make_interval(hours => %s)
           ORDER BY finished_at LIMIT %s""",
        (str(TaskState.FAILED), failed_ttl_hours, limit),
    )
    return [row["id"] for row in cur.fetchall()]


def stalled_tasks(cur, queued_grace_seconds: int, limit: int = 500) -> list[Task]:
    """Tasks a worker should be acting on but none is: the holder's lease expired, or a queued/revoking
    task's message was lost (enqueued long ago and never claimed)."""
    cur.execute(
        """
        SELECT * FROM tasks
        WHERE (state = ANY(%(leased)s) AND lease_expires_at < now())
           OR (state = ANY(%(waiting)s) AND lease_owner IS NULL
               AND enqueued_at < now() - make_interval(secs => %(grace)s))
        ORDER BY updated_at LIMIT %(limit)s
        """,
        {"leased": names(LEASED_STATES), "waiting": names(MESSAGE_STATES), "grace": queued_grace_seconds,
         "limit": limit},
    )
    return [Task.from_row(row) for row in cur.fetchall()]


def mark_enqueued(cur, task_id: uuid.UUID) -> None:
    """Record that the task's message was (re)sent now: the sweep gives it a grace period from here."""
    cur.execute("UPDATE tasks SET enqueued_at = now() WHERE id = %s", (task_id,))


# A time before any sweep's grace period: the next sweep re-sends the message of a task marked so.
MESSAGE_LOST_SQL = """
    UPDATE tasks SET enqueued_at = 'epoch'::timestamptz
    WHERE id = %(id)s AND state = ANY(%(waiting)s) AND lease_owner IS NULL
"""


def mark_message_lost(cur, task_id: uuid.UUID) -> None:
    """Record that the task's message could not be sent (Redis down): the next sweep sends it again,
    without waiting for the grace period it gives messages that are presumably on their way."""
    cur.execute(MESSAGE_LOST_SQL, {"id": task_id, "waiting": names(MESSAGE_STATES)})


def hold_of(cur, task_id: uuid.UUID) -> tuple[TaskState, bool] | None:
    """The task's state and whether a live worker holds it (its lease has not expired); None when the task
    does not exist."""
    cur.execute(
        "SELECT state, lease_owner IS NOT NULL AND lease_expires_at >= now() AS held FROM tasks WHERE id = %s",
        (task_id,),
    )
    row = cur.fetchone()
    return None if row is None else (TaskState(row["state"]), row["held"])
