"""The problems every resource that names a task may answer: no such task, and a refused transition."""

from __future__ import annotations

import falcon

from services.http.problems import Problem
from shared.tasks import TransitionRefused


def task_not_found(task_id) -> Problem:
    """404: no task `task_id` in the caller's organization (another organization's task looks the same)."""
    return Problem(falcon.HTTP_404, f"no task {task_id} in your organization", title="Task Not Found")


def conflict(refused: TransitionRefused) -> Problem:
    """409: the task's current state (named in `state`) does not allow the change."""
    return Problem(falcon.HTTP_409, str(refused), title="Invalid Task Transition",
                   state=refused.state, task_id=str(refused.task_id))
