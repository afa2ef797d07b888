"""TaskControl: keeps a worker from running a task that the control service has stopped.

The authoritative stop signal is the task's state in PostgreSQL, which the batch runner reads back in
the same statement that commits each batch (see shared.batch_runner). This middleware guards the other
end: a message of a task that is paused, finished, revoked, or held by a live worker is skipped before
the actor runs, and task actors are never retried by Dramatiq (the runner records failures itself).
"""

from __future__ import annotations

import logging
import uuid

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

logger = logging.getLogger(__name__)


class TaskControl(Middleware):
    actor_options = {"controls_task"}

    def __init__(self, db) -> None:
        self.db = db

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        actor = broker.get_actor(message.actor_name)
        if not actor.options.get("controls_task"):
            return
        try:
            task_id = uuid.UUID(str(message.args[0]))
        except (IndexError, ValueError):
            raise SkipMessage(f"message {message.message_id} names no task") from None
        with self.db.transaction() as cur:
            cur.execute(
                """
                SELECT state, lease_owner IS NOT NULL AND lease_expires_at >= now() AS held
                FROM tasks WHERE id = %s
                """,
                (task_id,),
            )
            row = cur.fetchone()
        if row is None:
            raise SkipMessage(f"task {task_id} does not exist")
        if row["state"] not in ("queued", "running", "pausing", "revoking") or row["held"]:
            logger.info("skipping message for task %s: state %s, held=%s", task_id, row["state"], row["held"])
            raise SkipMessage(f"task {task_id} is {row['state']}")
