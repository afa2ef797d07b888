"""Waiting for a task to leave a state, woken by the NOTIFY its transition sends.

Every transition (shared.tasks.transitions.apply) notifies CHANGES_CHANNEL with the task's id in its own
transaction, so PostgreSQL delivers the notification only once the change is committed and visible. A
waiting request listens on a connection of its own, reads the task once, and reads it again only when
its id is announced, or every `safety_poll` seconds in case a notification was missed. NOTIFY reaches every
listening session, whichever machine it runs on.
"""

from __future__ import annotations

import select
import time
import uuid

from psycopg2 import sql

from shared.db import DictCursor
from shared.task_states import TaskState
from shared.tasks.model import Task, get_task
from shared.tasks.transitions import CHANGES_CHANNEL

# The safety net only: a wait is normally ended by the notification of the change it waits for.
SAFETY_POLL_SECONDS = 2.0


def wait_for_change(db, task_id: uuid.UUID, organization_id: uuid.UUID | None, transient: TaskState,
                    timeout: float, safety_poll: float = SAFETY_POLL_SECONDS) -> Task:
    """The task as soon as it has left `transient`, or as it is once `timeout` seconds have passed.

    Costs one LISTEN and one read, plus one read per notification naming the task and per `safety_poll`.
    Raises TaskNotFound when the task is not the organization's, one of shared.db.UNAVAILABLE_ERRORS when
    the database cannot be reached."""
    deadline = time.monotonic() + timeout
    with db.dedicated_connection() as conn:
        conn.autocommit = True
        with conn.cursor(cursor_factory=DictCursor) as cur:
            # Listening before the first read: a change committed in between is announced, not missed.
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANGES_CHANNEL)))
            while True:
                task = get_task(cur, task_id, organization_id)
                remaining = deadline - time.monotonic()
                if task.state is not transient or remaining <= 0:
                    return task
                _await_notification(conn, str(task_id), min(remaining, safety_poll))


def _await_notification(conn, payload: str, seconds: float) -> None:
    """Return when a notification names `payload` or `seconds` have passed. Other tasks' notifications are
    read off the socket and dropped, without a query."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        select.select([conn], [], [], left)
        conn.poll()
        named = any(notice.payload == payload for notice in conn.notifies)
        conn.notifies.clear()
        if named:
            return
