"""Task state: the state machine, the task record and every guarded transition.

Each transition is one UPDATE whose WHERE clause names the states it may leave, run in the caller's
transaction together with the event-log row: concurrent requests serialize on the row lock and the loser
sees the winner's state, never an impossible one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from psycopg2.extras import Json

from shared import metrics


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    REVOKING = "revoking"
    REVOKED = "revoked"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATES = frozenset({TaskState.REVOKED, TaskState.COMPLETED, TaskState.FAILED})
# States in which a worker holds (or should pick up) the task.
WORKER_STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.PAUSING, TaskState.REVOKING)


class TaskNotFound(LookupError):
    """No task with that id belongs to the caller's organization."""


class TransitionRefused(Exception):
    """The task's current state does not allow the requested change."""

    def __init__(self, task_id: uuid.UUID, state: str, action: str) -> None:
        super().__init__(f"cannot {action} task {task_id}: it is {state}")
        self.task_id = task_id
        self.state = state
        self.action = action


@dataclass(frozen=True)
class Task:
    id: uuid.UUID
    organization_id: uuid.UUID
    kind: str
    queue_name: str
    actor_name: str
    state: TaskState
    params: dict[str, Any]
    progress_done: int
    progress_total: int | None
    progress_unit: str
    checkpoint: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    revoke_reason: str | None
    lease_owner: uuid.UUID | None
    lease_expires_at: datetime | None
    run_started_at: datetime | None
    run_started_done: int | None
    enqueued_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    paused_at: datetime | None
    pause_deadline: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    # Read with QUEUE_POSITION; None where a statement does not select it.
    queue_position: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        fields = {name: row[name] for name in cls.__dataclass_fields__ if name in row}
        fields["state"] = TaskState(row["state"])
        return cls(**fields)

    def rate_per_second(self, now: datetime) -> float | None:
        """Units of progress per second since the current run started; None unless running."""
        if self.state not in (TaskState.RUNNING, TaskState.PAUSING) or self.run_started_at is None:
            return None
        elapsed = (now - self.run_started_at).total_seconds()
        if elapsed <= 0:
            return None
        return max(0, self.progress_done - (self.run_started_done or 0)) / elapsed

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        rate = self.rate_per_second(now)
        eta = None
        if rate and self.progress_total is not None:
            eta = round(max(0, self.progress_total - self.progress_done) / rate, 1)
        percent = None
        if self.progress_total:
            percent = round(100.0 * self.progress_done / self.progress_total, 2)
        return {
            "task_id": str(self.id),
            "kind": self.kind,
            "state": str(self.state),
            "progress": {
                "done": self.progress_done,
                "total": self.progress_total,
                "unit": self.progress_unit,
                "percent": percent,
            },
            "rate_per_second": None if rate is None else round(rate, 1),
            "eta_seconds": eta,
            "params": self.params,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "paused_at": _iso(self.paused_at),
            "pause_deadline": _iso(self.pause_deadline),
            "finished_at": _iso(self.finished_at),
            "updated_at": _iso(self.updated_at),
            "revoke_reason": self.revoke_reason,
            "queue_position": self.queue_position,
            "result": self.result,
            "error": self.error,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_OBJECT_OR_NULL = {"type": ["object", "null"], "additionalProperties": True}
# The JSON Schema of Task.to_json, as the API documents it (change both together).
TASK_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["task_id", "kind", "state", "progress", "rate_per_second", "eta_seconds", "params",
                 "created_at", "started_at", "paused_at", "pause_deadline", "finished_at", "updated_at",
                 "revoke_reason", "queue_position", "result", "error"],
    "properties": {
        "task_id": {"type": "string", "format": "uuid"},
        "kind": {"type": "string", "description": "What the task does: `upload`, `export`."},
        "state": {"type": "string", "enum": [s.value for s in TaskState]},
        "progress": {
            "type": "object",
            "required": ["done", "total", "unit", "percent"],
            "properties": {
                "done": {"type": "integer", "minimum": 0},
                "total": {"type": ["integer", "null"], "minimum": 0},
                "unit": {"type": "string", "description": "What `done` and `total` count: `bytes`, `rows`."},
                "percent": {"type": ["number", "null"], "minimum": 0},
            },
        },
        "rate_per_second": {"type": ["number", "null"], "description": "Progress units a second in the "
                            "current run; null unless running."},
        "eta_seconds": {"type": ["number", "null"], "description": "Estimated seconds to completion."},
        "params": {"type": "object", "additionalProperties": True},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _TIMESTAMP,
        "paused_at": _TIMESTAMP,
        "pause_deadline": {**_TIMESTAMP, "description": "A paused task is revoked if not resumed by then."},
        "finished_at": _TIMESTAMP,
        "updated_at": {"type": "string", "format": "date-time"},
        "revoke_reason": {"type": ["string", "null"], "description": "`user`, `pause_timeout` or `failed_timeout`."},
        "queue_position": {"type": ["integer", "null"], "minimum": 1, "description": "While queued: the task's "
                           "place in its organization's line (1 starts next; at most ORG_MAX_RUNNING_TASKS of an "
                           "organization's tasks run at once). Null in any other state."},
        "result": {**_OBJECT_OR_NULL, "description": "What a completed task produced (depends on its kind)."},
        "error": {**_OBJECT_OR_NULL, "description": "Why a failed task failed: `code`, `message`, details."},
    },
}


