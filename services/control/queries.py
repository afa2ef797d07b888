"""Reading tasks for the API: one task (with its state changes when asked for) and a page of tasks.
Each read is its own transaction, owned here so the resources only parse and answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared import tasks as t


@dataclass(frozen=True)
class TaskFilter:
    """Which of an organization's tasks to list (None: any), and which page of them."""

    states: list[str] | None = None
    kinds: list[str] | None = None
    # The start of the task id, lower case.
    id_prefix: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class TaskPage:
    """A page of the caller's tasks and how many match the filters in all."""

    tasks: list[t.Task]
    total: int


class Tasks:
    """The tasks of an organization, as the API reads them."""

    def __init__(self, db) -> None:
        self.db = db

    def get(self, organization_id: uuid.UUID, task_id: uuid.UUID, *, with_events: bool = False
            ) -> tuple[t.Task, list[dict[str, Any]] | None]:
        """The task and, with `with_events`, its state changes oldest first (else None); raises
        TaskNotFound when it does not exist or belongs to another organization."""
        # One statement (or two, the events after the task): no transaction is needed around them.
        with self.db.reading() as cur:
            task = t.get_task(cur, task_id, organization_id)
            return task, t.task_events(cur, task_id) if with_events else None

    def list(self, organization_id: uuid.UUID, wanted: TaskFilter) -> TaskPage:
        """The organization's tasks matching the filter, newest first, `wanted.limit` from `wanted.offset`."""
        with self.db.transaction() as cur:
            found, total = t.list_tasks(cur, organization_id, states=wanted.states, kinds=wanted.kinds,
                                        id_prefix=wanted.id_prefix, limit=wanted.limit, offset=wanted.offset)
        return TaskPage(found, total)
