"""SkipStaleMessages: a task's message runs only when the task needs a worker.

Messages are at-least-once and the sweep re-sends the message of a task it thinks stalled, so a worker may
receive the message of a task that is paused, finished, revoked, or held by a live worker. Before the
actor runs, the task core is asked; such a message is skipped, which makes duplicates harmless.
"""

from __future__ import annotations

import logging
import uuid

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from shared import tasks
from shared.transient import with_retries

logger = logging.getLogger(__name__)


class SkipStaleMessages(Middleware):
    """Skips the message of a task no worker should act on, for actors declared with `controls_task=True`."""

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
        hold = with_retries(lambda: self._hold_of(task_id), attempts=self.db.maxconn + 1)
        if hold is None:
            raise SkipMessage(f"task {task_id} does not exist")
        state, held = hold
        if state not in tasks.WORKER_STATES or held:
            logger.info("skipping message for task %s: state %s, held=%s", task_id, state, held)
            raise SkipMessage(f"task {task_id} is {state}")

    def _hold_of(self, task_id: uuid.UUID) -> tuple[tasks.TaskState, bool] | None:
        with self.db.reading() as cur:
            return tasks.hold_of(cur, task_id)
