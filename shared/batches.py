"""What a batch job is and what one step of its run loop did: the vocabulary that the batch runner
(shared/batch_runner.py), the pipeline (shared/pipeline.py) and every task kind's job share."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum, auto
from typing import Any, Protocol, runtime_checkable

from shared.tasks import Task, TaskState


class TaskFailed(Exception):
    """The job cannot finish (bad input, impossible parameters); recorded on the task as its error."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, **details}


class Stop(StrEnum):
    """Why one step of the run loop ended: what the loop does next (each value is its lowercase name)."""

    CONTINUE = auto()  # go on in the state (and from the checkpoint) the step reports
    PAUSE = auto()  # the pause was confirmed: the run ends
    REVOKE = auto()  # the task was rolled back: the run ends
    LEASE_LOST = auto()  # another worker holds the task now: the run ends without writes
    FINISHED = auto()  # the last batch committed with the task's result
    FAILED = auto()  # the job cannot finish: the task fails, keeping its committed work
    RETRY = auto()  # a transient database error rolled the step back: do it again after a backoff


@dataclass(frozen=True)
class Step:
    """What one step did. `state` None means "unknown: read it back from the database before going on";
    `committed` says that a batch committed (the task made progress)."""

    stop: Stop
    state: TaskState | None = None
    checkpoint: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    committed: bool = False


@dataclass
class Batch:
    """What one batch did: where the next one starts and how far the task has come."""

    checkpoint: dict[str, Any]
    done: int
    total: int | None = None
    finished: bool = False
    result: dict[str, Any] | None = field(default=None)
    # What this batch alone read or wrote, for the metrics (shared.metrics).
    rows: int = 0
    bytes: int = 0


class BatchJob(Protocol):
    def run_batch(self, cur, task: Task, checkpoint: dict[str, Any] | None) -> Batch:
        """Do the next batch's writes with `cur` (inside the batch transaction), starting at `checkpoint`
        (None for the first batch). Raises TaskFailed when the task cannot go on."""

    def rollback(self, cur, task: Task) -> None:
        """Undo every effect of the task other than its stored files (those are deleted by the runner)."""

    def close(self) -> None:
        """Release what the job holds between batches (threads, readers); called when the run ends."""


class Planned(Protocol):
    """A batch's input, planned before it is written."""

    # Where the batch after it starts: a checkpoint whose position is final, its totals maybe not yet.
    position: dict[str, Any]
    # Whether it is the task's last batch.
    last: bool

    def conflicts_with(self, earlier: Planned) -> bool:
        """Whether its writes could wait on `earlier`'s (the same new unique key, say): it is then written
        only once `earlier` has committed."""


@runtime_checkable
class PipelinedJob(Protocol):
    """A BatchJob whose batches are also offered in three parts, so that `streams` of them can be written at
    once (shared/pipeline.py). run_batch(cur, task, checkpoint) must do what
    settle(cur, task, checkpoint, write(cur, task, plan(task, checkpoint))) does."""

    # How many batches may be written at once (1: one after the other).
    streams: int

    def plan(self, task: Task, checkpoint: dict[str, Any]) -> Planned:
        """The batch after `checkpoint` (its position is read, not its totals). Runs on the runner's
        thread, without a database connection."""

    def write(self, cur, task: Task, planned: Planned) -> Any:
        """The batch's writes (the slow part), in its transaction, maybe while the batch before is writing."""

    def settle(self, cur, task: Task, checkpoint: dict[str, Any], written: Any) -> Batch:
        """The rest of the batch, in its transaction, once the batch before it committed `checkpoint`:
        returns the batch with its new checkpoint."""


def pipelines(job: BatchJob) -> bool:
    """Whether the job writes more than one batch at a time."""
    return isinstance(job, PipelinedJob) and job.streams > 1
