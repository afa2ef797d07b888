"""The answer of every route that starts a task."""

from __future__ import annotations

import falcon

from shared.tasks import Task
from shared.wake import wake_task


def start_task(resp: falcon.Response, db, broker, task: Task) -> None:
    """Send the new task's message to its service and answer 202 with the task and its URL. The task is
    already stored: with Redis down it stays queued and the sweep sends its message later."""
    wake_task(db, broker, task)
    resp.status = falcon.HTTP_202
    resp.set_header("Location", f"/api/tasks/{task.id}/")
    resp.media = task.to_json()