# Where a queued task stands in its organization's line (1 = next to start: shared.fairness starts tasks in
# this order), NULL in any other state. It counts the others, never the row itself, so that it gives the same
# answer in a RETURNING clause, whose subqueries see the table as it was before the statement.
QUEUE_POSITION = """
    CASE WHEN t.state = 'queued' THEN (
        SELECT 1 + count(*) FROM tasks w
        WHERE w.organization_id = t.organization_id AND w.state = 'queued' AND w.id <> t.id
          AND (w.created_at, w.id) < (t.created_at, t.id)) END AS queue_position
"""


def create_task(
    cur,
    *,
    organization_id: uuid.UUID,
    kind: str,
    queue_name: str,
    actor_name: str,
    progress_unit: str,
    params: dict[str, Any] | None = None,
    actor: str,
    task_id: uuid.UUID | None = None,
) -> Task:
    """Insert a queued task and its first event."""
    cur.execute(
        f"""
        INSERT INTO tasks AS t (id, organization_id, kind, queue_name, actor_name, state, params,
                                progress_unit, enqueued_at)
        VALUES (%s, %s, %s, %s, %s, 'queued', %s, %s, now())
        RETURNING *, {QUEUE_POSITION}
        """,
        (task_id or uuid.uuid4(), organization_id, kind, queue_name, actor_name, Json(params or {}),
         progress_unit),
    )
    task = Task.from_row(cur.fetchone())
    record_event(cur, task.id, None, TaskState.QUEUED, actor, "created")
    return task


def get_task(cur, task_id: uuid.UUID, organization_id: uuid.UUID | None = None) -> Task:
    """The task; raises TaskNotFound when it does not exist or belongs to another organization."""
    cur.execute(
        f"SELECT *, {QUEUE_POSITION} FROM tasks t WHERE id = %s AND (%s::uuid IS NULL OR organization_id = %s::uuid)",
        (task_id, organization_id, organization_id),
    )
    row = cur.fetchone()
    if row is None:
        raise TaskNotFound(task_id)
    return Task.from_row(row)


# The filters of list_tasks, each off when its parameter is NULL. An id prefix is matched as text (exactly as
# the id is shown) and also as a uuid range, so the primary key's index finds the candidates.
_LIST_FILTER = """
    organization_id = %(org)s
    AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
    AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
    AND (%(id_prefix)s::text IS NULL
         OR (id BETWEEN %(id_low)s::uuid AND %(id_high)s::uuid AND id::text LIKE %(id_prefix)s || '%%'))
"""


