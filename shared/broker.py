"""The messages the control core sends by name (the broker itself is built in shared.runtime).

Messages are addressed by queue and actor name (both stored on the task), so the control service can
wake an upload or export worker without importing that service's code.
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.services import CONTROL

CONTROL_QUEUE = CONTROL.queue
EXPIRE_PAUSE_ACTOR = "expire_pause"
SWEEP_ACTOR = "sweep"


class PromptRedisBroker(RedisBroker):
    """A RedisBroker whose consumers look at an empty queue at least every `idle_poll_ms` milliseconds.

    Dramatiq's Redis consumer backs off exponentially while its queue is empty, up to the worker timeout
    (1 s under the `dramatiq` command): a task resumed while its worker was idle waited up to that long
    before its message was fetched. A poll is one small Lua call per queue (and delay queue) per interval."""

    def __init__(self, *args, idle_poll_ms: int = 50, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.idle_poll_ms = idle_poll_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        return super().consume(queue_name, prefetch, min(timeout, self.idle_poll_ms))


def create_broker(redis_url: str, namespace: str = "dramatiq", timeout: float | None = None,
                  idle_poll_ms: int = 50) -> RedisBroker:
    """A Redis broker with Dramatiq's default middleware only (shared.runtime adds ours). With `timeout`,
    connecting to Redis and each command give up after that many seconds (redis.TimeoutError) instead of
    waiting on a server that does not answer. Idle consumers poll every `idle_poll_ms` at most
    (PromptRedisBroker)."""
    # One retry (redis-py's default is three): a blip is absorbed, and an unanswering Redis costs at most
    # two timeouts, so a gateway request that sends a message still answers within seconds.
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=Retry(ExponentialWithJitterBackoff(), 1))
    return PromptRedisBroker(client=client, namespace=namespace, idle_poll_ms=idle_poll_ms)


def send_task_message(broker: dramatiq.Broker, queue_name: str, actor_name: str, task_id) -> None:
    """Ask the task's service to act on it (run, continue from its checkpoint, or roll back)."""
    broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(str(task_id),),
                                    kwargs={}, options={}))


def schedule_sweep(broker: dramatiq.Broker, delay_seconds: float) -> None:
    """Have the control service sweep (expire pauses, recover stalled tasks) in `delay_seconds`."""
    message = dramatiq.Message(queue_name=CONTROL_QUEUE, actor_name=SWEEP_ACTOR, args=(), kwargs={}, options={})
    broker.enqueue(message, delay=int(delay_seconds * 1000))


def schedule_pause_expiry(broker: dramatiq.Broker, task_id, delay_seconds: float) -> None:
    """Wake the control service when a pause should expire (the periodic sweep is the safety net)."""
    message = dramatiq.Message(queue_name=CONTROL_QUEUE, actor_name=EXPIRE_PAUSE_ACTOR,
                               args=(str(task_id),), kwargs={}, options={})
    broker.enqueue(message, delay=int(delay_seconds * 1000) + 250)
