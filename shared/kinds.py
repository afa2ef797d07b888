"""Task kinds: the one registry of the long-running jobs the platform can pause, resume and revoke.

A kind is a name, the Dramatiq queue and actor its worker runs, and what its progress counts. A service
package registers its kind once (`KIND = kinds.register(TaskKind(...))` in its `__init__.py`), creates its
tasks with `KIND.create(...)` and declares its actor with `task_actor(KIND, make_job, runtime)`. Everything
about control comes with that: pause and resume at batch boundaries, revoke with the job's own rollback,
the pause timeout, crash recovery (lease expiry and the sweep) and stale-message skipping. The control
service reaches a task's worker through the queue and actor names stored on the task, so it never imports
a kind's package. See docs/adding-a-task-kind.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq

from shared import tasks
from shared.batch_runner import BatchRunner
from shared.batches import BatchJob
from shared.runtime import Runtime

# A task runs for as long as its batches take (a week at most): pausing, not a time limit, is how it stops.
TASK_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TaskKind:
    """One kind of long-running task. `name` is stored as the task's `kind`; `queue` and `actor_name` name
    the Dramatiq actor that runs its batches; `progress_unit` says what its progress counts (`rows`)."""

    name: str
    queue: str
    actor_name: str
    progress_unit: str

    def create(self, cur, *, organization_id: uuid.UUID, params: dict[str, Any], actor: str,
               task_id: uuid.UUID | None = None) -> tasks.Task:
        """Insert a queued task of this kind (in `cur`'s transaction); `actor` is who asked for it (the audit's
        "who"). Wake its worker once the transaction commits (shared.wake.wake_task)."""
        return tasks.create_task(cur, organization_id=organization_id, kind=self.name, queue_name=self.queue,
                                 actor_name=self.actor_name, progress_unit=self.progress_unit, params=params,
                                 actor=actor, task_id=task_id)


_REGISTRY: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
    """Add the kind to the registry and return it. Registering the same kind again changes nothing; another
    kind under a name (or queue and actor) already taken raises ValueError."""
    for known in _REGISTRY.values():
        clash = known.name == kind.name or (known.queue, known.actor_name) == (kind.queue, kind.actor_name)
        if clash and known != kind:
            raise ValueError(f"task kind {kind.name!r} clashes with {known!r}")
    _REGISTRY[kind.name] = kind
    return kind


def registered() -> tuple[TaskKind, ...]:
    """Every kind registered in this process, in registration order."""
    return tuple(_REGISTRY.values())


def task_actor(kind: TaskKind, make_job: Callable[[], BatchJob], runtime: Runtime) -> dramatiq.Actor:
    """Declare the kind's worker actor on `runtime.broker`: each message runs a fresh job from `make_job()`
    under the batch runner, from the task's checkpoint until it completes, fails, pauses or is revoked."""

    def run(task_id: str) -> None:
        BatchRunner(runtime.db, runtime.broker, runtime.settings).run(make_job(), task_id)

    run.__name__ = run.__qualname__ = kind.actor_name
    run.__doc__ = f"Run a {kind.name} task's batches from its checkpoint."
    # No Dramatiq retries: the task's own state, checkpoint and the sweep say what happens after a failure.
    return dramatiq.actor(run, broker=runtime.broker, queue_name=kind.queue, actor_name=kind.actor_name,
                          max_retries=0, time_limit=TASK_TIME_LIMIT_MS, controls_task=True)
