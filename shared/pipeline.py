"""Pipelined batches: a job whose next batch can be written while the one before is still being written runs
up to `job.streams` batches at once, each in a transaction of its own on a connection of its own.

They still commit one by one and in order, each with its checkpoint. A batch commits only after the batch
before it committed and left the task running, and its checkpoint UPDATE names the checkpoint it follows
(`save_progress(after=...)`): a batch whose predecessor rolled back, or that a stale runner started, can
never commit. So each batch keeps the runner's guarantee (its writes, checkpoint and progress in one
transaction: a crash loses or duplicates nothing) and only the writing overlaps: two COPY streams keep two
PostgreSQL processes busy where one would leave the second core idle. The lanes' connections are borrowed
from the Database (`borrow`/`give_back`) and kept between runs, so a resumed task's first batch does not wait
for a new PostgreSQL backend.

A batch that waits in Python for its predecessor holds the locks of its writes (its new unique keys). Should
the predecessor wait on another task that waits on those keys, PostgreSQL cannot see the cycle: every lane's
transaction has a lock_timeout (LANE_LOCK_TIMEOUT), which ends such a wait with a transient error, and the
task goes on from its checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext, suppress
from typing import Any

import psycopg2.extensions

from shared import thread_starts
from shared.batches import PipelinedJob, Planned, Step, Stop
from shared.db import transaction_on
from shared.stop_requests import StopListener
from shared.tasks import Task, TaskState

# How long a lane's statement may wait for a lock (see the module's docstring).
LANE_LOCK_TIMEOUT = "10s"
# What commits a settled batch: the runner's checkpoint UPDATE, metrics and completion (BatchRunner.save).
Save = Callable[..., Step]


def _result(future: Future) -> Any:
    """The future's result, waited for in short sleeps so that an asynchronous exception (a worker's
    shutdown) still reaches the waiting thread."""
    while True:
        try:
            return future.result(timeout=0.05)
        except TimeoutError:
            continue


class Pipeline:
    """The batches in flight of one run of a pipelined job. `step(checkpoint)` returns the outcome of the
    batch that follows `checkpoint`, having started the ones after it."""

    def __init__(self, db, broker, job: PipelinedJob, task: Task, save: Save) -> None:
        self._db = db
        self._job = job
        self._task = task
        self._save = save
        self._control = StopListener.of(broker)
        self._busy: set[psycopg2.extensions.connection] = set()
        self._busy_lock = threading.Lock()
        self._window: deque[Future] = deque()
        # The checkpoint the next step should be asked for, and the last batch started.
        self._expects: dict[str, Any] | None = None
        self._tail: Future | None = None
        self._tail_planned: Planned | None = None

    def step(self, checkpoint: dict[str, Any]) -> Step:
        if checkpoint is not self._expects:
            # Not the checkpoint the batches in flight follow (a reload, a retry): start again from it.
            self.drain()
            self._tail = Future()
            self._tail.set_result(Step(Stop.CONTINUE, TaskState.RUNNING, checkpoint))
            self._tail_planned = None
        while len(self._window) < self._job.streams and not (self._tail_planned and self._tail_planned.last):
            self._start_next()
        step = _result(self._window.popleft())
        self._expects = step.checkpoint
        return step

    def _start_next(self) -> None:
        previous = self._tail_planned
        position = previous.position if previous else self._tail.result().checkpoint
        # Planning may wait for the parse of the next batch: a stop request must not wait for it.
        with self._control.interruptible(self._task.id) if self._control else nullcontext():
            planned = self._job.plan(self._task, position)
        serial = previous is not None and planned.conflicts_with(previous)
        future = self._run_lane(planned, self._tail, serial)
        self._window.append(future)
        self._tail, self._tail_planned = future, planned

    def _run_lane(self, planned: Planned, before: Future, serial: bool) -> Future:
        """Start writing the batch in a thread of its own; the future is its Step. (A thread a batch, not a
        pool: a stop request's exception that lands late can end a thread, never a pool's worker.)"""
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(self._lane(planned, before, serial))
            except BaseException as exc:  # a stop request (StopRequested) included: the runner acts on it
                with suppress(Exception):
                    future.set_exception(exc)

        thread_starts.start(threading.Thread(target=run, name=f"batch-lane-{self._task.id}", daemon=True))
        return future

    def _lane(self, planned: Planned, before: Future, serial: bool) -> Step:
        conn = self._connection()
        try:
            return self._write_and_commit(conn, planned, before, serial)
        finally:
            with self._busy_lock:
                self._busy.discard(conn)
            self._db.give_back(conn)  # kept for the next batch, of this run or the next

    def _write_and_commit(self, conn, planned: Planned, before: Future, serial: bool) -> Step:
        abandoned = Step(Stop.CONTINUE)  # state unknown: never returned to the runner, which has moved on
        started = time.monotonic()
        def interruptible():
            return self._control.interruptible(self._task.id, conn) if self._control else nullcontext()

        with transaction_on(conn) as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{LANE_LOCK_TIMEOUT}'")
            if serial and not _runs_on(_result(before)):
                return abandoned
            with interruptible():
                written = self._job.write(cur, self._task, planned)
            previous = _result(before)  # raises what the batch before raised: this one rolls back
            if not _runs_on(previous):
                conn.rollback()
                return abandoned
            with interruptible():
                batch = self._job.settle(cur, self._task, previous.checkpoint, written)
            return self._save(cur, batch, started, after=previous.checkpoint)

    def _connection(self) -> psycopg2.extensions.connection:
        conn = self._db.borrow()
        with self._busy_lock:
            self._busy.add(conn)
        return conn

    def drain(self) -> None:
        """Stop the batches in flight (their statements are cancelled: each rolls back, unless it already
        committed in order) and wait for them."""
        with self._busy_lock:
            for conn in self._busy:
                with suppress(psycopg2.Error):  # a connection whose server end is gone has nothing to cancel
                    conn.cancel()
        while self._window:
            future = self._window.popleft()
            while not future.done():
                time.sleep(0.01)
        self._expects = None

    def close(self) -> None:
        self.drain()


def _runs_on(step: Step) -> bool:
    """Whether the batch after this step's may commit: this one committed and the task still runs."""
    return step.stop is Stop.CONTINUE and step.state is TaskState.RUNNING
