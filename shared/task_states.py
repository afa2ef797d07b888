"""The task states and their groups: the one place a state is spelled.

Everything else names a state as `TaskState.X` or a group below, and SQL takes a group as a parameter
(`state = ANY(%(states)s)`), so a state renamed or added here is renamed or added everywhere.
"""

from __future__ import annotations

from enum import StrEnum


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
# States in which a worker holds the task under a lease while it acts on it.
LEASED_STATES = (TaskState.RUNNING, TaskState.PAUSING, TaskState.REVOKING)
# States in which a worker is doing the task's own work (progress moves, a rate means something).
WORKING_STATES = (TaskState.RUNNING, TaskState.PAUSING)
# States that wait for a worker to answer a stop request at its next batch boundary.
STOPPING_STATES = (TaskState.PAUSING, TaskState.REVOKING)
# States whose next step is a message to the task's worker (a run, or a rollback).
MESSAGE_STATES = (TaskState.QUEUED, TaskState.REVOKING)


def names(states) -> list[str]:
    """The states as SQL parameters (`state = ANY(%(states)s)`)."""
    return [str(state) for state in states]