def list_tasks(
    cur,
    organization_id: uuid.UUID,
    *,
    states: list[str] | None = None,
    kinds: list[str] | None = None,
    id_prefix: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Task], int]:
    """The organization's tasks, newest first, and how many match in all.

    `id_prefix` (lowercase hex digits and dashes, at least the first 8 digits) keeps the tasks whose id, in
    its canonical text form, starts with it."""
    digits = (id_prefix or "").replace("-", "")[:32]
    params = {"org": organization_id, "states": states, "kinds": kinds, "id_prefix": id_prefix,
              "id_low": digits.ljust(32, "0"), "id_high": digits.ljust(32, "f"), "limit": limit, "offset": offset}
    cur.execute(
        f"""SELECT *, {QUEUE_POSITION}, count(*) OVER () AS total_count FROM tasks t WHERE {_LIST_FILTER}
            ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s""",
        params,
    )
    rows = cur.fetchall()
    if rows:
        return [Task.from_row(row) for row in rows], rows[0]["total_count"]
    if offset:
        cur.execute(f"SELECT count(*) AS n FROM tasks WHERE {_LIST_FILTER}", params)
        return [], cur.fetchone()["n"]
    return [], 0


def record_event(cur, task_id, from_state, to_state, actor: str, reason: str | None = None) -> None:
    cur.execute(
        "INSERT INTO task_events (task_id, from_state, to_state, actor, reason) VALUES (%s, %s, %s, %s, %s)",
        (task_id, None if from_state is None else str(from_state), str(to_state), actor, reason),
    )
    metrics.count_transition(from_state, to_state)


def task_events(cur, task_id: uuid.UUID) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT at, from_state, to_state, actor, reason FROM task_events WHERE task_id = %s ORDER BY id",
        (task_id,),
    )
    return [dict(row) for row in cur.fetchall()]


@dataclass(frozen=True)
class Transition:
    """A named, guarded state change. `assignments` is fixed SQL with %(name)s parameters only."""

    name: str
    allowed_from: tuple[TaskState, ...]
    to: TaskState
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
    sets = ", ".join(filter(None, ["state = %(to)s", "updated_at = now()", transition.assignments]))
    guards = ["old.state = ANY(%(allowed)s)"]
    if transition.guard:
        guards.append(transition.guard)
    if lease_owner is not None:
        guards.append("t.lease_owner = %(lease_owner)s")
    values = {
        "id": task_id,
        "org": organization_id,
        "to": str(transition.to),
        "allowed": [str(s) for s in transition.allowed_from],
        "lease_owner": lease_owner,
        "reason": reason,
        **{k: Json(v) if isinstance(v, dict) else v for k, v in params.items()},
    }
    cur.execute(
        f"""
        WITH old AS (
            SELECT id, state FROM tasks
            WHERE id = %(id)s AND (%(org)s::uuid IS NULL OR organization_id = %(org)s::uuid)
            FOR UPDATE
        )
        UPDATE tasks t SET {sets}
        FROM old WHERE t.id = old.id AND {" AND ".join(guards)}
        RETURNING old.state AS previous_state, t.*, {QUEUE_POSITION}
        """,
        values,
    )
    row = cur.fetchone()
    if row is None:
        current = get_task(cur, task_id, organization_id)
        raise TransitionRefused(task_id, str(current.state), transition.name)
    record_event(cur, task_id, row["previous_state"], transition.to, actor, reason)
    return Task.from_row(row)


