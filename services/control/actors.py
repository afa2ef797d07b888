"""The control worker's actors (run with `dramatiq services.control.actors --queues control`), and the
periodic sweep that periodiq schedules (`periodiq services.control.actors`)."""

from __future__ import annotations

import uuid

import dramatiq
from periodiq import cron

from services.control.commands import TaskControl
from shared.broker import CONTROL_QUEUE, EXPIRE_PAUSE_ACTOR, SWEEP_ACTOR
from shared.runtime import runtime
from shared.transient import with_retries

_rt = runtime()
_control = TaskControl(_rt.db, _rt.broker, _rt.settings)


@dramatiq.actor(queue_name=CONTROL_QUEUE, actor_name=EXPIRE_PAUSE_ACTOR, max_retries=3)
def expire_pause(task_id: str) -> None:
    """Revoke the task if it is still paused past its deadline (sent, delayed, when it was paused)."""
    with_retries(lambda: _control.expire_pause(uuid.UUID(task_id)), attempts=_rt.db.maxconn + 1)


# periodiq has no lock: two schedulers may both send this; every step of the sweep is a guarded
# transition, so running it twice changes nothing the first run did not.
@dramatiq.actor(queue_name=CONTROL_QUEUE, actor_name=SWEEP_ACTOR, periodic=cron("* * * * *"), max_retries=0)
def sweep() -> None:
    """Expire overdue pauses and failures, and recover tasks whose worker died (retried once a stale pooled
    connection has been replaced)."""
    with_retries(_control.sweep, attempts=_rt.db.maxconn + 1)
