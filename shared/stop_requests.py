"""Stop requests: the fast path of pause and revoke, on the worker side.

PostgreSQL is the source of truth: the batch runner reads the task's state back in the statement that
commits each batch, so a stop request is always answered at the next batch boundary. This middleware makes
the answer fast. The control service announces a stop on a Redis channel; if the named task is in the
middle of a batch in this worker, the batch is interrupted the way Dramatiq's TimeLimit interrupts an
actor: its database statement is cancelled (that ends a wait inside libpq) and StopRequested is raised in
the worker thread (that ends Python work). The batch rolls back, it is redone from the checkpoint on
resume, and the runner stops at once instead of finishing it.

What it cannot do: interrupt a thread blocked in C code other than libpq (the exception is raised when the
thread next runs Python), or hear an announcement sent while Redis was unreachable (the batch boundary
still stops the task).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import dramatiq
from dramatiq.middleware import Middleware
from dramatiq.threading import Interrupt, raise_thread_exception

from shared.thread_starts import THREAD_STARTS

logger = logging.getLogger(__name__)


class StopRequested(Interrupt):
    """Raised in a worker thread whose task was asked to stop in the middle of a batch. An Interrupt (a
    BaseException), so that a job's `except Exception` cannot swallow it."""


def stop_channel(broker: dramatiq.Broker) -> str:
    return f"{getattr(broker, 'namespace', 'dramatiq')}:task-stop"


def announce_stop(broker: dramatiq.Broker, task_id) -> None:
    """Tell every worker that the task should stop (pause or revoke) without waiting for its batch."""
    try:
        broker.client.publish(stop_channel(broker), str(task_id))
    except Exception:  # the batch boundary still stops it: this is only the fast path
        logger.warning("could not announce the stop of task %s", task_id, exc_info=True)


class _StopListenerThread(threading.Thread):
    """Subscribes to the stop channel (again, after Redis was lost) and hands each announced task id to
    `interrupt` until `stopping` is set."""

    def __init__(self, broker: dramatiq.Broker, interrupt: Callable[[str], bool]) -> None:
        super().__init__(name="task-stop", daemon=True)
        self.broker = broker
        self.interrupt = interrupt
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            pubsub = self.broker.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(stop_channel(self.broker))
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self.interrupt(message["data"].decode())
            except Exception:
                if self.stopping.is_set():
                    return
                logger.warning("stop-request listener lost Redis; retrying", exc_info=True)
                time.sleep(1)
            finally:
                pubsub.close()


class StopListener(Middleware):
    """Interrupts the batch of a task whose stop the control service announced (see the module's docstring)."""

    def __init__(self) -> None:
        self._thread: _StopListenerThread | None = None
        # Which task's batches run on which connection, by the thread that runs each (a pipelined task
        # writes more than one batch at a time).
        self._lock = threading.Lock()
        self._in_batch: dict[str, dict[int, object | None]] = {}

    @classmethod
    def of(cls, broker: dramatiq.Broker) -> StopListener | None:
        return next((m for m in broker.middleware if isinstance(m, cls)), None)

    def after_worker_boot(self, broker: dramatiq.Broker, worker) -> None:
        self._thread = _StopListenerThread(broker, self.interrupt)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker) -> None:
        if self._thread is not None:
            self._thread.stopping.set()
            self._thread.join(2)

    @contextlib.contextmanager
    def interruptible(self, task_id, connection=None) -> Iterator[None]:
        """While the block runs, a stop request for the task cancels `connection`'s current statement (when
        there is one) and raises StopRequested in this thread."""
        key, thread_id = str(task_id), threading.get_ident()
        with self._lock:
            self._in_batch.setdefault(key, {})[thread_id] = connection
        try:
            yield
        finally:
            # Under the lock: once this returns, no cancel for this batch can still be on its way.
            with self._lock:
                batches = self._in_batch.get(key, {})
                batches.pop(thread_id, None)
                if not batches:
                    self._in_batch.pop(key, None)

    def in_batch(self, task_id: str) -> bool:
        """Whether the task's batch is running (interruptible) in this process now."""
        with self._lock:
            return task_id in self._in_batch

    def interrupt(self, task_id: str) -> bool:
        """Interrupt the task's batches if they run in this process; whether it did. A batch is interrupted
        once, however many listeners hear the request."""
        with self._lock:
            batches = self._in_batch.pop(task_id, None)
            if not batches:
                return False
            for thread_id, connection in batches.items():
                if connection is not None:
                    with contextlib.suppress(Exception):  # a dead connection: the thread's exception ends it
                        connection.cancel()
                with THREAD_STARTS:  # never while a thread starts: it could land in the new thread
                    raise_thread_exception(thread_id, StopRequested)
        logger.info("task %s: stop requested, cancelling %d batch(es) in flight", task_id, len(batches))
        return True