def claim(cur, task_id: uuid.UUID, lease_owner: uuid.UUID, lease_seconds: int, actor: str) -> Task | None:
    """Take the task for one worker run: a queued task starts running; a task whose previous worker's
    lease expired (it crashed) is taken over in whatever state it was left. None when the task is held
    by a live worker or is in a state no worker acts on."""
    cur.execute(
        """
        WITH old AS (SELECT id, state, lease_owner FROM tasks WHERE id = %(id)s FOR UPDATE)
        UPDATE tasks t SET
            state = CASE WHEN old.state = 'queued' THEN 'running' ELSE old.state END,
            lease_owner = %(owner)s,
            lease_expires_at = now() + make_interval(secs => %(lease)s),
            started_at = coalesce(t.started_at, now()),
            run_started_at = now(),
            run_started_done = t.progress_done,
            updated_at = now()
        FROM old
        WHERE t.id = old.id
          AND old.state IN ('queued', 'running', 'pausing', 'revoking')
          AND (t.lease_owner IS NULL OR t.lease_expires_at < now())
        RETURNING old.state AS previous_state, old.lease_owner AS previous_owner, t.*
        """,
        {"id": task_id, "owner": lease_owner, "lease": lease_seconds},
    )
    row = cur.fetchone()
    if row is None:
        return None
    if row["previous_state"] != row["state"]:
        record_event(cur, task_id, row["previous_state"], row["state"], actor, "worker started")
    elif row["previous_owner"] is not None:
        record_event(cur, task_id, row["previous_state"], row["state"], actor, "previous worker's lease expired")
    return Task.from_row(row)


def save_progress(
    cur,
    task_id: uuid.UUID,
    lease_owner: uuid.UUID,
    lease_seconds: int,
    *,
    checkpoint: dict[str, Any],
    done: int,
    total: int | None = None,
) -> TaskState | None:
    """Store the checkpoint and progress in the caller's batch transaction and renew the lease.

    Returns the task's state as the control service left it (the worker's stop signal), or None when
    this worker no longer holds the task."""
    cur.execute(
        """
        UPDATE tasks SET checkpoint = %(checkpoint)s, progress_done = %(done)s,
            progress_total = coalesce(%(total)s, progress_total),
            lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
        WHERE id = %(id)s AND lease_owner = %(owner)s AND state IN ('running', 'pausing', 'revoking')
        RETURNING state
        """,
        {"id": task_id, "owner": lease_owner, "lease": lease_seconds, "checkpoint": Json(checkpoint),
         "done": done, "total": total},
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
    cur.execute(
        "SELECT id FROM tasks WHERE state = 'paused' AND pause_deadline <= now() ORDER BY pause_deadline LIMIT %s",
        (limit,),
    )
    return [row["id"] for row in cur.fetchall()]


def expired_failures(cur, failed_ttl_hours: int, limit: int = 500) -> list[uuid.UUID]:
    """Failed tasks left alone longer than `failed_ttl_hours` (candidates for EXPIRE_FAILURE)."""
    cur.execute(
        """SELECT id FROM tasks WHERE state = 'failed' AND finished_at <= now() - make_interval(hours => %s)
           ORDER BY finished_at LIMIT %s""",
        (failed_ttl_hours, limit),
    )
    return [row["id"] for row in cur.fetchall()]


def stalled_tasks(cur, queued_grace_seconds: int, limit: int = 500) -> list[Task]:
    """Tasks a worker should be acting on but none is: the holder's lease expired, or a queued/revoking
    task's message was lost (enqueued long ago and never claimed)."""
    cur.execute(
        """
        SELECT * FROM tasks
        WHERE (state IN ('running', 'pausing', 'revoking') AND lease_expires_at < now())
           OR (state IN ('queued', 'revoking') AND lease_owner IS NULL
               AND enqueued_at < now() - make_interval(secs => %(grace)s))
        ORDER BY updated_at LIMIT %(limit)s
        """,
        {"grace": queued_grace_seconds, "limit": limit},
    )
    return [Task.from_row(row) for row in cur.fetchall()]


def mark_enqueued(cur, task_id: uuid.UUID) -> None:
    cur.execute("UPDATE tasks SET enqueued_at = now() WHERE id = %s", (task_id,))


# A time before any sweep's grace period: the next sweep re-sends the message of a task marked so.
MESSAGE_LOST_SQL = """
    UPDATE tasks SET enqueued_at = 'epoch'::timestamptz
    WHERE id = %s AND state IN ('queued', 'revoking') AND lease_owner IS NULL
"""


def mark_message_lost(cur, task_id: uuid.UUID) -> None:
    """Record that the task's message could not be sent (Redis down): the next sweep sends it again,
    without waiting for the grace period it gives messages that are presumably on their way."""
    cur.execute(MESSAGE_LOST_SQL, (task_id,))
