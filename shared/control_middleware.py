"""ControlMiddleware: the worker side of pause and revoke.

PostgreSQL is the source of truth: the batch runner reads the task's state back in the statement that
commits each batch, so a stop request is always answered at the next batch boundary. This middleware makes
the answer fast and keeps stale work away:

* It listens on a Redis channel where the control service announces stop requests. If the named task is
  in the middle of a batch in this worker, the batch is interrupted the way Dramatiq's TimeLimit
  interrupts an actor: its database statement is cancelled (that ends a wait inside libpq) and
  StopRequested is raised in the worker thread (that ends Python work). The batch rolls back, it is redone
  from the checkpoint on resume, and the runner stops at once instead of finishing it.
* Before an actor runs, a message of a task that is paused, finished, revoked, or held by a live worker is
  skipped (duplicate or stale messages are harmless).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from dramatiq.threading import Interrupt, raise_thread_exception

from shared.broker import schedule_sweep
from shared.transient import with_retries

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


class ControlMiddleware(Middleware):
    actor_options = {"controls_task"}

    def __init__(self, db, recovery_sweep_after: float | None = None) -> None:
        self.db = db
        self.recovery_sweep_after = recovery_sweep_after
        self._in_batch: dict[str, tuple[object, int]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None

    @classmethod
    def of(cls, broker: dramatiq.Broker) -> ControlMiddleware | None:
        return next((m for m in broker.middleware if isinstance(m, cls)), None)

    # -- stop requests -----------------------------------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker) -> None:
        self._stopping.clear()
        self._listener = threading.Thread(target=self._listen, args=(broker,), name="task-stop", daemon=True)
        self._listener.start()
        if self.recovery_sweep_after is not None:
            # A worker starting may be one restarting after a crash: once the tasks it held have outlived
            # their lease, sweep, rather than wait for the scheduler's next minute.
            schedule_sweep(broker, self.recovery_sweep_after)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(2)

    def _listen(self, broker: dramatiq.Broker) -> None:
        while not self._stopping.is_set():
            pubsub = broker.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(stop_channel(broker))
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self.interrupt(message["data"].decode())
            except Exception:
                if self._stopping.is_set():
                    return
                logger.warning("stop-request listener lost Redis; retrying", exc_info=True)
                time.sleep(1)
            finally:
                pubsub.close()

    @contextlib.contextmanager
    def interruptible(self, task_id, connection):
        """While the block runs, a stop request for the task cancels `connection`'s current statement and
        raises StopRequested in this thread."""
        key = str(task_id)
        with self._lock:
            self._in_batch[key] = (connection, threading.get_ident())
        try:
            yield
        finally:
            # Under the lock: once this returns, no cancel for this batch can still be on its way.
            with self._lock:
                self._in_batch.pop(key, None)

    def interrupt(self, task_id: str) -> bool:
        with self._lock:
            entry = self._in_batch.get(task_id)
            if entry is None:
                return False
            connection, thread_id = entry
            connection.cancel()
            raise_thread_exception(thread_id, StopRequested)
        logger.info("task %s: stop requested, cancelling its batch", task_id)
        return True

    # -- stale messages ----------------------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        actor = broker.get_actor(message.actor_name)
        if not actor.options.get("controls_task"):
            return
        try:
            task_id = uuid.UUID(str(message.args[0]))
        except (IndexError, ValueError):
            raise SkipMessage(f"message {message.message_id} names no task") from None
        row = with_retries(lambda: self._task_holding(task_id), attempts=self.db.maxconn + 1)
        if row is None:
            raise SkipMessage(f"task {task_id} does not exist")
        if row["state"] not in ("queued", "running", "pausing", "revoking") or row["held"]:
            logger.info("skipping message for task %s: state %s, held=%s", task_id, row["state"], row["held"])
            raise SkipMessage(f"task {task_id} is {row['state']}")

    def _task_holding(self, task_id: uuid.UUID) -> dict | None:
        with self.db.transaction() as cur:
            cur.execute(
                """
                SELECT state, lease_owner IS NOT NULL AND lease_expires_at >= now() AS held
                FROM tasks WHERE id = %s
                """,
                (task_id,),
            )
            return cur.fetchone()
