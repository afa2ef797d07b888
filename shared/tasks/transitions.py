"""The transition table and `apply`: every change of a task's state, including a worker's claim.

Each transition is one UPDATE whose WHERE clause names the states it may leave, run in the caller's
transaction together with the event-log row: concurrent requests serialize on the row lock and the loser
sees the winner's state, never an impossible one. The same statement sends a NOTIFY on CHANGES_CHANNEL,
which PostgreSQL delivers only when the transaction commits (see shared.tasks.waiting).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import Json

from shared.task_states import LEASED_STATES, TaskState, names
from shared.tasks.model import QUEUE_POSITION, Task, get_task, record_event

# The channel a committed transition is announced on; the payload is the task's id.
CHANGES_CHANNEL = "task_changes"


class TransitionRefused(Exception):
    """The task's current state does not allow the requested change."""

    def __init__(self, task_id: uuid.UUID, state: str, action: str) -> None:
        super().__init__(f"cannot {action} task {task_id}: it is {state}")
        self.task_id = task_id
        self.state = state
        self.action = action


@dataclass(frozen=True)
class Transition:
    """A named, guarded state change. `assignments` is fixed SQL with %(name)s parameters only."""

    name: str
    allowed_from: tuple[TaskState, ...]
    # None: the task stays in the state it was in (a worker taking over a task whose holder died).
    to: TaskState | None
    assignments: str = ""
    guard: str = ""


PAUSE_DEADLINE = "paused_at = now(), pause_deadline = now() + make_interval(secs => %(pause_timeout)s)"
RELEASE_LEASE = "lease_owner = NULL, lease_expires_at = NULL"

PAUSE_QUEUED = Transition("pause", (TaskState.QUEUED,), TaskState.PAUSED, PAUSE_DEADLINE)
REQUEST_PAUSE = Transition("pause", (TaskState.RUNNING,), TaskState.PAUSING)
CONFIRM_PAUSE = Transition(
    "pause", (TaskState.PAUSING,), TaskState.PAUSED, f"{PAUSE_DEADLINE}, {RELEASE_LEASE}"
)
RESUME_PAUSED = Transition(
    "resume", (TaskState.PAUSED,), TaskState.QUEUED, "paused_at = NULL, pause_deadline = NULL, enqueued_at = now()"
)
CANCEL_PAUSE = Transition("resume", (TaskState.PAUSING,), TaskState.RUNNING)
# A failed task kept its committed work and checkpoint: resuming retries it from there.
RESUME_FAILED = Transition(
    "resume", (TaskState.FAILED,), TaskState.QUEUED, "error = NULL, finished_at = NULL, enqueued_at = now()"
)
# A queued task that never started has no effects to undo beyond its stored files.
REVOKE_UNSTARTED = Transition(
    "revoke", (TaskState.QUEUED,), TaskState.REVOKED,
    "revoke_reason = %(reason)s, finished_at = now()", "t.started_at IS NULL",
)
REQUEST_REVOKE = Transition(
    "revoke",
    (TaskState.QUEUED, TaskState.RUNNING, TaskState.PAUSING, TaskState.PAUSED, TaskState.FAILED),
    TaskState.REVOKING,
    "revoke_reason = %(reason)s, paused_at = NULL, pause_deadline = NULL, enqueued_at = now()",
)
EXPIRE_PAUSE = Transition(
    "revoke", (TaskState.PAUSED,), TaskState.REVOKING,
    "revoke_reason = 'pause_timeout', paused_at = NULL, pause_deadline = NULL, enqueued_at = now()",
    "t.pause_deadline <= now()",
)
# A failed task nobody resumed or revoked within FAILED_TASK_TTL_HOURS: its work is rolled back.
EXPIRE_FAILURE = Transition(
    "revoke", (TaskState.FAILED,), TaskState.REVOKING,
    "revoke_reason = 'failed_timeout', finished_at = NULL, enqueued_at = now()",
    "t.finished_at <= now() - make_interval(hours => %(failed_ttl_hours)s)",
)
CONFIRM_REVOKE = Transition("revoke", (TaskState.REVOKING,), TaskState.REVOKED, f"finished_at = now(), {RELEASE_LEASE}")
COMPLETE = Transition(
    "complete", (TaskState.RUNNING, TaskState.PAUSING), TaskState.COMPLETED,
    f"result = %(result)s, finished_at = now(), {RELEASE_LEASE}",
)
# A worker's claim: a lease for one run. A queued task starts; a task whose holder's lease expired (it
# crashed) is taken over in whatever state it was left.
TAKE_LEASE = ("lease_owner = %(new_owner)s, lease_expires_at = now() + make_interval(secs => %(lease)s), "
              "started_at = coalesce(t.started_at, now()), run_started_at = now(), run_started_done = t.progress_done")
LEASE_FREE = "(t.lease_owner IS NULL OR t.lease_expires_at < now())"
START = Transition("claim", (TaskState.QUEUED,), TaskState.RUNNING, TAKE_LEASE, LEASE_FREE)
TAKE_OVER = Transition("claim", LEASED_STATES, None, TAKE_LEASE, LEASE_FREE)
FAIL = Transition(
    "fail", (TaskState.QUEUED, TaskState.RUNNING, TaskState.PAUSING), TaskState.FAILED,
    f"error = %(error)s, finished_at = now(), {RELEASE_LEASE}",
)


def apply(
    cur,
    transition: Transition,
    task_id: uuid.UUID,
    *,
    actor: str,
    reason: str | None = None,
    organization_id: uuid.UUID | None = None,
    lease_owner: uuid.UUID | None = None,
    **params: Any,
) -> Task:
    """Apply `transition` atomically and log it.

    Raises TaskNotFound when the task is not the organization's, TransitionRefused (with the current
    state) when its state does not allow the change, or when `lease_owner` no longer holds it.
    """
    to_state = "old.state" if transition.to is None else "%(to)s"
    sets = ", ".join(filter(None, [f"state = {to_state}", "updated_at = now()", transition.assignments]))
    guards = ["old.state = ANY(%(allowed)s)"]
    if transition.guard:
        guards.append(transition.guard)
    if lease_owner is not None:
        guards.append("t.lease_owner = %(lease_owner)s")
    values = {
        "id": task_id,
        "org": organization_id,
        "to": None if transition.to is None else str(transition.to),
        "allowed": names(transition.allowed_from),
        "channel": CHANGES_CHANNEL,
        "lease_owner": lease_owner,
        "reason": reason,
        **{k: Json(v) if isinstance(v, dict) else v for k, v in params.items()},
    }
    cur.execute(
        f"""
        WITH old AS (
            SELECT id, state, lease_owner FROM tasks
            WHERE id = %(id)s AND (%(org)s::uuid IS NULL OR organization_id = %(org)s::uuid)
            FOR UPDATE
        )
        UPDATE tasks t SET {sets}
        FROM old WHERE t.id = old.id AND {" AND ".join(guards)}
        RETURNING old.state AS previous_state, old.lease_owner AS previous_owner, t.*, {QUEUE_POSITION},
                  pg_notify(%(channel)s, t.id::text) AS notified
        """,
        values,
    )
    row = cur.fetchone()
    if row is None:
        current = get_task(cur, task_id, organization_id)
        raise TransitionRefused(task_id, str(current.state), transition.name)
    # A claim that neither changed the state nor took the task from anyone (a revoking task's message
    # picked up) is no event.
    if row["previous_state"] != row["state"] or row["previous_owner"] is not None:
        record_event(cur, task_id, row["previous_state"], row["state"], actor, reason)
    return Task.from_row(row)


