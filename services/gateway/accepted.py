"""The answer of every route that starts a task."""

from __future__ import annotations

import falcon

from shared.broker import send_task_message
from shared.tasks import Task


def start_task(resp: falcon.Response, broker, task: Task) -> None:
    """Send the new task's message to its service and answer 202 with the task and its URL."""
    send_task_message(broker, task.queue_name, task.actor_name, task.id)
    resp.status = falcon.HTTP_202
    resp.set_header("Location", f"/api/tasks/{task.id}/")
    resp.media = task.to_json()
