"""Waking a task's worker once a state change has committed, best-effort: PostgreSQL holds the change,
Redis only carries the message, so Redis being down must neither fail nor undo the change."""

from __future__ import annotations

import logging

import dramatiq
import redis

from shared import tasks as t
from shared.broker import schedule_pause_expiry, send_task_message
from shared.db import UNAVAILABLE_ERRORS
from shared.health import report_failure

logger = logging.getLogger(__name__)

# What a broker raises when Redis cannot be reached or does not answer in time.
BROKER_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)


def wake_task(db, broker: dramatiq.Broker, task: t.Task) -> bool:
    """Send the task's message to its service. If Redis is unavailable, log it and mark the task so the
    sweep (`services.control`, every minute) sends the message once Redis is back; returns whether the
    message went out. Never raises for an unavailable Redis."""
    try:
        send_task_message(broker, task.queue_name, task.actor_name, task.id)
        return True
    except BROKER_UNAVAILABLE as exc:
        reason = report_failure("Redis", exc)
        logger.warning("task %s stays %s until the sweep re-sends its message (Redis: %s)",
                       task.id, task.state, reason)
    try:
        with db.transaction() as cur:
            t.mark_message_lost(cur, task.id)
    except UNAVAILABLE_ERRORS as exc:
        # Then the sweep finds it after its grace period instead of at once.
        report_failure("PostgreSQL", exc)
    return False


def schedule_pause_expiry_or_leave_to_sweep(broker: dramatiq.Broker, task: t.Task, delay_seconds: float) -> None:
    """Send the delayed message that expires the task's pause; if Redis is unavailable, the sweep's
    check of overdue pauses expires it instead (later, by at most its period)."""
    try:
        schedule_pause_expiry(broker, task.id, delay_seconds)
    except BROKER_UNAVAILABLE as exc:
        report_failure("Redis", exc)
