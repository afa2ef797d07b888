"""The task record: its model, its API JSON (and that JSON's schema), reading and creating tasks, and
the event log every change writes to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg2.extras import Json

from shared import metrics
from shared.task_states import WORKING_STATES, TaskState, names


class TaskNotFound(LookupError):
    """No task with that id belongs to the caller's organization."""


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
        if self.state not in WORKING_STATES or self.run_started_at is None:
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
        "state": {"type": "string", "enum": names(TaskState)},
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
# answer in a RETURNING clause, whose subqueries see the table as it was before the statement. (The state is
# the enum's own value, spelled once, not a parameter: the statements that select this use both styles.)
QUEUE_POSITION = f"""
    CASE WHEN t.state = '{TaskState.QUEUED.value}' THEN (
        SELECT 1 + count(*) FROM tasks w
        WHERE w.organization_id = t.organization_id AND w.state = '{TaskState.QUEUED.value}' AND w.id <> t.id
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
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
        RETURNING *, {QUEUE_POSITION}
        """,
        (task_id or uuid.uuid4(), organization_id, kind, queue_name, actor_name, str(TaskState.QUEUED),
         Json(params or {}), progress_unit),
    )
    task = Task.from_row(cur.fetchone())
    record_event(cur, task.id, None, TaskState.QUEUED, actor, "created")
    return task


def get_task(cur, task_id: uuid.UUID, organization_id: uuid.UUID | None = None) -> Task:
    """The task; raises TaskNotFound when it does not exist or belongs to another organization.

    The task is read without its queue position first: the subquery costs more to plan than the read
    itself, and only a queued task has one. A queued task is read again with it, in one statement, so that
    the state and the position shown agree (each statement has its own snapshot under `Database.reading`)."""
    owned = "" if organization_id is None else " AND organization_id = %s"
    params = (task_id,) if organization_id is None else (task_id, organization_id)
    cur.execute(f"SELECT * FROM tasks WHERE id = %s{owned}", params)
    row = cur.fetchone()
    if row is not None and row["state"] == TaskState.QUEUED.value:
        cur.execute(f"SELECT *, {QUEUE_POSITION} FROM tasks t WHERE id = %s{owned}", params)
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


